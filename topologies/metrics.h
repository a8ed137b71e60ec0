#pragma once
// Figures of merit of a cluster, computed on its graph.
#include <nlohmann/json.hpp>

#include "cluster.h"

namespace glam {

struct ClusterMetrics {
  int chips = 0, links = 0, switches = 0;
  int diameter_hops = 0;                // longest shortest path between two chips
  double bisection_bandwidth_Bps = 0;   // one direction, see bisection_halves()
  double injection_bandwidth_Bps = 0;   // sum of one chip's outgoing link bandwidths (least over chips)
  double peak_flops = 0;                // bf16, all chips
  double hbm_bytes = 0;                 // all chips
};

ClusterMetrics compute_metrics(const Cluster& cluster);

// The cut the bisection bandwidth is measured across: true for chips on side A. Torus: coordinate
// below half along the largest dimension (the last one, when several are largest). Otherwise: the
// first half of the chips by id, which puts whole nodes on each side when the node count is even.
std::vector<bool> bisection_halves(const Cluster& cluster);

// Maximum flow from side A to side B through the directed link capacities (push-relabel). With
// every vertex assigned a side it equals the sum of the A->B link bandwidths; with switches free
// to sit on either side it is the fabric's true capacity across that split of the chips.
double max_flow_Bps(const Cluster& cluster, const std::vector<bool>& side_a);

// Shortest-path diameter in hops over chip pairs, by breadth-first search: from chip 0 alone on a
// torus (every chip sees the same torus), from every chip otherwise.
int diameter_hops(const Cluster& cluster);

nlohmann::json metrics_json(const Cluster& cluster, const ClusterMetrics& m);

}  // namespace glam
