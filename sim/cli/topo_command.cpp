// glamsim topo: the cluster catalogue with its metrics (chips, links, diameter, bisection, ...).
#include <iostream>

#include "chip_kinds.h"
#include "cli/command.h"
#include "common/cli_checks.h"
#include "cluster.h"
#include "common/catalogue.h"
#include "common/text_table.h"
#include "metrics.h"

namespace glam::cli {
namespace {

std::string rate(double Bps) { return format_fixed(Bps / 1e12, 2) + " TB/s"; }

std::string render_topology_table(const std::vector<Cluster>& clusters, const std::vector<ClusterMetrics>& metrics) {
  TextTable t({"cluster", "kind", "chip", "chips", "links", "switches", "diameter", "bisection (one way)",
               "injection/chip", "peak bf16", "HBM"},
              {false, false, false, true, true, true, true, true, true, true, true});
  for (size_t i = 0; i < clusters.size(); ++i) {
    const Cluster& c = clusters[i];
    const ClusterMetrics& m = metrics[i];
    std::string kind = topology_kind_name(c.kind());
    if (!c.torus_dims().empty()) {
      kind += " ";
      for (size_t d = 0; d < c.torus_dims().size(); ++d) kind += (d ? "x" : "") + std::to_string(c.torus_dims()[d]);
    }
    t.add_row({c.id(), kind, c.chip().kind, std::to_string(m.chips), std::to_string(m.links),
               std::to_string(m.switches), std::to_string(m.diameter_hops) + " hops", rate(m.bisection_bandwidth_Bps),
               format_fixed(m.injection_bandwidth_Bps / 1e9, 0) + " GB/s",
               format_fixed(m.peak_flops / 1e15, 1) + " PFLOP/s", format_bytes(m.hbm_bytes)});
  }
  return t.render();
}

}  // namespace

void add_topo_command(CLI::App& app) {
  struct Options {
    std::vector<std::string> ids;
    std::string format = "text";
    bool fields = false;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "topo", "Cluster catalogue: chips, links, diameter, bisection and injection bandwidth, peak FLOP/s, HBM");
  cmd->add_option("ids", opts->ids, "Cluster ids, TOML files or patterns over the catalogue ('dgx-*'; default: the whole catalogue)");
  cmd->add_option("--format", opts->format, "text (or table) or json")->transform(cli_checks::output_format());
  cmd->add_flag("--fields", opts->fields, "List every cluster-file and chip-file field with its type, unit and default");
  cmd->callback([opts] {
    if (opts->fields) {
      std::cout << "# cluster files (topologies/<id>.toml)\n"
                << describe_cluster_fields() << "\n# chip files (topologies/chips/<kind>.toml)\n"
                << describe_chip_fields();
      return;
    }
    // Load and check every file before printing anything.
    std::vector<std::string> ids =
        opts->ids.empty() ? catalogue_ids("topologies") : expand_catalogue_patterns("topologies", opts->ids, "topo");
    std::vector<Cluster> clusters;
    std::vector<ClusterMetrics> metrics;
    for (const auto& id : ids) clusters.push_back(load_cluster(id));
    for (const auto& c : clusters) metrics.push_back(compute_metrics(c));
    if (opts->format == "json") {
      // {"clusters": [...]} however many were named, as `glamsim models` gives {"models": [...]}.
      nlohmann::json out = {{"clusters", nlohmann::json::array()}};
      for (size_t i = 0; i < clusters.size(); ++i) out["clusters"].push_back(metrics_json(clusters[i], metrics[i]));
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << render_topology_table(clusters, metrics);
    }
  });
}

}  // namespace glam::cli
