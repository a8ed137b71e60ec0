// Cluster files: the declared fields, the rules that involve several fields, and the assembly of a
// Cluster from them. Every field is declared once below (key, type, unit, default, meaning).
#include <algorithm>

#include "chip_kinds.h"
#include "cluster.h"
#include "cluster_parts.h"
#include "common/catalogue.h"
#include "common/errors.h"
#include "common/schema.h"
#include "switched_fabric.h"
#include "torus.h"

namespace glam {
namespace {

constexpr int64_t kMaxChips = 1 << 20;
constexpr int64_t kMaxSwitches = 1 << 20;

struct LinkFields {
  std::optional<double> bandwidth_Bps;
  double latency_s = 0, idle_W = 0, busy_W = 0;
};

// The file as written; chip figures not given come from the chip kind.
struct ClusterFile {
  std::string id, description, source;
  std::string chip_kind;
  std::optional<double> peak_flops_bf16, peak_flops_fp32, hbm_bytes, hbm_bandwidth_Bps, runtime_reserved_bytes, idle_W, busy_W,
      host_W_per_chip, all_to_all_peer_bytes;
  std::string topology_kind;
  std::vector<int64_t> dims;
  std::optional<int64_t> chips;
  int64_t chips_per_node = 1;
  std::vector<int64_t> down_ports, up_ports;
  bool rail_optimised = true;
  std::optional<double> ici_bw, nvlink_bw, ib_bw;
  double ici_latency_s = 0, nvlink_latency_s = 0, ib_latency_s = 0;
  double ici_idle_W = 0, ici_busy_W = 0, nvlink_idle_W = 0, nvlink_busy_W = 0, ib_idle_W = 0, ib_busy_W = 0;
  double nvswitch_latency_s = 0, nvswitch_W = 0;
  bool nvswitch_nvls = false;
  int64_t ib_ports = 0;
  double ib_switch_latency_s = 0, ib_switch_W = 0;
  double pue = 1, carbon_kg_per_kWh = 0;
  std::optional<double> price_per_kWh;
};

// Lists are checked after parsing (check_positive_list) so that the error shows the list on one line.
void check_positive_list(const std::vector<int64_t>& v, const std::string& file, const std::string& key);

void add_link_fields(Schema<ClusterFile>& s, const std::string& kind, std::optional<double> ClusterFile::*bw,
                     double ClusterFile::*lat, double ClusterFile::*idle, double ClusterFile::*busy,
                     double default_latency_s, const std::string& what) {
  const std::string k = "links." + kind + ".";
  s.add_optional(k + "bandwidth_Bps", bw, "B/s", what + ": bandwidth per direction (required where used)",
                 between(1e3, 1e15))
      .add(k + "latency_s", lat, "s", what + ": latency of one hop (wire, serdes, NIC)", default_latency_s,
           between(0.0, 1.0))
      .add(k + "idle_W", idle, "W", what + ": power of one direction when idle", 0.0, between(0.0, 1e5))
      .add(k + "busy_W", busy, "W", what + ": power of one direction when busy", 0.0, between(0.0, 1e5));
}

const Schema<ClusterFile>& cluster_schema() {
  static const Schema<ClusterFile> schema = [] {
    using F = ClusterFile;
    Schema<F> s;
    s.add("id", &F::id, "", "Catalogue id; equals the file name without .toml", required)
        .add("description", &F::description, "", "One line about the cluster", std::string())
        .add("source", &F::source, "", "Where the figures come from", std::string())
        .add("chip.kind", &F::chip_kind, "", "Chip kind: a file in topologies/chips/", required)
        .add_optional("chip.peak_flops_bf16", &F::peak_flops_bf16, "FLOP/s", "Override: dense bf16 peak",
                      between(1e6, 1e18))
        .add_optional("chip.peak_flops_fp32", &F::peak_flops_fp32, "FLOP/s", "Override: float32 peak",
                      between(1e6, 1e18))
        .add_optional("chip.hbm_bytes", &F::hbm_bytes, "bytes", "Override: HBM capacity", between(1e6, 1e15))
        .add_optional("chip.hbm_bandwidth_Bps", &F::hbm_bandwidth_Bps, "B/s", "Override: HBM bandwidth",
                      between(1e6, 1e17))
        .add_optional("chip.runtime_reserved_bytes", &F::runtime_reserved_bytes, "bytes",
                      "Override: HBM the software stack holds before a step allocates", between(0.0, 1e15))
        .add_optional("chip.all_to_all_peer_bytes", &F::all_to_all_peer_bytes, "bytes",
                      "Override: HBM the all-to-all's channels take per peer in the same node", between(0.0, 1e12))
        .add_optional("chip.idle_W", &F::idle_W, "W", "Override: chip power when idle", between(0.0, 1e5))
        .add_optional("chip.busy_W", &F::busy_W, "W", "Override: chip power when fully busy", between(1e-3, 1e5))
        .add_optional("chip.host_W_per_chip", &F::host_W_per_chip, "W", "Override: host/CPU/NIC/fan share per chip",
                      between(0.0, 1e5))
        .add("topology.kind", &F::topology_kind, "", "torus, fat-tree (NVSwitch nodes + InfiniBand) or single-node",
             required, one_of({"torus", "fat-tree", "single-node"}))
        .add("topology.dims", &F::dims, "chips", "Torus: chips along each dimension (chip = x + dx*(y + dy*z))",
             std::vector<int64_t>{})
        .add_optional("topology.chips", &F::chips, "chips", "Fat-tree and single-node: number of chips",
                      positive<int64_t>())
        .add("topology.chips_per_node", &F::chips_per_node, "chips",
             "Fat-tree: chips per node, joined by the node's NVSwitch (1: no NVSwitch)", int64_t{1},
             positive<int64_t>())
        .add("fat_tree.down_ports", &F::down_ports, "ports",
             "Children per switch at each level, leaf first (XGFT m1..mh); their product is the chip count",
             std::vector<int64_t>{})
        .add("fat_tree.up_ports", &F::up_ports, "ports",
             "Parents of each element at levels 2..h (XGFT w2..wh); default: as many as its children (non-blocking)",
             std::vector<int64_t>{})
        .add("fat_tree.rail_optimised", &F::rail_optimised, "",
             "Each leaf serves one local GPU index (rail) of m1 nodes; false: consecutive chips share a leaf", true);
    add_link_fields(s, "ici", &F::ici_bw, &F::ici_latency_s, &F::ici_idle_W, &F::ici_busy_W, 1e-6,
                    "TPU inter-chip link");
    add_link_fields(s, "nvlink", &F::nvlink_bw, &F::nvlink_latency_s, &F::nvlink_idle_W, &F::nvlink_busy_W, 0.5e-6,
                    "NVLink, GPU to its node's NVSwitch");
    add_link_fields(s, "infiniband", &F::ib_bw, &F::ib_latency_s, &F::ib_idle_W, &F::ib_busy_W, 1e-6,
                    "InfiniBand, NIC to leaf and switch to switch");
    s.add("switches.nvswitch.latency_s", &F::nvswitch_latency_s, "s", "NVSwitch forwarding latency", 0.0,
          between(0.0, 1.0))
        .add("switches.nvswitch.power_W", &F::nvswitch_W, "W", "NVSwitch power per node (0: inside host_W_per_chip)",
             0.0, between(0.0, 1e5))
        .add("switches.nvswitch.nvls", &F::nvswitch_nvls, "",
             "The NVSwitches reduce and multicast (NVLink SHARP, third-generation NVSwitch: DGX H100 and H200), so "
             "an all-reduce inside a node can run as NCCL's NVLS",
             false)
        .add("switches.infiniband.ports", &F::ib_ports, "ports", "Ports per InfiniBand switch", int64_t{64},
             positive_up_to<int64_t>(4096))
        .add("switches.infiniband.latency_s", &F::ib_switch_latency_s, "s", "InfiniBand switch forwarding latency",
             0.0, between(0.0, 1.0))
        .add("switches.infiniband.power_W", &F::ib_switch_W, "W", "Power of one InfiniBand switch (a cluster draws it for ceil(ports in use / ports) switches per tree level)", 0.0,
             between(0.0, 1e5))
        .add("facility.pue", &F::pue, "", "Power usage effectiveness of the datacentre", 1.2, between(1.0, 10.0))
        .add("facility.carbon_kg_per_kWh", &F::carbon_kg_per_kWh, "kgCO2e/kWh", "Carbon intensity of the electricity",
             0.37, between(0.0, 10.0))
        .add_optional("facility.price_per_kWh", &F::price_per_kWh, "$/kWh", "Electricity price", between(0.0, 1e3));
    return s;
  }();
  return schema;
}

std::string list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}
std::string num(int64_t v) { return std::to_string(v); }

void check_positive_list(const std::vector<int64_t>& v, const std::string& file, const std::string& key) {
  if (v.empty()) throw ConfigError(file, key, "[]", "a non-empty list of positive integers");
  for (int64_t x : v)
    if (x <= 0) throw ConfigError(file, key, list_text(v), "a list of positive integers");
}

// Keys that a topology kind has no use for must not be set: a typo'd kind would otherwise
// silently drop half the file.
void forbid(bool is_set, const std::string& file, const std::string& key, const std::string& value,
            const std::string& kind) {
  if (is_set) throw ConfigError(file, key, value, "nothing: a " + kind + " has no use for it");
}

LinkSpec link_spec(LinkKind kind, const std::optional<double>& bw, double lat, double idle, double busy,
                   const std::string& file, const std::string& key) {
  if (!bw)
    throw ConfigError(file, key, "(missing)", std::string("a positive number: the ") + link_kind_name(kind) +
                                                  " bandwidth per direction in B/s");
  return LinkSpec{kind, *bw, lat, idle, busy};
}

FabricBuild build_torus_file(const ClusterFile& f, const std::string& file) {
  if (f.dims.empty())
    throw ConfigError(file, "topology.dims", "(missing)", "a list of positive integers, the torus shape");
  int64_t chips = 1;
  for (int64_t d : f.dims) {
    // Each factor is checked before it multiplies: 16 x 2^62 would wrap to 0.
    if (d > kMaxChips || chips * d > kMaxChips)
      throw ConfigError(file, "topology.dims", list_text(f.dims), "at most " + num(kMaxChips) + " chips in all");
    chips *= d;
    if (chips > kMaxChips)
      throw ConfigError(file, "topology.dims", list_text(f.dims), "at most " + num(kMaxChips) + " chips in all");
  }
  if (f.chips && *f.chips != chips)
    throw ConfigError(file, "topology.chips", num(*f.chips), "the product of topology.dims, " + num(chips));
  forbid(f.chips_per_node != 1, file, "topology.chips_per_node", num(f.chips_per_node), "torus");
  forbid(!f.down_ports.empty(), file, "fat_tree.down_ports", list_text(f.down_ports), "torus");
  forbid(f.nvlink_bw.has_value(), file, "links.nvlink.bandwidth_Bps", "(set)", "torus");
  forbid(f.ib_bw.has_value(), file, "links.infiniband.bandwidth_Bps", "(set)", "torus");
  forbid(f.nvswitch_nvls, file, "switches.nvswitch.nvls", "true", "torus");
  std::vector<int> dims(f.dims.begin(), f.dims.end());
  return build_torus(dims, link_spec(LinkKind::kIci, f.ici_bw, f.ici_latency_s, f.ici_idle_W, f.ici_busy_W, file,
                                     "links.ici.bandwidth_Bps"));
}

SwitchedShape fat_tree_shape(const ClusterFile& f, const std::string& file) {
  if (!f.chips) throw ConfigError(file, "topology.chips", "(missing)", "a positive integer, the number of GPUs");
  forbid(!f.dims.empty(), file, "topology.dims", list_text(f.dims), "fat-tree");
  forbid(f.ici_bw.has_value(), file, "links.ici.bandwidth_Bps", "(set)", "fat-tree");
  const int64_t chips = *f.chips, cpn = f.chips_per_node;
  if (chips > kMaxChips) throw ConfigError(file, "topology.chips", num(chips), "at most " + num(kMaxChips));
  if (chips % cpn != 0)
    throw ConfigError(file, "topology.chips_per_node", num(cpn), "a divisor of topology.chips = " + num(chips));
  const auto& m = f.down_ports;
  if (m.empty())
    throw ConfigError(file, "fat_tree.down_ports", "(missing)",
                      "a list of switch arities, leaf first, whose product is topology.chips = " + num(chips));
  double product = 1;
  for (int64_t x : m) product *= static_cast<double>(x);
  if (product != static_cast<double>(chips))
    throw ConfigError(file, "fat_tree.down_ports", list_text(m),
                      "switch arities whose product is topology.chips = " + num(chips) + " (these give " +
                          (product < 9e18 ? num(static_cast<int64_t>(product)) : std::string("more than 9e18")) + ")");
  const int64_t nodes = chips / cpn;
  if (f.rail_optimised && cpn > 1 && nodes % m[0] != 0)
    throw ConfigError(file, "fat_tree.down_ports", list_text(m),
                      "a leaf arity dividing the " + num(nodes) +
                          " nodes (rail-optimised: a leaf serves one GPU of each of m1 nodes)");
  std::vector<int64_t> w = f.up_ports;
  if (w.empty())
    for (size_t i = 0; i + 1 < m.size(); ++i) w.push_back(m[i]);  // non-blocking
  if (w.size() + 1 != m.size())
    throw ConfigError(file, "fat_tree.up_ports", list_text(f.up_ports),
                      num(static_cast<int64_t>(m.size()) - 1) + " entries, one per level above the leaves");
  // Every switch must have the ports its children and parents need.
  double elements = static_cast<double>(chips);
  double switches = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    // Saturating: up_ports near 2^63 would wrap the sum below the port count.
    int64_t ports = 0;
    if (__builtin_add_overflow(m[i], i + 1 < m.size() ? w[i] : 0, &ports)) ports = INT64_MAX;
    if (ports > f.ib_ports) {
      // Name the list the user set that makes the level too wide: the up ports when they are the excess.
      const bool ups = i + 1 < m.size() && !f.up_ports.empty() && m[i] <= f.ib_ports;
      throw ConfigError(file, ups ? "fat_tree.up_ports" : "fat_tree.down_ports", list_text(ups ? w : m),
                        "level-" + num(static_cast<int64_t>(i) + 1) + " switches of at most " + num(f.ib_ports) +
                            " ports (switches.infiniband.ports); they need " + num(ports) + " (down " + num(m[i]) +
                            " + up " + num(i + 1 < m.size() ? w[i] : 0) + ")");
    }
    elements = elements / static_cast<double>(m[i]) * (i == 0 ? 1.0 : static_cast<double>(w[i - 1]));
    switches += elements;
  }
  if (switches > kMaxSwitches)
    throw ConfigError(file, "fat_tree.up_ports", list_text(w), "a tree of at most " + num(kMaxSwitches) + " switches");
  SwitchedShape s;
  s.chips = static_cast<int>(chips);
  s.chips_per_node = static_cast<int>(cpn);
  s.down.assign(m.begin(), m.end());
  s.up.assign(w.begin(), w.end());
  s.rail_optimised = f.rail_optimised;
  return s;
}

