#pragma once
// The cluster as a Boost.Graph graph: one vertex per chip or switch, one edge per directed link,
// carrying the link id and its capacity (bandwidth in one direction).
#include <memory>
#include <vector>

#include <boost/graph/adjacency_list.hpp>

#include "cluster.h"

namespace glam {

struct VertexProperties {
  VertexKind kind = VertexKind::kChip;
};
struct EdgeProperties {
  int link = 0;
  double bandwidth_Bps = 0;
};
using BoostTopology =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS, VertexProperties, EdgeProperties>;

struct TopologyGraph {
  BoostTopology g;
};

std::shared_ptr<const TopologyGraph> build_topology_graph(const std::vector<VertexKind>& vertices,
                                                          const std::vector<Link>& links);

// Hop distances from `source` to every vertex (breadth-first search); -1 where unreachable.
std::vector<int> hop_distances(const TopologyGraph& graph, int source);

}  // namespace glam
