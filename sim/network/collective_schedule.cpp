#include "network/collective_schedule.h"

#include <algorithm>
#include <array>
#include <map>

namespace glam {
namespace {

enum class Half { kBoth, kReduceScatter, kAllGather };

Half half_of(CollectiveKind kind) {
  if (kind == CollectiveKind::kReduceScatter) return Half::kReduceScatter;
  if (kind == CollectiveKind::kAllGather) return Half::kAllGather;
  return Half::kBoth;
}

// A ring step, in every ring at once. Rings run in both directions, each carrying half of the
// buffer, as TPU and NCCL collectives do: on a torus that uses both directions of every link.
CommPhase ring_step(const std::vector<std::vector<int>>& rings, double share, int repeat) {
  CommPhase ph;
  ph.repeat = repeat;
  for (const auto& r : rings) {
    const size_t n = r.size();
    for (size_t k = 0; k < n; ++k) {
      if (n == 2) {  // one neighbour: the whole share goes both ways at once
        ph.flows.push_back({r[k], r[(k + 1) % n], share});
        continue;
      }
      ph.flows.push_back({r[k], r[(k + 1) % n], share / 2});
      ph.flows.push_back({r[k], r[(k + n - 1) % n], share / 2});
    }
  }
  return ph;
}

// Ring reduce-scatter and/or all-gather over rings of equal size n, on a buffer of which a
// fraction `scale` takes part: each of the n-1 steps moves scale/n.
void add_ring(CollectiveSchedule& s, const std::vector<std::vector<int>>& rings, double scale, Half half) {
  const int n = static_cast<int>(rings.front().size());
  if (n < 2) return;
  CommPhase step = ring_step(rings, scale / n, n - 1);
  if (half != Half::kAllGather) s.phases.push_back(step);
  if (half != Half::kReduceScatter) s.phases.push_back(step);
}

// On a torus the chips' DMA engines send to every peer at once (one route latency). On switched
// fabrics NCCL sends to its peers over its point-to-point channels a few at a time, each round paying
// the route latency: kPeersAtOnce is not published, a parameter (8 gives the published 10 us of an
// 8-GPU all-to-all, and about 170 us for 7 MB over 64 GPUs, DeepEP's figure, with the base latency).
constexpr int kPeersAtOnce = 8;

void all_to_all(CollectiveSchedule& s, const Cluster& c, const std::vector<std::vector<int>>& groups,
                const std::vector<double>& share, bool transposed) {
  s.algorithm = "direct";
  CommPhase ph;
  if (c.kind() != TopologyKind::kTorus)
    ph.rounds = (static_cast<int>(groups.front().size()) - 1 + kPeersAtOnce - 1) / kPeersAtOnce;
  for (const auto& g : groups) {
    const size_t n = g.size();
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) {
        if (i == j) continue;
        double f = share.size() == n ? share[transposed ? i : j] : 1.0 / static_cast<double>(n);
        if (f > 0) ph.flows.push_back({g[i], g[j], f});
      }
  }
  s.phases.push_back(std::move(ph));
}

// Pipeline sends: every stage but the end one sends its whole buffer to its neighbour in the group
// (the next stage, or the previous one when transposed; round a ring when it wraps), all at once.
void send_to_neighbours(CollectiveSchedule& s, const std::vector<std::vector<int>>& groups, bool transposed,
                        bool wraps) {
  s.algorithm = "direct";
  CommPhase ph;
  for (const auto& g : groups)
    for (size_t k = 0; k + (wraps ? 0 : 1) < g.size(); ++k) {
      const int a = g[k], b = g[(k + 1) % g.size()];
      if (a != b) ph.flows.push_back(transposed ? Flow{b, a, 1.0} : Flow{a, b, 1.0});
    }
  s.phases.push_back(std::move(ph));
}

// Dimension-by-dimension on a torus: reduce-scatter along each dimension the group spans, then
// all-gather back in reverse order. Returns false when the group is not a block of the torus.
bool torus_dimension_order(CollectiveSchedule& s, const Cluster& c, const std::vector<std::vector<int>>& groups,
                           Half half) {
  const size_t dims = c.torus_dims().size();
  // Extents of the first group; all groups of an axis have the same shape under RankMap.
  std::vector<std::map<int, int>> values(dims);
  for (int chip : groups.front()) {
    auto xyz = c.torus_coords(chip);
    for (size_t d = 0; d < dims; ++d) values[d][xyz[d]]++;
  }
  size_t product = 1;
  std::vector<size_t> spanned;
  for (size_t d = 0; d < dims; ++d) {
    product *= values[d].size();
    if (values[d].size() > 1) spanned.push_back(d);
  }
  if (product != groups.front().size() || spanned.size() < 2) return false;
  s.algorithm = "torus_dimension_order";
  // Rings along each spanned dimension: members that agree on every other coordinate.
  std::vector<std::vector<std::vector<int>>> rings_of_dim;
  for (size_t d : spanned) {
    std::map<std::vector<int>, std::vector<std::pair<int, int>>> lines;
    for (size_t gi = 0; gi < groups.size(); ++gi)
      for (int chip : groups[gi]) {
        auto xyz = c.torus_coords(chip);
        int along = xyz[d];
        xyz[d] = -1;
        xyz.push_back(static_cast<int>(gi));
        lines[xyz].push_back({along, chip});
      }
    rings_of_dim.emplace_back();
    for (auto& [key, members] : lines) {
      std::sort(members.begin(), members.end());
      // In coordinate order a line that does not go round the dimension closes its ring over the whole
      // line. Folded (every other member out, the rest back), each neighbour is at most two gaps
      // away, over the same links: the ring's latency no longer grows with the line's length.
      const auto at = [&members](int k) { return members[static_cast<size_t>(k)]; };  // (coordinate, chip)
      const int n = static_cast<int>(members.size()), size = c.torus_dims()[d];
      int gap = 0;
      for (int k = 1; k < n; ++k) gap = std::max(gap, at(k).first - at(k - 1).first);
      const int span = at(n - 1).first - at(0).first;
      const bool fold = std::min(span, size - span) > 2 * gap;
      auto& ring = rings_of_dim.back().emplace_back();
      for (int k = 0; k < n; k += fold ? 2 : 1) ring.push_back(at(k).second);
      if (fold)
        for (int k = n % 2 == 0 ? n - 1 : n - 2; k > 0; k -= 2) ring.push_back(at(k).second);
    }
  }
  // The buffer is split into one part per spanned dimension; part p visits the dimensions in
  // the order p, p+1, ..., so in every round each dimension's links carry one part and all the
  // chip's links are busy at once. A round lasts as long as its largest ring needs.
  const size_t D = spanned.size();
  std::vector<CommPhase> rs;
  std::vector<double> part_scale(D, 1.0 / static_cast<double>(D));
  for (size_t round = 0; round < D; ++round) {
    CommPhase ph;
    int steps = 0;
    for (size_t p = 0; p < D; ++p) steps = std::max(steps, static_cast<int>(rings_of_dim[(p + round) % D].front().size()) - 1);
    ph.repeat = steps;
    for (size_t p = 0; p < D; ++p) {
      const auto& rings = rings_of_dim[(p + round) % D];
      const double n = static_cast<double>(rings.front().size());
      // (n - 1) ring steps of part/n each, spread over the round's `steps` steps.
      CommPhase part = ring_step(rings, part_scale[p] / n * (n - 1) / steps, steps);
      ph.flows.insert(ph.flows.end(), part.flows.begin(), part.flows.end());
      part_scale[p] /= n;
    }
    rs.push_back(std::move(ph));
  }
  if (half != Half::kAllGather) s.phases.insert(s.phases.end(), rs.begin(), rs.end());
  if (half != Half::kReduceScatter) s.phases.insert(s.phases.end(), rs.rbegin(), rs.rend());
  return true;
}

// A GPU cluster's groups split by node: each group's members in one node (`local`, one list per
// node and group) and its members with the same index in their node across the nodes (`cross`, one
// list per index and group). False unless every group spans at least two nodes with the same number
// of members in each.
bool split_by_node(const Cluster& c, const std::vector<std::vector<int>>& groups, std::vector<std::vector<int>>& local,
                   std::vector<std::vector<int>>& cross) {
  const int per_node = c.chips_per_node();
  if (per_node < 1) return false;
  for (const auto& g : groups) {
    std::map<int, std::vector<int>> by_node;
    for (int chip : g) by_node[chip / per_node].push_back(chip);
    if (by_node.size() < 2) return false;
    const size_t g_local = by_node.begin()->second.size();
    for (auto& [node, members] : by_node) {
      if (members.size() != g_local) return false;
      local.push_back(members);
    }
    for (size_t k = 0; k < g_local; ++k) {
      cross.emplace_back();
      for (auto& [node, members] : by_node) cross.back().push_back(members[k]);
    }
  }
  return true;
}

// NCCL's rings across the nodes of a GPU cluster: per channel one ring through every member of the
// group, node after node, the g channels (g members per node) each carrying 1/g of the buffer. Channel
// c enters each node at its member c and leaves from the member before, so the channels spread the
// node crossings over every member's NIC, as NCCL builds its rings on rail-optimised systems; inside a
// node the hops are NVLink. Every byte of a ring's n - 1 steps crosses a NIC of each node once per
// channel, so the node's NICs bound the bus bandwidth whatever the node count. NCCL streams a ring's
// chunks hop to hop: a step costs the ring's mean hop latency (the NVLink hops' and the network's in
// their proportion), not its slowest.
bool rings_across_nodes(CollectiveSchedule& s, const Cluster& c, const std::vector<std::vector<int>>& groups,
                        Half half) {
  std::vector<std::vector<int>> local, cross;
  if (!split_by_node(c, groups, local, cross)) return false;
  const size_t g = local.front().size(), nodes = local.size() / groups.size();
  std::vector<std::vector<int>> rings;
  for (size_t gi = 0; gi < groups.size(); ++gi)
    for (size_t channel = 0; channel < g; ++channel) {
      auto& ring = rings.emplace_back();
      for (size_t node = 0; node < nodes; ++node)
        for (size_t k = 0; k < g; ++k) ring.push_back(local[gi * nodes + node][(channel + k) % g]);
    }
  s.algorithm = "ring";
  add_ring(s, rings, 1.0 / static_cast<double>(g), half);
  for (auto& ph : s.phases) ph.mean_hop_latency = true;
  return true;
}

// Parent of position p (1-based) in the in-order binary tree over positions 1..n: p's level is its
// lowest set bit b, its parent p + b or p - b one level up, climbing past positions beyond n. 0 at
// the root (the highest power of two not above n).
int in_order_parent(int p, int n) {
  for (int b = p & -p;;) {
    p = (p / (2 * b)) % 2 == 0 ? p + b : p - b;
    b *= 2;
    if (b > n) return 0;
    if (p <= n) return p;
  }
}

// Double binary trees over n members (Sanders, Speck and Traeff 2009, as NCCL 2.4 runs its tree
// all-reduce): each tree carries half of the buffer, and tree 1 (tree 0 mirrored for even n, shifted
// by one for odd n) has tree 0's leaves inside, so no member is inside both. Every member then
// sends and receives at most one buffer per pass, and a pass takes about log2(n) steps, where a
// ring takes n - 1. Returns, per tree, each member's parent (-1 at the root).
std::array<std::vector<int>, 2> double_binary_trees(int n) {
  std::array<std::vector<int>, 2> parents;
  for (int t = 0; t < 2; ++t) {
    auto position = [&](int member) { return t == 0 ? member + 1 : n % 2 == 0 ? n - member : (member + 1) % n + 1; };
    std::vector<int> member_at(static_cast<size_t>(n) + 1);
    for (int m = 0; m < n; ++m) member_at[static_cast<size_t>(position(m))] = m;
    parents[static_cast<size_t>(t)].assign(static_cast<size_t>(n), -1);
    for (int m = 0; m < n; ++m)
      if (int p = in_order_parent(position(m), n); p > 0)
        parents[static_cast<size_t>(t)][static_cast<size_t>(m)] = member_at[static_cast<size_t>(p)];
  }
  return parents;
}

int depth_in(const std::vector<int>& parent, int member) {
  int depth = 0;
  for (; parent[static_cast<size_t>(member)] >= 0; member = parent[static_cast<size_t>(member)]) ++depth;
  return depth;
}

// All-reduce by double binary trees across nodes, after a reduce-scatter inside each node and before
// the all-gather back, as NCCL's NVLS tree runs on NVSwitch nodes: the trees run over the members
// with the same index in their node, each on 1/(members per node) of the buffer. The up pass
// (reduce, leaves first) and the down pass (broadcast) are a phase per tree level, all pipelined.
// Over N nodes each node's NICs send and receive about 2(N-1)/N of its part per direction, where a
// ring through n GPUs sends 2(n-1)/n: on two nodes the trees go beyond the ring's network bound, as
// NCCL's do. NCCL's cost model rates
// its tree's bandwidth at 92% of what the links give (tuning.cc), which `bandwidth_factor` carries.
// False for groups inside one node.
bool tree_all_reduce(CollectiveSchedule& s, const Cluster& c, const std::vector<std::vector<int>>& groups) {
  std::vector<std::vector<int>> local, cross;
  if (!split_by_node(c, groups, local, cross)) return false;
  s.algorithm = kTreeAlgorithm;
  s.pipelined = true;
  s.efficiency_at_buffer = true;
  s.bandwidth_factor = 0.92;
  const size_t g_local = local.front().size();
  if (g_local > 1) add_ring(s, local, 1.0, Half::kReduceScatter);
  const int n = static_cast<int>(cross.front().size());
  const auto parents = double_binary_trees(n);
  int levels = 0;
  std::vector<std::array<int, 2>> depth(static_cast<size_t>(n));  // each member's, in each tree
  for (int m = 0; m < n; ++m)
    for (size_t t = 0; t < 2; ++t) {
      depth[static_cast<size_t>(m)][t] = depth_in(parents[t], m);
      levels = std::max(levels, depth[static_cast<size_t>(m)][t]);
    }
  const double share = 0.5 / static_cast<double>(g_local);  // each tree's half of a member's part
  std::vector<CommPhase> up(static_cast<size_t>(levels));   // up[l]: children at depth l + 1 to their parents
  for (const auto& members : cross)
    for (int m = 0; m < n; ++m)
      for (size_t t = 0; t < 2; ++t)
        if (const int parent = parents[t][static_cast<size_t>(m)]; parent >= 0)
          up[static_cast<size_t>(depth[static_cast<size_t>(m)][t] - 1)].flows.push_back(
              {members[static_cast<size_t>(m)], members[static_cast<size_t>(parent)], share});
  for (auto level = up.rbegin(); level != up.rend(); ++level) s.phases.push_back(*level);  // leaves first
  for (const auto& level : up) {                                                        // root first
    CommPhase down;
    for (const auto& f : level.flows) down.flows.push_back({f.dst, f.src, f.share});
    s.phases.push_back(std::move(down));
  }
  if (g_local > 1) add_ring(s, local, 1.0, Half::kAllGather);
  return true;
}

// NVLS all-reduce inside each node (NVLink SHARP): every GPU sends its buffer into the NVSwitch, which
// sums the GPUs' slices, and receives the sum, which the switch multicasts; one buffer crosses each
// GPU's NVLink per direction. As chip-to-chip flows that load the links alike: each member sends
// 1/(n-1) of the buffer to each of the n-1 others.
// Bandwidth: NCCL reaches an algbw of about 275 GB/s on 8 H100s (busbw 480; its maintainer in
// nccl-tests issue #212), 0.68 of the 405 GB/s that 450 GB/s links give at the default calibration's
// 90%. Latency: NCCL 2.2x on 8 H100s runs rings up to 1 MiB and NVLS from 2 MiB (nccl-tests issue
// #309); 10 us beyond a call's base latency puts the crossing there.
// False unless every group lies inside one node of a cluster whose NVSwitches reduce.
bool nvls_all_reduce(CollectiveSchedule& s, const Cluster& c, const std::vector<std::vector<int>>& groups) {
  if (!c.nvswitch_reduces()) return false;
  for (const auto& g : groups)
    for (int chip : g)
      if (c.node_of(chip) != c.node_of(g.front())) return false;
  s.algorithm = kNvlsAlgorithm;
  s.efficiency_at_buffer = true;
  s.bandwidth_factor = 275.0 / 405.0;
  s.fixed_latency_s = 10e-6;
  CommPhase phase;
  for (const auto& g : groups) {
    const double share = 1.0 / static_cast<double>(g.size() - 1);
    for (int src : g)
      for (int dst : g)
        if (src != dst) phase.flows.push_back({src, dst, share});
  }
  s.phases.push_back(std::move(phase));
  return true;
}

}  // namespace

