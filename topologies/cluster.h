#pragma once
// A cluster: its chips, the directed links and switches that join them, and the routes between
// chips. Built from a TOML file (topologies/<id>.toml or a user's path) by load_cluster().
//
// Vertices: chips are 0..num_chips()-1; switches follow (NVSwitch nodes, then fat-tree switches
// level by level). Links are directed: a full-duplex cable is two links.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace glam {

struct ChipSpec {
  std::string kind;
  double peak_flops_bf16 = 0, peak_flops_fp32 = 0;
  double hbm_bytes = 0, hbm_bandwidth_Bps = 0;
  double idle_W = 0, busy_W = 0;  // chip power when idle / fully busy (TDP-like)
  double host_W_per_chip = 0;     // share of host/CPU/NIC/fans per chip
  // HBM the software stack holds before a step allocates (CUDA context, cuBLAS workspaces, NCCL buffers,
  // allocator slack): a step's footprint must fit in hbm_bytes less this.
  double runtime_reserved_bytes = 0;
  // HBM NCCL's point-to-point channels take for each peer in the same node once an all-to-all has run
  // (it connects them then, beyond runtime_reserved_bytes): counted in a plan with expert parallelism.
  double all_to_all_peer_bytes = 0;
};

enum class LinkKind { kIci, kNvlink, kInfiniband, kPcie };
const char* link_kind_name(LinkKind kind);

struct Link {
  int id = 0;
  int from = 0, to = 0;  // vertex ids
  LinkKind kind = LinkKind::kIci;
  double bandwidth_Bps = 0;  // one direction
  double latency_s = 0;      // the wire plus the forwarding latency of the switch at `to`, if any
  double idle_W = 0, busy_W = 0;
};

enum class TopologyKind { kTorus, kFatTree /* NVSwitch nodes + IB fat-tree */, kSingleNode };
const char* topology_kind_name(TopologyKind kind);

enum class VertexKind { kChip, kNodeSwitch, kFabricSwitch };

class Fabric;          // how routes are computed (fabric.h)
struct TopologyGraph;  // the Boost.Graph view (graph.h), kept out of this header for compile time

class Cluster {
 public:
  struct Parts;  // everything a builder fills in (cluster_builder.h)
  explicit Cluster(Parts parts);

  const std::string& id() const;
  TopologyKind kind() const;
  const ChipSpec& chip() const;

  int num_chips() const;
  int num_vertices() const;
  int num_switches() const { return num_vertices() - num_chips(); }
  VertexKind vertex_kind(int vertex) const;
  const std::vector<Link>& links() const;
  // Links leaving each vertex (ids), for graph walks that should not need Boost.
  const std::vector<int>& out_links(int vertex) const;

  // Ordered directed link ids from src to dst; empty when src == dst. Computed arithmetically:
  // no table, no search, so it is cheap to call millions of times.
  std::vector<int> route(int src_chip, int dst_chip) const;
  void append_route(int src_chip, int dst_chip, std::vector<int>& out) const;
  int route_hops(int src_chip, int dst_chip) const;
  double route_latency_s(int src_chip, int dst_chip) const;

  const std::vector<int>& torus_dims() const;  // empty unless torus; chip = x + dx*(y + dy*z) ...
  std::vector<int> torus_coords(int chip) const;
  int chips_per_node() const;  // 8 for DGX, 1 for TPU
  int node_of(int chip) const { return chip / chips_per_node(); }
  // Whether each node's NVSwitches reduce and multicast (NVLink SHARP), so NCCL can run an all-reduce
  // inside a node as NVLS.
  bool nvswitch_reduces() const;

  double pue() const;
  double carbon_kg_per_kWh() const;
  std::optional<double> price_per_kWh() const;
  double switch_W() const;  // total switch power of the cluster
  // Physical InfiniBand switches that power is drawn for: the fat-tree's ports in use, level by level,
  // on switches of its port count (fewer than its switch vertices on a small tree).
  int64_t powered_fabric_switches() const;

  const nlohmann::json& resolved_config() const;  // every resolved field, for config.json dumps
  const TopologyGraph& graph() const;              // chips, switches, directed link capacities

 private:
  std::shared_ptr<const Parts> p_;
};

// Loads a cluster by catalogue id or file path; throws ConfigError / UsageError.
Cluster load_cluster(const std::string& id_or_path);
Cluster parse_cluster(const std::string& toml_text, const std::string& file_name);

// One line per cluster-file field: key, type, unit, default, description.
std::string describe_cluster_fields();

}  // namespace glam
