#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "cli/command.h"
#include "cli/simulation_options.h"
#include "common/catalogue.h"
#include "common/cli_checks.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "planner/training_estimate.h"
#include "report/step_report.h"

namespace glam::cli {
namespace {

// "600e9", or with a decimal suffix as the output prints budgets: "600B", "1.6T", "50M", "20K".
double parse_tokens(const std::string& text) {
  double v = 0, scale = 1;
  std::string number = text;
  if (!number.empty())
    switch (number.back()) {
      case 'K': scale = 1e3; break;
      case 'M': scale = 1e6; break;
      case 'B': scale = 1e9; break;
      case 'T': scale = 1e12; break;
    }
  if (scale != 1) number.pop_back();
  // Decimal only (std::stod would take hexadecimal, 0x10 for 16).
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), v);
  if (number.empty() || ec != std::errc() || end != number.data() + number.size())
    throw UsageError("--tokens " + text + ": expected a number of tokens such as 600e9 or 600B (suffixes K, M, B, T)");
  v *= scale;
  if (!(v > 0) || !std::isfinite(v)) throw UsageError("--tokens " + text + ": expected a positive token budget");
  if (v > 1e16) throw UsageError("--tokens " + text + ": expected at most 1e16 tokens (GLaM trained on 1.6e12)");
  return v;
}

// --compare arguments: cluster ids or files, and shell patterns over the catalogue's ids.
std::vector<std::string> expand_clusters(const std::vector<std::string>& args) {
  return expand_catalogue_patterns("topologies", args, "--compare");
}

struct PlanRow {
  ResolvedSimulation sim;
  StepResult step;
  TrainingEstimate estimate;
  struct TooSmall {
    double needed_bytes, usable_hbm_bytes;  // the smallest footprint per chip, and what a plan may use of a chip
  };
  std::optional<TooSmall> does_not_fit;  // --compare: no plan fits this cluster (its row says so)
  // --compare: why the layout given does not apply to this cluster (--dp 64 on 8 chips); empty: it does
  std::string not_applicable;
  double days() const { return estimate.train_hours / 24; }
  // Days as the rows print them: two decimals under ten days, so that a run of 0.45 days does not
  // read "0.5" beside a 0.5-day deadline it meets.
  std::string days_text() const { return format_fixed(days(), days() < 10 ? 2 : 1); }
  // Failures so frequent that the run does not finish (only with interruptions modelled).
  bool never_finishes() const { return estimate.interruptions && !estimate.interruptions->finishes(); }
  // A row with figures: a plan that fits (or is simulated anyway) and a run that finishes.
  bool planned() const { return !does_not_fit && not_applicable.empty() && !never_finishes(); }
  // In time, and a plan that fits (with --allow-oom a plan that does not fit is listed, not chosen).
  bool meets(double deadline_days) const { return planned() && step.fits_memory && days() <= deadline_days; }
};

// A deadline as given ("30", "2.76"), and a margin to it: hours under two days, where a tenth of a day
// would hide it, days above.
std::string days_given(double days) {
  std::ostringstream o;
  o << days;
  return o.str();
}
std::string margin(double days) {
  return days < 2 ? format_fixed(days * 24, 1) + " h" : format_fixed(days, 1) + " days";
}

// A missed deadline's first-order answer to "how many chips then?": the chips that would finish in
// time at this plan's tokens per chip-second, rounded up to two significant figures. Larger clusters
// run other layouts (and scale less than linearly), so it is a starting point for --compare, not a plan.
std::string chips_for_deadline(const PlanRow& row, double deadline_days) {
  const double chips = static_cast<double>(row.sim.input.cluster.num_chips()) * row.days() / deadline_days;
  const double unit = chips < 100 ? 1 : std::pow(10, std::floor(std::log10(chips)) - 1);
  return " (about " + format_fixed(std::ceil(chips / unit) * unit, 0) + " chips at this throughput per chip)";
}

