#include "report/layout_report.h"

#include "common/text_table.h"

namespace glam {
namespace {

bool same_layout(const ParallelPlan& a, const ParallelPlan& b) { return plan_short_label(a) == plan_short_label(b); }

}  // namespace

std::string layouts_text(const std::vector<LayoutTrial>& trials, const ParallelPlan& chosen, double hbm_bytes) {
  double best = 0;
  for (const auto& t : trials)
    if (t.fits && (best == 0 || t.step_time_s < best)) best = t.step_time_s;
  TextTable table(
      {"", "layout", "memory/chip", "step", "vs best", "compute", "exposed comm", "pipeline bubble", "all-to-all", "MFU"},
      {false, false, true, true, true, true, true, true, true, true});
  for (const auto& t : trials) {
    std::vector<std::string> row = {same_layout(t.plan, chosen) ? "*" : "", plan_short_label(t.plan),
                                    format_bytes(t.memory_bytes)};
    if (t.fits)
      row.insert(row.end(), {format_seconds(t.step_time_s), "+" + format_fixed(100 * (t.step_time_s / best - 1), 1) + "%",
                             format_seconds(t.compute_s), format_seconds(t.exposed_comm_s),
                             t.plan.pp > 1 ? format_seconds(t.pipeline_bubble_s) : "-", format_seconds(t.alltoall_s),
                             format_fixed(100 * t.mfu, 1) + "%"});
    else
      row.insert(row.end(), {"does not fit", "", "", "", "", "", ""});
    table.add_row(row);
  }
  return "\nlayouts compared (analytical fidelity; * = chosen; " + format_bytes(hbm_bytes) + " of HBM usable per chip):\n" +
         table.render() + "layout: " + kPlanLabelLegend + "\n";
}

nlohmann::json layouts_json(const std::vector<LayoutTrial>& trials, const ParallelPlan& chosen) {
  nlohmann::json all = nlohmann::json::array();
  for (const auto& t : trials) {
    nlohmann::json j = {{"plan", plan_to_json(t.plan)},
                        {"chosen", same_layout(t.plan, chosen)},
                        {"memory_per_chip_bytes", t.memory_bytes},
                        {"fits_memory", t.fits}};
    if (t.fits) {
      j["step_time_s"] = t.step_time_s;
      j["compute_s"] = t.compute_s;
      j["exposed_comm_s"] = t.exposed_comm_s;
      j["pipeline_bubble_s"] = t.pipeline_bubble_s;
      j["alltoall_s"] = t.alltoall_s;
      j["mfu"] = t.mfu;
    }
    all.push_back(j);
  }
  return all;
}

}  // namespace glam
