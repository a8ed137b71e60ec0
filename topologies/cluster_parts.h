#pragma once
// The contents of a Cluster, filled in by the loader (cluster_config.cpp). Internal to topologies/.
#include <memory>

#include "cluster.h"
#include "fabric.h"
#include "graph.h"

namespace glam {

struct Cluster::Parts {
  std::string id;
  TopologyKind kind = TopologyKind::kTorus;
  ChipSpec chip;
  int num_chips = 0;
  std::vector<VertexKind> vertices;
  std::vector<Link> links;
  std::vector<std::vector<int>> out_links;
  std::shared_ptr<const Fabric> fabric;
  std::vector<int> torus_dims;
  int chips_per_node = 1;
  bool nvswitch_nvls = false;
  double pue = 1, carbon_kg_per_kWh = 0, switch_W = 0;
  int64_t powered_fabric_switches = 0;  // the physical fat-tree switches switch_W counts (ports in use)
  std::optional<double> price_per_kWh;
  nlohmann::json resolved;
  std::shared_ptr<const TopologyGraph> graph;
};

}  // namespace glam