// --days with --compare: of the clusters that finish in time, the one drawing the least facility
// energy, the one emitting the least (the sites' carbon intensities may differ) and the one using the
// fewest chip-hours (null when none does), and the fastest overall.
struct InTime {
  const PlanRow *least_energy = nullptr, *least_emissions = nullptr, *fewest_chip_hours = nullptr, *fastest = nullptr;
};
InTime choose_in_time(const std::vector<PlanRow>& rows, double deadline_days) {
  InTime c;
  for (const PlanRow& r : rows) {
    if (!r.planned()) continue;
    if (!c.fastest || r.days() < c.fastest->days()) c.fastest = &r;
    if (!r.meets(deadline_days)) continue;
    if (!c.least_energy || r.estimate.facility_energy_MWh() < c.least_energy->estimate.facility_energy_MWh())
      c.least_energy = &r;
    if (!c.least_emissions || r.estimate.tco2e < c.least_emissions->estimate.tco2e) c.least_emissions = &r;
    if (!c.fewest_chip_hours || r.estimate.chip_hours < c.fewest_chip_hours->estimate.chip_hours)
      c.fewest_chip_hours = &r;
  }
  return c;
}

// A run's energy in MWh, or in kWh when it draws under 1 MWh, so that a small run's figures do not
// print as 0.0; its emissions in t, or kg below 1 t.
struct EnergyUnits {
  double per_MWh = 1, per_t = 1;
  std::string energy = "MWh", mass = "t";
  explicit EnergyUnits(double facility_MWh, double tco2e) {
    if (facility_MWh < 1) per_MWh = 1000, energy = "kWh";
    if (tco2e < 1) per_t = 1000, mass = "kg";
  }
};

std::string deadline_summary(const std::vector<PlanRow>& rows, double deadline_days) {
  const InTime c = choose_in_time(rows, deadline_days);
  const std::string within = "within " + days_given(deadline_days) + " days";
  if (!c.least_energy)
    return c.fastest ? "None finishes " + within + "; the fastest is " + c.fastest->sim.input.cluster.id() + ", " +
                           c.fastest->days_text() + " days.\n"
                     : "None finishes " + within + ".\n";
  const double MWh = c.least_energy->estimate.facility_energy_MWh(), t = c.least_emissions->estimate.tco2e;
  const EnergyUnits u(MWh, t);
  return "Finishing " + within + ": least energy on " + c.least_energy->sim.input.cluster.id() + " (" +
         format_fixed(MWh * u.per_MWh, 1) + " " + u.energy + ", " + c.least_energy->days_text() +
         " days), least emissions on " + c.least_emissions->sim.input.cluster.id() + " (" +
         format_fixed(t * u.per_t, 1) + " " + u.mass + "CO2e), fewest chip-hours on " +
         c.fewest_chip_hours->sim.input.cluster.id() + " (" + format_count(c.fewest_chip_hours->estimate.chip_hours) +
         ").\n";
}

// The checkpoint and failure figures, before the run's expected wall-clock time.
void add_interruption_rows(TextTable& t, const InterruptedRun& r) {
  t.add_row({"compute time (no failures)", format_fixed(r.compute_s / 3600, 0) + " h"});
  t.add_row({"checkpoint", format_bytes(r.checkpoint_bytes) + ", written in " + format_duration(r.checkpoint_write_s)});
  t.add_row({r.interval_is_optimum ? "checkpoint interval (optimum)" : "checkpoint interval",
             format_duration(r.interval_s) + " (" + std::to_string(r.interval_steps) + " steps)"});
  t.add_row({"mean time between failures", format_duration(r.system_mtbf_s) + " (" +
                                               format_fixed(r.expected_failures, r.expected_failures < 10 ? 1 : 0) +
                                               " expected failures)"});
  t.add_row({"  checkpoint writes", format_fixed(r.checkpoint_total_s / 3600, 1) + " h"});
  t.add_row({"  restarts (" + format_duration(r.restart_s) + " each, checkpoint read included)",
             format_fixed(r.restart_total_s / 3600, 1) + " h"});
  t.add_row({"  work lost since the last checkpoint", format_fixed(r.lost_work_s / 3600, 1) + " h"});
  t.add_row({"goodput", format_fixed(100 * r.goodput(), 1) + "%"});
}

