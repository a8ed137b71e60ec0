// glamsim collective: one collective over groups of a cluster's chips, at a range of buffer sizes, timed
// by the same network model a training step uses, and reported as nccl-tests report a measurement
// (time, algorithm bandwidth, bus bandwidth), so the model can be set beside nccl-tests or
// `glamexec calibrate` on the real cluster.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>

#include "cli/command.h"
#include "cli/simulation_options.h"
#include "common/cli_checks.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "network/flow_network.h"
#include "network/network_model.h"
#include "validate/validation.h"

namespace glam::cli {
namespace {

// "8", "64K", "1.5M", "4G", "1e9": a whole number of bytes, with binary K, M, G suffixes as nccl-tests
// reads them.
int64_t parse_bytes(const std::string& option, const std::string& text) {
  double scale = 1;
  std::string number = text;
  if (!number.empty()) {
    const char unit = static_cast<char>(std::toupper(static_cast<unsigned char>(number.back())));
    if (unit == 'K' || unit == 'M' || unit == 'G') {
      scale = unit == 'K' ? 1024.0 : unit == 'M' ? 1024.0 * 1024 : 1024.0 * 1024 * 1024;
      number.pop_back();
    }
  }
  // Decimal digits, a point and an exponent only: no signs, spaces or hexadecimal.
  const bool plain = !number.empty() && std::isdigit(static_cast<unsigned char>(number.front())) &&
                     number.find_first_not_of("0123456789.eE") == std::string::npos;
  double v = 0;
  size_t used = 0;
  if (plain) {
    try {
      v = std::stod(number, &used) * scale;
    } catch (const std::exception&) {
      used = 0;
    }
  }
  if (!plain || used != number.size() || !std::isfinite(v) || v < 1 || v > 1e15 || v != std::floor(v))
    throw UsageError(option + " " + text + ": expected a whole number of bytes from 1 to 1e15 (suffixes K, M, G: "
                     "KiB, MiB, GiB)");
  return static_cast<int64_t>(v);
}

// The collectives the command times (pipeline sends are costed from the link figures alone).
constexpr CollectiveKind kTimedKinds[] = {CollectiveKind::kAllReduce, CollectiveKind::kAllGather,
                                          CollectiveKind::kReduceScatter, CollectiveKind::kAllToAll};

CollectiveKind parse_kind(const std::string& text) {
  for (CollectiveKind k : kTimedKinds)
    if (text == collective_name(k)) return k;
  throw UsageError("--kind " + text + ": expected all_reduce, all_gather, reduce_scatter or all_to_all");
}

struct Point {
  CollectiveKind kind;
  int64_t bytes = 0;
  CollectiveCost cost;
  double measured_s = 0;  // --against-measured: the profile's time at this size
};

// The profile's measured curve for `kind` over groups of n ranks; a UsageError naming what the
// profile has when there is none.
const CollectiveCurve& measured_curve(const CalibrationProfile& profile, CollectiveKind kind, int64_t n) {
  std::string has;
  for (const CollectiveCurve& c : profile.collectives) {
    if (c.kind == kind && c.ranks == n) return c;
    has += std::string(has.empty() ? "" : ", ") + collective_name(c.kind) + " over " + std::to_string(c.ranks);
  }
  throw UsageError("--against-measured: " + profile.source + " measured no " + collective_name(kind) + " over groups of " +
                   std::to_string(n) + " (it has " + (has.empty() ? "no collectives" : has) +
                   "; --kind and --group-size choose)");
}

// Where a group sits: "4x4x4 blocks of the torus", or its chips in chip order when they make no block
// (block layouts need powers of two), or "consecutive chips".
std::string group_shape(const Cluster& cluster, const std::vector<int>& group) {
  const auto& dims = cluster.torus_dims();
  if (dims.empty()) return cluster.chips_per_node() > 1 ? "consecutive chips, a node's first" : "consecutive chips";
  std::vector<int> lo(dims.size(), 1 << 30), hi(dims.size(), -1);
  for (int chip : group) {
    const auto xyz = cluster.torus_coords(chip);
    for (size_t d = 0; d < dims.size(); ++d) lo[d] = std::min(lo[d], xyz[d]), hi[d] = std::max(hi[d], xyz[d]);
  }
  std::string extent;
  size_t volume = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    extent += (d ? "x" : "") + std::to_string(hi[d] - lo[d] + 1);
    volume *= static_cast<size_t>(hi[d] - lo[d] + 1);
  }
  return volume == group.size() ? extent + " blocks of the torus"
                                : "chips in chip order, not torus blocks (those need a power-of-two group size)";
}

}  // namespace

