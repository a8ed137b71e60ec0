#include "graph.h"

#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/visitors.hpp>

namespace glam {

std::shared_ptr<const TopologyGraph> build_topology_graph(const std::vector<VertexKind>& vertices,
                                                          const std::vector<Link>& links) {
  auto graph = std::make_shared<TopologyGraph>();
  graph->g = BoostTopology(vertices.size());
  for (size_t v = 0; v < vertices.size(); ++v) graph->g[v].kind = vertices[v];
  for (const Link& l : links) boost::add_edge(l.from, l.to, EdgeProperties{l.id, l.bandwidth_Bps}, graph->g);
  return graph;
}

std::vector<int> hop_distances(const TopologyGraph& graph, int source) {
  std::vector<int> dist(boost::num_vertices(graph.g), -1);
  dist[source] = 0;
  boost::breadth_first_search(
      graph.g, boost::vertex(source, graph.g),
      boost::visitor(boost::make_bfs_visitor(boost::record_distances(dist.data(), boost::on_tree_edge()))));
  return dist;
}

}  // namespace glam