std::string render_single(const PlanRow& row, std::optional<double> deadline_days) {
  const auto& e = row.estimate;
  const auto& in = row.sim.input;
  std::string out = "Training plan: " + in.model.id + " on " + in.cluster.id() + " (" +
                    format_chips(in.cluster.num_chips()) + "), " + format_count(e.tokens) + " tokens\n";
  out += "plan: " + plan_description(in.plan, in.model.is_moe()) + "; " + std::to_string(in.plan.batch_tokens) + " tokens per step\n\n";
  TextTable t({"figure", "value"}, {false, true});
  t.add_row({"steps", format_fixed(e.steps, 0)});
  t.add_row({"step time", format_seconds(e.step_time_s)});
  if (in.plan.pp > 1)
    t.add_row({"pipeline bubble", format_seconds(row.step.pipeline_bubble_s) + " (" +
                                      format_fixed(100 * row.step.pipeline_bubble_s / e.step_time_s, 1) + "% of step)"});
  if (e.interruptions) add_interruption_rows(t, *e.interruptions);
  t.add_row({e.interruptions ? "training time, expected" : "training time",
             e.train_hours >= 48 ? format_fixed(e.train_hours, 0) + " h (" + format_fixed(e.train_hours / 24, 1) + " days)"
                                 : format_duration(e.train_hours * 3600)});
  if (deadline_days)
    t.add_row({"deadline (" + days_given(*deadline_days) + " days)",
               row.meets(*deadline_days) ? "met, " + margin(*deadline_days - row.days()) + " to spare"
               : row.step.fits_memory    ? "MISSED by " + margin(row.days() - *deadline_days) + chips_for_deadline(row, *deadline_days)
                                         : "not met: the plan does not fit in memory"});
  t.add_row({"chip-hours", format_count(e.chip_hours)});
  const MemoryFootprint& mem = row.step.memory;
  t.add_row({"memory per chip", format_bytes(mem.total_bytes()) + " of " + format_bytes(in.usable_hbm_bytes()) +
                                    (in.keeps_hbm_back() ? " usable" : "")});
  if (in.keeps_hbm_back())
    t.add_row({"  kept back of " + format_bytes(in.cluster.chip().hbm_bytes) + " HBM", hbm_kept_back(in)});
  add_memory_breakdown_rows(t, mem);
  t.add_row({"MFU", format_fixed(100 * e.mfu, 1) + "%"});
  t.add_row({"average system power per chip", format_fixed(e.average_power_per_chip_W(), 0) + " W"});
  const EnergyUnits u(e.facility_energy_MWh(), e.tco2e);
  t.add_row({"IT energy", format_fixed(e.it_energy_MWh() * u.per_MWh, 1) + " " + u.energy});
  t.add_row({"facility energy (PUE " + format_fixed(e.facility.pue, 2) + ")",
             format_fixed(e.facility_energy_MWh() * u.per_MWh, 1) + " " + u.energy});
  t.add_row({"emissions (" + format_fixed(e.facility.carbon_kg_per_kWh, 3) + " kgCO2e/kWh)",
             format_fixed(e.tco2e * u.per_t, 1) + " " + u.mass + "CO2e"});
  if (e.electricity_cost)
    t.add_row({"electricity cost ($" + format_shortest(*e.facility.price_per_kWh) + "/kWh)",
               "$" + format_count(*e.electricity_cost)});
  out += t.render();
  TextTable b({"energy by part", u.energy, "share"}, {false, true, true});
  auto add = [&](const std::string& name, double MWh) {
    b.add_row({name, format_fixed(MWh * u.per_MWh, 1), format_fixed(100 * MWh / e.energy.total(), 1) + "%"});
  };
  add("chips, above idle", e.energy.chip_compute);
  add("chips, idle", e.energy.chip_idle);
  add("hosts (share per chip)", e.energy.host);
  // A cluster file whose links and switches draw nothing of their own (the TPU pods': the ICI is in
  // the chips' and the hosts' figures) says so rather than a bare 0.
  add(e.energy.network > 0 ? "network" : "network (none of its own)", e.energy.network);
  add("facility overhead", e.energy.facility_overhead);
  out += "\n" + b.render() + calibration_line(in.profile);
  if (!row.step.fits_memory) out += "\nWARNING: the plan does not fit in memory (simulated anyway)\n";
  out += row.sim.plan_note;  // how the plan was chosen, when glamsim chose it
  return out;
}