SwitchedShape single_node_shape(const ClusterFile& f, const std::string& file) {
  if (!f.chips) throw ConfigError(file, "topology.chips", "(missing)", "a positive integer, the GPUs in the node");
  forbid(!f.dims.empty(), file, "topology.dims", list_text(f.dims), "single node");
  forbid(!f.down_ports.empty(), file, "fat_tree.down_ports", list_text(f.down_ports), "single node");
  forbid(f.ici_bw.has_value(), file, "links.ici.bandwidth_Bps", "(set)", "single node");
  forbid(f.ib_bw.has_value(), file, "links.infiniband.bandwidth_Bps", "(set)", "single node");
  if (*f.chips > 1024) throw ConfigError(file, "topology.chips", num(*f.chips), "at most 1024 GPUs in one node");
  if (f.chips_per_node != 1 && f.chips_per_node != *f.chips)
    throw ConfigError(file, "topology.chips_per_node", num(f.chips_per_node),
                      "topology.chips = " + num(*f.chips) + " (one node), or leave it out");
  SwitchedShape s;
  s.chips = static_cast<int>(*f.chips);
  s.chips_per_node = s.chips;
  return s;
}

ChipSpec resolve_chip(const ClusterFile& f, const std::string& file) {
  ChipSpec c = load_chip_kind(f.chip_kind, file, "chip.kind");
  auto take = [](double& into, const std::optional<double>& v) {
    if (v) into = *v;
  };
  take(c.peak_flops_bf16, f.peak_flops_bf16);
  take(c.peak_flops_fp32, f.peak_flops_fp32);
  take(c.hbm_bytes, f.hbm_bytes);
  take(c.hbm_bandwidth_Bps, f.hbm_bandwidth_Bps);
  take(c.runtime_reserved_bytes, f.runtime_reserved_bytes);
  take(c.all_to_all_peer_bytes, f.all_to_all_peer_bytes);
  take(c.idle_W, f.idle_W);
  take(c.busy_W, f.busy_W);
  take(c.host_W_per_chip, f.host_W_per_chip);
  if (c.busy_W < c.idle_W)
    throw ConfigError(file, "chip.busy_W", nlohmann::json(c.busy_W).dump(),
                      "at least chip.idle_W = " + nlohmann::json(c.idle_W).dump());
  check_runtime_reserve(c.runtime_reserved_bytes, c.hbm_bytes, file, "chip.", !f.runtime_reserved_bytes);
  return c;
}