CollectiveSchedule plan_collective(const Cluster& cluster, CollectiveKind kind,
                                   const std::vector<std::vector<int>>& groups,
                                   const std::vector<double>& a2a_dest_share, bool a2a_transposed, bool send_wraps) {
  CollectiveSchedule s;
  if (groups.empty() || groups.front().size() < 2) {
    s.algorithm = "none";
    return s;
  }
  if (kind == CollectiveKind::kAllToAll) {
    all_to_all(s, cluster, groups, a2a_dest_share, a2a_transposed);
    return s;
  }
  if (kind == CollectiveKind::kSendRecv) {
    send_to_neighbours(s, groups, a2a_transposed, send_wraps);
    return s;
  }
  Half half = half_of(kind);
  s.efficiency_at_buffer = true;  // every schedule below streams the buffer
  if (cluster.kind() == TopologyKind::kTorus && torus_dimension_order(s, cluster, groups, half)) return s;
  if (cluster.kind() == TopologyKind::kFatTree && rings_across_nodes(s, cluster, groups, half)) return s;
  s.algorithm = "ring";
  add_ring(s, groups, 1.0, half);
  return s;
}

std::vector<CollectiveSchedule> collective_candidates(const Cluster& cluster, CollectiveKind kind,
                                                      const std::vector<std::vector<int>>& groups,
                                                      const std::vector<double>& a2a_dest_share, bool a2a_transposed,
                                                      bool send_wraps) {
  std::vector<CollectiveSchedule> out = {
      plan_collective(cluster, kind, groups, a2a_dest_share, a2a_transposed, send_wraps)};
  if (kind != CollectiveKind::kAllReduce || groups.empty() || groups.front().size() < 2) return out;
  CollectiveSchedule tree, nvls;
  if (cluster.kind() == TopologyKind::kFatTree && tree_all_reduce(tree, cluster, groups)) out.push_back(std::move(tree));
  if (nvls_all_reduce(nvls, cluster, groups)) out.push_back(std::move(nvls));
  return out;
}

}  // namespace glam