// The PUE and grid intensity behind each row's facility MWh and tCO2e: the cluster files' own (a
// TPU file's and a DGX file's differ fourfold in kgCO2e/kWh), unless --pue or --carbon-intensity set them.
std::string facility_note(const std::vector<PlanRow>& rows) {
  std::vector<std::string> each;
  std::set<std::pair<double, double>> distinct;
  for (const auto& r : rows) {
    if (!r.planned()) continue;
    const auto& f = r.estimate.facility;
    distinct.insert({f.pue, f.carbon_kg_per_kWh});
    each.push_back(r.sim.input.cluster.id() + " " + format_fixed(f.pue, 2) + " and " +
                   format_fixed(f.carbon_kg_per_kWh, 3));
  }
  if (distinct.empty()) return "";
  if (distinct.size() == 1)
    return "facility: PUE " + format_fixed(distinct.begin()->first, 2) + " and " +
           format_fixed(distinct.begin()->second, 3) + " kgCO2e/kWh for every cluster\n";
  std::string out = "facility: PUE and kgCO2e/kWh differ (the cluster files'; --pue and --carbon-intensity set them "
                    "for all): ";
  for (size_t i = 0; i < each.size(); ++i) out += (i ? "; " : "") + each[i];
  return out + "\n";
}

// The rows' attention, when it differs (GPU clusters fuse it, TPU pods do not): their labels do not say.
std::string attention_note(const std::vector<PlanRow>& rows, bool from_plan_files) {
  std::map<std::string, std::string> clusters_of;  // attention -> "id, id"
  for (const auto& r : rows) {
    if (!r.planned()) continue;
    std::string& ids = clusters_of[r.sim.input.plan.attention];
    ids += (ids.empty() ? "" : ", ") + r.sim.input.cluster.id();
  }
  if (clusters_of.size() < 2) return "";
  std::string out = "attention: ";
  for (const auto& [attention, ids] : clusters_of) out += attention + " on " + ids + "; ";
  return out + (from_plan_files ? "the plan file's attention key sets it for all\n" : "--attention sets it for all\n");
}

// Every cluster's reason, once when they all say the same (an ep that does not divide the experts).
std::string no_layout_applies(const std::vector<PlanRow>& rows, bool layout_given) {
  std::string out = layout_given ? "the layout given applies to none of the clusters compared"
                                 : "no parallel layout is valid on any of the clusters compared";
  const bool same = std::all_of(rows.begin(), rows.end(), [&](const PlanRow& r) {
    return r.not_applicable == rows.front().not_applicable;
  });
  if (same) return out + ": " + rows.front().not_applicable;
  for (size_t i = 0; i < rows.size(); ++i)
    out += (i ? "; on " : ": on ") + rows[i].sim.input.cluster.id() + ", " + rows[i].not_applicable;
  return out;
}

// No row fits: the smallest footprint's cluster, what would make it fit, and the clusters the layout
// given does not apply to (their rows are not a memory verdict).
std::string fits_none(const std::vector<PlanRow>& rows, const SimulationOptions& opts) {
  const PlanRow* small = nullptr;
  std::string not_applicable;
  for (const PlanRow& r : rows) {
    if (!r.not_applicable.empty()) not_applicable += (not_applicable.empty() ? "" : ", ") + r.sim.input.cluster.id();
    else if (!small || r.does_not_fit->needed_bytes < small->does_not_fit->needed_bytes) small = &r;
  }
  const std::string scope = not_applicable.empty() ? "the clusters compared"
                                                   : "the clusters it applies to (it does not apply to " + not_applicable + ")";
  const std::string hint = opts.fixes_layout() ? fitting_hint(small->sim.input.plan, !opts.plan_file.empty())
                                                 : " (use more chips, a smaller batch, or --allow-oom)";
  return opts.model + (opts.gives_a_layout() ? " in the layout given" : "") + " fits none of " + scope + ": on " +
         small->sim.input.cluster.id() + " it needs " + format_bytes(small->does_not_fit->needed_bytes) +
         " per chip, " + format_bytes(small->does_not_fit->usable_hbm_bytes) + " usable there" + hint;
}