Cluster assemble(const ClusterFile& f, const std::string& file) {
  Cluster::Parts p;
  p.id = f.id;
  p.chip = resolve_chip(f, file);
  FabricBuild build;
  nlohmann::json resolved = cluster_schema().dump(f);
  if (f.topology_kind == "torus") {
    p.kind = TopologyKind::kTorus;
    build = build_torus_file(f, file);
    p.torus_dims.assign(f.dims.begin(), f.dims.end());
    p.chips_per_node = 1;
  } else {
    const bool single = f.topology_kind == "single-node";
    p.kind = single ? TopologyKind::kSingleNode : TopologyKind::kFatTree;
    SwitchedShape shape = single ? single_node_shape(f, file) : fat_tree_shape(f, file);
    SwitchedLinks links;
    if (shape.chips_per_node > 1)
      links.nvlink = link_spec(LinkKind::kNvlink, f.nvlink_bw, f.nvlink_latency_s, f.nvlink_idle_W, f.nvlink_busy_W,
                               file, "links.nvlink.bandwidth_Bps");
    if (!shape.down.empty())
      links.infiniband = link_spec(LinkKind::kInfiniband, f.ib_bw, f.ib_latency_s, f.ib_idle_W, f.ib_busy_W, file,
                                   "links.infiniband.bandwidth_Bps");
    links.nvswitch_latency_s = f.nvswitch_latency_s;
    links.ib_switch_latency_s = f.ib_switch_latency_s;
    build = build_switched_fabric(shape, links);
    p.chips_per_node = shape.chips_per_node;
    if (f.nvswitch_nvls && shape.chips_per_node < 2)
      throw ConfigError(file, "switches.nvswitch.nvls", "true",
                        "false: nodes of one GPU (topology.chips_per_node = 1) have no NVSwitch");
    p.nvswitch_nvls = f.nvswitch_nvls;
    const int nodes = shape.chips / shape.chips_per_node;
    p.powered_fabric_switches = shape.down.empty() ? 0 : fat_tree_physical_switches(shape, f.ib_ports);
    p.switch_W = static_cast<double>(p.powered_fabric_switches) * f.ib_switch_W + (shape.chips_per_node > 1 ? nodes * f.nvswitch_W : 0.0);
    resolved["topology"]["chips_per_node"] = shape.chips_per_node;
    resolved["fat_tree"]["up_ports"] = shape.up;
  }
  p.num_chips = static_cast<int>(std::count(build.vertices.begin(), build.vertices.end(), VertexKind::kChip));
  p.vertices = std::move(build.vertices);
  p.links = std::move(build.links);
  p.fabric = std::move(build.fabric);
  p.out_links.assign(p.vertices.size(), {});
  for (const Link& l : p.links) p.out_links[l.from].push_back(l.id);
  p.graph = build_topology_graph(p.vertices, p.links);
  p.pue = f.pue;
  p.carbon_kg_per_kWh = f.carbon_kg_per_kWh;
  p.price_per_kWh = f.price_per_kWh;
  resolved["chip"] = {{"kind", p.chip.kind},
                      {"peak_flops_bf16", p.chip.peak_flops_bf16},
                      {"peak_flops_fp32", p.chip.peak_flops_fp32},
                      {"hbm_bytes", p.chip.hbm_bytes},
                      {"hbm_bandwidth_Bps", p.chip.hbm_bandwidth_Bps},
                      {"runtime_reserved_bytes", p.chip.runtime_reserved_bytes},
                      {"all_to_all_peer_bytes", p.chip.all_to_all_peer_bytes},
                      {"idle_W", p.chip.idle_W},
                      {"busy_W", p.chip.busy_W},
                      {"host_W_per_chip", p.chip.host_W_per_chip}};
  resolved["derived"] = {{"chips", p.num_chips},
                         {"vertices", p.vertices.size()},
                         {"switches", p.vertices.size() - p.num_chips},
                         {"powered_fabric_switches", p.powered_fabric_switches},
                         {"links", p.links.size()},
                         {"switch_W", p.switch_W}};
  p.resolved = std::move(resolved);
  return Cluster(std::move(p));
}

Cluster parse_table(const toml::table& table, const std::string& file) {
  ClusterFile f = cluster_schema().parse(table, file);
  // A list the file sets must be non-empty and positive; an absent one stays empty.
  if (table.at_path("topology.dims")) check_positive_list(f.dims, file, "topology.dims");
  if (table.at_path("fat_tree.down_ports")) check_positive_list(f.down_ports, file, "fat_tree.down_ports");
  if (table.at_path("fat_tree.up_ports")) check_positive_list(f.up_ports, file, "fat_tree.up_ports");
  return assemble(f, file);
}

}  // namespace

Cluster load_cluster(const std::string& id_or_path) {
  auto path = resolve_catalogue_entry("topologies", id_or_path);
  return parse_table(load_toml_file(path), path.string());
}

Cluster parse_cluster(const std::string& toml_text, const std::string& file_name) {
  toml::table table;
  try {
    table = toml::parse(toml_text, file_name);
  } catch (const toml::parse_error& e) {
    throw ConfigError(file_name, "not valid TOML (line " + std::to_string(e.source().begin.line) +
                                     "): " + std::string(e.description()));
  }
  return parse_table(table, file_name);
}

std::string describe_cluster_fields() { return cluster_schema().describe(); }

}  // namespace glam