void add_collective_command(CLI::App& app) {
  struct Options {
    std::string cluster, fidelity = "analytical", calibration, format = "text", min_bytes = "1K", max_bytes = "4G",
                algorithm = "fastest";
    std::vector<std::string> kinds;
    int64_t group_size = 0, step_factor = 4, stride = 1;
    size_t flow_max_flows = FlowNetwork::kDefaultMaxFlows;
    bool against_measured = false;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "collective", "Time one collective over groups of a cluster's chips by buffer size, as nccl-tests reports it");
  cmd->add_option("--cluster", opts->cluster,
                  "Cluster id or TOML file (default: the host --calibration PROFILE measured, its ranks on one node "
                  "linked as it measured them)");
  cmd->add_option("--kind", opts->kinds, "all_reduce, all_gather, reduce_scatter or all_to_all (repeatable; default all)");
  cmd->add_option("--group-size", opts->group_size,
                  "Chips per group (default: every chip, one group); the groups are neighbouring chips (a node's "
                  "GPUs first, compact torus blocks), all running the collective at once")
      ->transform(cli_checks::integer_at_least(2));
  cmd->add_option("--stride", opts->stride,
                  "Members this many chips apart, as a plan's data-parallel groups are beside tensor-parallel groups "
                  "of this size (on GPU clusters of 8-GPU nodes, 8: one GPU per node, on one rail; default 1)")
      ->transform(cli_checks::integer_at_least(1));
  cmd->add_option("-b,--min-bytes", opts->min_bytes, "Smallest buffer per rank (default 1K; suffixes K, M, G)");
  cmd->add_option("-e,--max-bytes", opts->max_bytes, "Largest buffer per rank (default 4G)");
  cmd->add_option("-f,--step-factor", opts->step_factor, "Each size this many times the last (default 4)")
      ->transform(cli_checks::integer_at_least(2));
  cmd->add_option("--algorithm", opts->algorithm,
                  "fastest (at each size, as NCCL's tuner picks; the default), ring (the rings, or the torus "
                  "dimension-order schedule), tree (double binary trees: all_reduce across nodes of a GPU cluster) or "
                  "nvls (all_reduce inside nodes whose NVSwitches reduce: DGX H100 and H200), as NCCL_ALGO pins one")
      ->check(CLI::IsMember({"fastest", "ring", "tree", "nvls"}));
  cmd->add_option("--fidelity", opts->fidelity, "analytical or flow (SimGrid)");
  cmd->add_option("--flow-max-flows", opts->flow_max_flows,
                  "Largest phase (concurrent flows) played in SimGrid; larger ones are costed analytically")
      ->transform(cli_checks::integer_at_least(1));
  cmd->add_option("--calibration", opts->calibration, "Calibration profile (TOML) from glamexec calibrate");
  cmd->add_flag("--against-measured", opts->against_measured,
                "Set the link model (the profile's collective curves left out) beside the times the profile "
                "measured, at its sizes: the model's error on this host");
  cmd->add_option("--format", opts->format, "text (or table) or json")->transform(cli_checks::output_format());
  cmd->callback([opts] {
    if (opts->against_measured && opts->calibration.empty())
      throw UsageError("--against-measured compares with a calibration profile's measured collectives: give "
                       "--calibration PROFILE");
    // Everything checked before anything is timed.
    const Fidelity fidelity = parse_fidelity(opts->fidelity);
    const int64_t lo = parse_bytes("--min-bytes", opts->min_bytes), hi = parse_bytes("--max-bytes", opts->max_bytes);
    if (lo > hi) throw UsageError("--min-bytes " + opts->min_bytes + " is more than --max-bytes " + opts->max_bytes);
    std::vector<CollectiveKind> kinds;
    for (const auto& k : opts->kinds)
      if (std::find(kinds.begin(), kinds.end(), parse_kind(k)) == kinds.end()) kinds.push_back(parse_kind(k));
    if (kinds.empty()) kinds.assign(std::begin(kTimedKinds), std::end(kTimedKinds));
    const bool on_profile_host = opts->cluster.empty();
    if (on_profile_host && opts->calibration.empty())
      throw UsageError("give --cluster C, or --calibration PROFILE to time the host that profile measured");
    CalibrationProfile profile = on_profile_host ? load_profile(opts->calibration) : CalibrationProfile{};
    const Cluster cluster = on_profile_host ? profile_host_cluster(profile) : load_cluster(opts->cluster);
    if (!on_profile_host) profile = calibration_for(opts->calibration, cluster);
    const int64_t chips = cluster.num_chips();
    if (chips < 2) throw UsageError(cluster.id() + " has one chip: no collective to time");
    const int64_t stride = opts->stride;
    if (stride >= chips || chips % stride != 0)
      throw UsageError("--stride " + std::to_string(stride) + ": expected a divisor of " + cluster.id() + "'s " +
                       std::to_string(chips) + " chips, less than them");
    const int64_t n = opts->group_size ? opts->group_size : chips / stride;
    if (n > chips / stride || (chips / stride) % n != 0)
      throw UsageError("--group-size " + std::to_string(n) + ": expected a divisor of " + cluster.id() + "'s " +
                       std::to_string(chips) + " chips" +
                       (stride > 1 ? " / --stride " + std::to_string(stride) + " = " + std::to_string(chips / stride)
                                   : "") +
                       ", at least 2");
    // Groups of n neighbours are a plan's tensor-parallel groups: tp innermost in chip order, compact
    // blocks on a torus. Strided groups are its data-parallel groups beside tensor-parallel groups of
    // `stride` chips (the rest of the chips in pipeline stages, each with groups of its own).
    ParallelPlan plan;
    const CommAxis axis = stride > 1 ? CommAxis::kData : CommAxis::kTensor;
    if (stride > 1) plan.tp = stride, plan.dp = n, plan.pp = chips / (stride * n);
    else plan.tp = n, plan.dp = chips / n;
    const RankMap ranks(plan, cluster);
    const AlgorithmChoice choice = opts->algorithm == "ring"   ? AlgorithmChoice::kRing
                                   : opts->algorithm == "tree" ? AlgorithmChoice::kTree
                                   : opts->algorithm == "nvls" ? AlgorithmChoice::kNvls
                                                               : AlgorithmChoice::kFastest;
    if (const char* name = pinned_algorithm(choice)) {
      const std::string pinned = "--algorithm " + opts->algorithm + ": ";
      if (kinds != std::vector<CollectiveKind>{CollectiveKind::kAllReduce})
        throw UsageError(pinned + "it runs all_reduce only, as NCCL's does: add --kind all_reduce");
      const auto candidates = collective_candidates(cluster, CollectiveKind::kAllReduce, ranks.groups(axis));
      if (std::none_of(candidates.begin(), candidates.end(),
                       [name](const CollectiveSchedule& s) { return s.algorithm == name; })) {
        const std::string groups = "these groups of " + std::to_string(n) + " chips on " + cluster.id();
        if (choice == AlgorithmChoice::kTree)
          throw UsageError(pinned + "trees join the nodes of a GPU cluster, and " + groups +
                           (cluster.kind() == TopologyKind::kTorus ? " are on a torus" : " lie inside one node each"));
        throw UsageError(pinned + "NVLS reduces in a node's NVSwitches, and " + groups +
                         (cluster.nvswitch_reduces() ? " span several nodes"
                                                     : "'s nodes have none that reduce (switches.nvswitch.nvls)"));
      }
    }
    // --against-measured: the sizes the profile measured, and the model without its measured curves.
    std::vector<std::pair<CollectiveKind, std::vector<int64_t>>> sizes;
    std::map<std::pair<CollectiveKind, int64_t>, double> measured_s;
    for (CollectiveKind kind : kinds) {
      sizes.emplace_back(kind, std::vector<int64_t>{});
      if (!opts->against_measured) {
        for (int64_t b = lo; b <= hi; b = b > hi / opts->step_factor ? hi + 1 : b * opts->step_factor)
          sizes.back().second.push_back(b);
        continue;
      }
      const CollectiveCurve& curve = measured_curve(profile, kind, n);
      for (size_t i = 0; i < curve.bus_efficiency.sizes.size(); ++i) {
        const int64_t b = std::llround(curve.bus_efficiency.sizes[i]);
        sizes.back().second.push_back(b);
        // The profile's definition of its curve: busbw = efficiency x link bandwidth.
        measured_s[{kind, b}] = bus_factor(kind, static_cast<int>(n)) * static_cast<double>(b) /
                                (curve.bus_efficiency.values[i] * profile.link_bandwidth_Bps);
      }
    }
    if (opts->against_measured) profile.collectives.clear();
    const std::unique_ptr<NetworkModel> network = make_network(fidelity, cluster, ranks, profile, opts->flow_max_flows);
    network->pin_algorithm(choice);

    std::vector<Point> points;
    for (const auto& [kind, of_kind] : sizes)
      for (int64_t bytes : of_kind) {
        CollectiveRequest req;
        req.kind = kind, req.axis = axis, req.bytes = static_cast<double>(bytes);
        const auto m = measured_s.find({kind, bytes});
        points.push_back({kind, bytes, network->cost(req), m == measured_s.end() ? 0.0 : m->second});
      }
    // Flow fidelity: phases too large for SimGrid were costed analytically; say how many.
    const auto* flow = dynamic_cast<const FlowNetwork*>(network.get());
    const int analytical_phases = flow ? flow->phases_analytical() : 0;
    const std::string where = stride > 1 ? "members " + std::to_string(stride) + " chips apart"
                                         : group_shape(cluster, ranks.groups(axis).front());

    const int groups = static_cast<int>(chips / n);
    auto algbw = [](const Point& p) { return static_cast<double>(p.bytes) / p.cost.time_s; };
    // nccl-tests' bus bandwidth of a point taking `seconds`: the model's time, or the measured one.
    auto bus_bandwidth = [&](const Point& p, double seconds) {
      return bus_factor(p.kind, static_cast<int>(n)) * static_cast<double>(p.bytes) / seconds;
    };
    auto busbw = [&](const Point& p) { return bus_bandwidth(p, p.cost.time_s); };
    const std::string source = opts->calibration.empty()  ? "the chip kind's default calibration"
                               : opts->against_measured ? opts->calibration + " without its measured collectives"
                                                        : opts->calibration;
    auto error = [](const Point& p) { return p.cost.time_s / p.measured_s - 1; };
    auto measured_busbw = [&](const Point& p) { return bus_bandwidth(p, p.measured_s); };
    if (opts->format == "json") {
      nlohmann::json out = {{"cluster", cluster.id()},   {"chips", chips},
                            {"group_size", n},           {"groups", groups},
                            {"stride", stride},
                            {"groups_are", where},       {"fidelity", fidelity_name(fidelity)},
                            {"algorithm_choice", opts->algorithm},
                            {"flow_phases_analytical", analytical_phases},
                            {"calibration", opts->calibration.empty() ? nlohmann::json(nullptr)
                                                                      : nlohmann::json(opts->calibration)},
                            {"results", nlohmann::json::array()}};
      for (const Point& p : points)
        out["results"].push_back({{"kind", collective_name(p.kind)},
                                  {"bytes", p.bytes},
                                  {"time_s", p.cost.time_s},
                                  {"algbw_Bps", algbw(p)},
                                  {"busbw_Bps", busbw(p)},
                                  {"algorithm", p.cost.algorithm}});
      if (opts->against_measured)
        for (size_t i = 0; i < points.size(); ++i) {
          out["results"][i]["measured_time_s"] = points[i].measured_s;
          out["results"][i]["measured_busbw_Bps"] = measured_busbw(points[i]);
          out["results"][i]["error"] = error(points[i]);
        }
      std::cout << out.dump(2) << "\n";
      return;
    }
    std::cout << "Collectives on " << cluster.id() << " (" << format_chips(chips) << "): " << groups
              << (groups == 1 ? " group" : " groups") << " of " << n << " chips at once (" << where << "), "
              << fidelity_name(fidelity) << " fidelity, " << source
              << (choice == AlgorithmChoice::kFastest ? "" : ", the " + opts->algorithm + " algorithm pinned") << "\n";
    if (analytical_phases > 0)
      std::cout << analytical_phases << " phase(s) had more than --flow-max-flows " << opts->flow_max_flows
                << " flows and were costed analytically (raise it to play them in SimGrid)\n";
    std::cout << "\n";
    std::vector<std::string> head = {"collective", "bytes", "time", "algbw (GB/s)", "busbw (GB/s)", "algorithm"};
    std::vector<bool> right = {false, true, true, true, true, false};
    if (opts->against_measured) {
      head.insert(head.begin() + 3, {"measured", "model error"});
      right.insert(right.begin() + 3, {true, true});
      head.insert(head.end() - 1, "measured busbw (GB/s)");
      right.insert(right.end() - 1, true);
    }
    TextTable t(head, right);
    for (const Point& p : points) {
      std::vector<std::string> row = {collective_name(p.kind), format_bytes(static_cast<double>(p.bytes)),
                                      format_seconds(p.cost.time_s), format_fixed(algbw(p) / 1e9, 2),
                                      format_fixed(busbw(p) / 1e9, 2), p.cost.algorithm};
      if (opts->against_measured) {
        row.insert(row.begin() + 3, {format_seconds(p.measured_s), format_percent(error(p))});
        row.insert(row.end() - 1, format_fixed(measured_busbw(p) / 1e9, 2));
      }
      t.add_row(row);
    }
    std::cout << t.render()
              << "\nbytes: each rank's buffer, as nccl-tests count it (all_gather: the gathered output; reduce_scatter "
                 "and all_to_all: the whole input); busbw = algbw x 2(n-1)/n for all_reduce, x (n-1)/n for the others\n";
  });
}

}  // namespace glam::cli