std::string render_compare(const std::vector<PlanRow>& rows, double tokens, std::optional<double> deadline_days,
                           const SimulationOptions& opts) {
  // One unit per column, set by its largest figure.
  double most_MWh = 0, most_t = 0;
  for (const auto& r : rows)
    if (r.planned()) most_MWh = std::max(most_MWh, r.estimate.facility_energy_MWh()), most_t = std::max(most_t, r.estimate.tco2e);
  const EnergyUnits u(most_MWh, most_t);
  std::vector<std::string> header = {"cluster", "chips", "plan", "step", "days", "chip-hours", "MFU", "W/chip",
                                     "facility " + u.energy, u.mass + "CO2e"};
  std::vector<bool> right = {false, true, false, true, true, true, true, true, true, true};
  const bool interruptions = std::any_of(rows.begin(), rows.end(), [](const PlanRow& r) {
    return r.estimate.interruptions.has_value();
  });
  if (interruptions) header.insert(header.begin() + 5, "goodput"), right.insert(right.begin() + 5, true);
  // A price per kWh (--price-per-kwh, or a cluster file's) prices each row's facility energy.
  const bool priced = std::any_of(rows.begin(), rows.end(), [](const PlanRow& r) {
    return r.planned() && r.estimate.electricity_cost.has_value();
  });
  if (priced) header.push_back("electricity $"), right.push_back(true);
  if (deadline_days) header.push_back("in time"), right.push_back(false);
  TextTable t(header, right);
  for (const auto& r : rows) {
    std::vector<std::string> cells;
    if (!r.planned()) {
      cells = {r.sim.input.cluster.id(), std::to_string(r.sim.input.cluster.num_chips()),
               !r.not_applicable.empty() ? (opts.gives_a_layout() ? "layout given does not apply (below)" : "no valid layout (below)")
               : r.does_not_fit          ? "does not fit: " + format_bytes(r.does_not_fit->needed_bytes) + " of " +
                                          format_bytes(r.does_not_fit->usable_hbm_bytes) + " usable per chip"
                                        : "does not finish: a failure every " +
                                          format_duration(r.estimate.interruptions->system_mtbf_s),
               "-", "-", "-", "-", "-", "-", "-"};
      if (interruptions) cells.push_back("-");
      if (priced) cells.push_back("-");
    } else {
      const auto& e = r.estimate;
      cells = {r.sim.input.cluster.id(), std::to_string(r.sim.input.cluster.num_chips()),
               plan_short_label(r.sim.input.plan),
               format_seconds(e.step_time_s), r.days_text()};
      if (e.interruptions) cells.push_back(format_fixed(100 * e.interruptions->goodput(), 1) + "%");
      cells.insert(cells.end(), {format_count(e.chip_hours),
               format_fixed(100 * e.mfu, 1) + "%", format_fixed(e.average_power_per_chip_W(), 0),
               format_fixed(e.facility_energy_MWh() * u.per_MWh, 1), format_fixed(e.tco2e * u.per_t, 1)});
      if (priced) cells.push_back(e.electricity_cost ? format_count(*e.electricity_cost) : "-");
    }
    if (deadline_days) cells.push_back(!r.planned() ? "-" : r.meets(*deadline_days) ? "yes" : "no");
    t.add_row(cells);
  }
  std::string out = "Training plans: " + rows.front().sim.input.model.id + ", " + format_count(tokens) + " tokens\n\n" +
                    t.render() + "\nplan: " + kPlanLabelLegend + "\n";
  if (interruptions)
    out += "days: expected, with checkpoints, restarts and work lost to failures; goodput: the steps' share of them\n";
  for (const auto& r : rows)
    if (!r.not_applicable.empty()) out += r.sim.input.cluster.id() + ": " + r.not_applicable + "\n";
  out += facility_note(rows) + attention_note(rows, !opts.plan_file.empty());
  if (deadline_days) out += deadline_summary(rows, *deadline_days);
  return out;
}

}  // namespace

