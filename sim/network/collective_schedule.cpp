#include "network/collective_schedule.h"

#include <algorithm>
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

void all_to_all(CollectiveSchedule& s, const std::vector<std::vector<int>>& groups, const std::vector<double>& share,
                bool transposed) {
  s.algorithm = "direct";
  CommPhase ph;
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
      rings_of_dim.back().emplace_back();
      for (auto& m : members) rings_of_dim.back().back().push_back(m.second);
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

// NVSwitch inside each node, then rings across nodes over the members with the same local index, the
// stages pipelined (NCCL streams a buffer's chunks through them, NVLink and InfiniBand busy at once).
bool hierarchical(CollectiveSchedule& s, const Cluster& c, const std::vector<std::vector<int>>& groups, Half half) {
  const int per_node = c.chips_per_node();
  if (per_node <= 1) return false;
  std::vector<std::vector<int>> local, cross;
  for (const auto& g : groups) {
    std::map<int, std::vector<int>> by_node;
    for (int chip : g) by_node[chip / per_node].push_back(chip);
    if (by_node.size() < 2) return false;
    const size_t g_local = by_node.begin()->second.size();
    if (g_local == 1) return false;  // one member per node: a plain ring over the nodes
    for (auto& [node, members] : by_node) {
      if (members.size() != g_local) return false;
      local.push_back(members);
    }
    for (size_t k = 0; k < g_local; ++k) {
      cross.emplace_back();
      for (auto& [node, members] : by_node) cross.back().push_back(members[k]);
    }
  }
  s.algorithm = "hierarchical";
  s.pipelined = true;
  const double g_local = static_cast<double>(local.front().size());
  if (half != Half::kAllGather) add_ring(s, local, 1.0, Half::kReduceScatter);
  add_ring(s, cross, 1.0 / g_local, half);
  if (half != Half::kReduceScatter) add_ring(s, local, 1.0, Half::kAllGather);
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
    all_to_all(s, groups, a2a_dest_share, a2a_transposed);
    return s;
  }
  if (kind == CollectiveKind::kSendRecv) {
    send_to_neighbours(s, groups, a2a_transposed, send_wraps);
    return s;
  }
  Half half = half_of(kind);
  if (cluster.kind() == TopologyKind::kTorus && torus_dimension_order(s, cluster, groups, half)) return s;
  if (cluster.kind() == TopologyKind::kFatTree && hierarchical(s, cluster, groups, half)) return s;
  s.algorithm = "ring";
  add_ring(s, groups, 1.0, half);
  return s;
}

}  // namespace glam