void add_plan_command(CLI::App& app) {
  struct Options : SimulationOptions {
    std::string tokens;
    std::optional<double> pue, carbon, price, days;
    std::optional<double> chip_mtbf_hours, checkpoint_GBps, checkpoint_hours;
    double restart_minutes = 10;
    std::vector<std::string> compare;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("plan", "Plan a training run: days, chip-hours, MWh and tCO2e for a token budget");
  opts->with_cluster = false;
  opts->with_layers = false;
  opts->register_options(*cmd, false);
  auto* cluster = cmd->add_option("--cluster", opts->cluster, "Cluster id or TOML file");
  cmd->add_option("--compare", opts->compare,
                  "Several clusters, one row each: ids, files, or patterns over the catalogue ('tpu-v4-*')")
      ->excludes(cluster);
  // Checked in the callback rather than by CLI11, so that `--compare --tokens 1B C1` is told why.
  cmd->add_option("--tokens", opts->tokens, "Training tokens, e.g. 600e9 or 600B (suffixes K, M, B, T); required");
  cmd->add_option("--pue", opts->pue, "Power usage effectiveness (default: the cluster's)");
  cmd->add_option("--carbon-intensity", opts->carbon, "Grid carbon intensity, kgCO2e per kWh (default: the cluster's)");
  cmd->add_option("--price-per-kwh", opts->price,
                  "Electricity price, $ per kWh of facility energy (default: the cluster file's facility.price_per_kWh, "
                  "if any): adds the run's electricity cost");
  cmd->add_option("--days", opts->days,
                  "Deadline in days: says whether each plan finishes in time, and which cluster that does draws the "
                  "least energy")
      ->transform(cli_checks::number_between(0.01, 36500));
  auto* mtbf = cmd->add_option("--chip-mtbf-hours", opts->chip_mtbf_hours,
                               "Mean hours between interruptions of one chip, its host share included (Llama 3's "
                               "pre-training saw 419 unexpected ones in 54 days on 16,384 H100s: about 50,700): adds "
                               "checkpoints, restarts and work lost to failures to the run")
                   ->transform(cli_checks::number_between(1, 1e12));
  cmd->add_option("--checkpoint-GBps", opts->checkpoint_GBps,
                  "Write and read bandwidth of the checkpoint storage, GB/s for the whole cluster (with "
                  "--chip-mtbf-hours)")
      ->transform(cli_checks::number_between(1e-3, 1e9))
      ->needs(mtbf);
  mtbf->needs("--checkpoint-GBps");
  cmd->add_option("--restart-minutes", opts->restart_minutes,
                  "Minutes from a failure to training again, before the checkpoint is read back (default 10)")
      ->transform(cli_checks::number_between(0, 1e6))
      ->needs(mtbf);
  cmd->add_option("--checkpoint-hours", opts->checkpoint_hours,
                  "Hours of training between checkpoints (default: the interval that minimises the expected "
                  "time, Daly 2006)")
      ->transform(cli_checks::number_between(1e-4, 1e6))
      ->needs(mtbf);
  cmd->callback([opts] {
    for (const auto& id : opts->compare)
      if (!id.empty() && id.front() == '-')
        throw UsageError("--compare " + id + ": expected cluster ids right after --compare (it takes every word up to "
                         "the next option, and none was given before " + id + ")");
    if (opts->cluster.empty() && opts->compare.empty()) throw UsageError("give --cluster ID or --compare ID ID...");
    if (opts->tokens.empty()) throw UsageError("--tokens is required: the run's training tokens, such as 600B");
    const double tokens = parse_tokens(opts->tokens);
    std::optional<InterruptionParameters> interruptions;
    if (opts->chip_mtbf_hours) {
      interruptions = InterruptionParameters{*opts->chip_mtbf_hours, *opts->checkpoint_GBps * 1e9,
                                             opts->restart_minutes * 60, std::nullopt};
      if (opts->checkpoint_hours) interruptions->interval_s = *opts->checkpoint_hours * 3600;
    }
    std::vector<std::string> clusters =
        opts->compare.empty() ? std::vector<std::string>{opts->cluster} : expand_clusters(opts->compare);
    const bool progress = !opts->quiet && isatty(STDERR_FILENO);
    // Load every cluster, then resolve each (choosing a plan simulates): a bad cluster file fails before
    // any simulation.
    for (const auto& id : clusters) load_cluster(id);
    std::vector<PlanRow> rows;
    // --compare keeps its form (a table of rows, JSON's "plans") when its patterns match one cluster.
    const bool comparing = !opts->compare.empty();
    // Rows are named by cluster id: two arguments with one id (a user's file that kept the id of the
    // catalogue file it was copied from) would make two rows of one name.
    std::map<std::string, std::string> argument_of_id;
    auto check_distinct = [&](const std::string& id, const std::string& argument) {
      const auto [it, fresh] = argument_of_id.emplace(id, argument);
      if (!fresh)
        throw UsageError("--compare " + it->second + " and " + argument + ": both are cluster '" + id +
                         "'; give each file its own id");
    };
    for (const auto& id : clusters) {
      std::optional<ResolvedSimulation> sim;
      try {
        sim = opts->resolve_for_cluster(id, progress);
      } catch (const PlanDoesNotFit& e) {
        // One cluster too small does not end a comparison: its row says so.
        if (!comparing) throw;
        rows.push_back({ResolvedSimulation{SimulationInput{load_model(opts->model), load_cluster(id)}, ""}, {}, {},
                        PlanRow::TooSmall{e.needed_bytes, e.hbm_bytes}});
        check_distinct(rows.back().sim.input.cluster.id(), id);
        continue;
      } catch (const LayoutDoesNotApply& e) {
        // Nor does a layout that one cluster cannot run (--dp 64 over 8 chips, pp not dividing its
        // chips, a batch too small for its widest dp): its row says why.
        if (!comparing) throw;
        rows.push_back({ResolvedSimulation{SimulationInput{load_model(opts->model), load_cluster(id)}, ""}, {}, {},
                        std::nullopt, e.what()});
        check_distinct(rows.back().sim.input.cluster.id(), id);
        continue;
      }
      check_distinct(sim->input.cluster.id(), id);
      PlanRow row{std::move(*sim), {}, {}, std::nullopt};
      if (tokens < static_cast<double>(row.sim.input.plan.batch_tokens))
        throw UsageError("the batch of " + std::to_string(row.sim.input.plan.batch_tokens) +
                         " tokens is larger than the token budget of " + opts->tokens);
      facility_for(row.sim.input.cluster, opts->pue, opts->carbon, opts->price);
      rows.push_back(std::move(row));
    }
    for (auto& row : rows) {
      if (!row.planned()) continue;
      if (progress) std::cerr << "glamsim: simulating " << row.sim.input.cluster.id() << "...\r" << std::flush;
      row.step = simulate_step(row.sim.input);
      if (!row.step.fits_memory && !opts->allow_oom && comparing) {
        row.does_not_fit = PlanRow::TooSmall{row.step.memory.total_bytes(), row.sim.input.usable_hbm_bytes()};
        continue;
      }
      if (!row.step.fits_memory && !opts->allow_oom)
        throw UsageError("the plan for " + row.sim.input.cluster.id() + " needs " +
                         format_bytes(row.step.memory.total_bytes()) + " per chip, more than its " +
                         format_bytes(row.sim.input.usable_hbm_bytes()) + usable_hbm_note(row.sim.input) +
                         fitting_hint(row.sim.input.plan, !opts->plan_file.empty()));
      row.estimate = estimate_training(row.sim.input, row.step, tokens,
                                       facility_for(row.sim.input.cluster, opts->pue, opts->carbon, opts->price), interruptions);
      if (row.never_finishes() && !comparing)
        throw UsageError("on " + row.sim.input.cluster.id() + ", " + row.estimate.interruptions->why_it_does_not_finish() +
                         (opts->checkpoint_hours ? " (a shorter --checkpoint-hours, or leave it out for the optimum; "
                                                   : " (") +
                         "more reliable chips, faster checkpoint storage, or fewer chips)");
    }
    // Nothing to compare: no cluster can run the layout, or none it runs on holds the model.
    if (std::all_of(rows.begin(), rows.end(), [](const PlanRow& r) { return !r.not_applicable.empty(); }))
      throw UsageError(no_layout_applies(rows, opts->gives_a_layout()));
    if (std::all_of(rows.begin(), rows.end(), [](const PlanRow& r) { return r.does_not_fit || !r.not_applicable.empty(); }))
      throw UsageError(fits_none(rows, *opts));
    if (opts->format == "json") {
      auto one = [&opts](const PlanRow& r) {
        if (!r.not_applicable.empty()) {
          nlohmann::json j = {{"model", r.sim.input.model.id},
                              {"cluster", r.sim.input.cluster.id()},
                              {"chips", r.sim.input.cluster.num_chips()},
                              {"layout_applies", false},
                              {"fits_memory", nullptr},
                              {"reason", r.not_applicable}};
          if (opts->days) j["meets_deadline"] = false;
          return j;
        }
        if (r.does_not_fit) {
          nlohmann::json j = {{"model", r.sim.input.model.id},
                              {"cluster", r.sim.input.cluster.id()},
                              {"chips", r.sim.input.cluster.num_chips()},
                              {"layout_applies", true},
                              {"fits_memory", false},
                              {"memory_per_chip_bytes", r.does_not_fit->needed_bytes},
                              {"usable_hbm_bytes", r.does_not_fit->usable_hbm_bytes},
                              {"runtime_reserved_bytes", r.sim.input.cluster.chip().runtime_reserved_bytes}};
          if (opts->days) j["meets_deadline"] = false;
          return j;
        }
        if (r.never_finishes()) {
          nlohmann::json j = {{"model", r.sim.input.model.id},
                              {"cluster", r.sim.input.cluster.id()},
                              {"chips", r.sim.input.cluster.num_chips()},
                              {"plan", plan_to_json(r.sim.input.plan)},
                              {"layout_applies", true},
                              {"fits_memory", r.step.fits_memory},
                              {"finishes", false},
                              {"reason", r.estimate.interruptions->why_it_does_not_finish()}};
          if (opts->days) j["meets_deadline"] = false;
          return j;
        }
        nlohmann::json j = r.estimate.to_json();
        if (r.estimate.interruptions) j["finishes"] = true;
        j["model"] = r.sim.input.model.id;
        j["cluster"] = r.sim.input.cluster.id();
        j["chips"] = r.sim.input.cluster.num_chips();
        j["plan"] = plan_to_json(r.sim.input.plan);
        j["layout_applies"] = true;
        j["fits_memory"] = r.step.fits_memory;
        j["memory_per_chip_bytes"] = r.step.memory.total_bytes();
        j["memory_breakdown_bytes"] = memory_breakdown_json(r.step.memory);
        j["runtime_reserved_bytes"] = r.sim.input.cluster.chip().runtime_reserved_bytes;
        j["usable_hbm_bytes"] = r.sim.input.usable_hbm_bytes();
        j["pipeline_bubble_s"] = r.step.pipeline_bubble_s;
        if (opts->days) j["meets_deadline"] = r.meets(*opts->days);
        if (opts->list_layouts) j["layouts"] = r.sim.layouts_json();
        return j;
      };
      if (!comparing) {
        nlohmann::json j = one(rows.front());
        if (opts->days) j["deadline_days"] = *opts->days;
        std::cout << j.dump(2) << "\n";
      } else {
        nlohmann::json all = {{"plans", nlohmann::json::array()}};
        for (const auto& r : rows) all["plans"].push_back(one(r));
        if (opts->days) {
          const InTime c = choose_in_time(rows, *opts->days);
          auto id = [](const PlanRow* r) { return r ? nlohmann::json(r->sim.input.cluster.id()) : nlohmann::json(); };
          all["deadline_days"] = *opts->days;
          all["least_energy_in_time"] = id(c.least_energy);
          all["least_emissions_in_time"] = id(c.least_emissions);
          all["fewest_chip_hours_in_time"] = id(c.fewest_chip_hours);
          all["fastest"] = id(c.fastest);
        }
        std::cout << all.dump(2) << "\n";
      }
    } else {
      std::cout << (comparing ? render_compare(rows, tokens, opts->days, *opts) : render_single(rows.front(), opts->days))
                << edited_copy_note(opts->model, rows.front().sim.input.model);
      if (opts->list_layouts)
        for (const auto& r : rows)
          if (!r.does_not_fit && r.not_applicable.empty()) std::cout << (comparing ? "\n" + r.sim.input.cluster.id() + ":" : "") << r.sim.layouts_text();
    }
  });
}

}  // namespace glam::cli
