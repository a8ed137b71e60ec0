#include "metrics.h"

#include <algorithm>
#include <limits>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/push_relabel_max_flow.hpp>

#include "graph.h"

namespace glam {

std::vector<bool> bisection_halves(const Cluster& c) {
  std::vector<bool> a(c.num_chips(), false);
  const auto& dims = c.torus_dims();
  if (!dims.empty()) {
    size_t big = 0;
    for (size_t i = 0; i < dims.size(); ++i)
      if (dims[i] >= dims[big]) big = i;
    for (int chip = 0; chip < c.num_chips(); ++chip) a[chip] = c.torus_coords(chip)[big] < dims[big] / 2;
  } else {
    for (int chip = 0; chip < c.num_chips() / 2; ++chip) a[chip] = true;
  }
  return a;
}

double max_flow_Bps(const Cluster& c, const std::vector<bool>& side_a) {
  using Traits = boost::adjacency_list_traits<boost::vecS, boost::vecS, boost::directedS>;
  using FlowGraph = boost::adjacency_list<
      boost::vecS, boost::vecS, boost::directedS, boost::no_property,
      boost::property<boost::edge_capacity_t, double,
                      boost::property<boost::edge_residual_capacity_t, double,
                                      boost::property<boost::edge_reverse_t, Traits::edge_descriptor>>>>;
  const int n = c.num_vertices(), source = n, sink = n + 1;
  FlowGraph g(n + 2);
  auto cap = boost::get(boost::edge_capacity, g);
  auto rev = boost::get(boost::edge_reverse, g);
  auto add = [&](int u, int v, double capacity) {
    auto e = boost::add_edge(u, v, g).first;
    auto r = boost::add_edge(v, u, g).first;
    cap[e] = capacity;
    cap[r] = 0;
    rev[e] = r;
    rev[r] = e;
  };
  double total = 0;
  for (const Link& l : c.links()) {
    add(l.from, l.to, l.bandwidth_Bps);
    total += l.bandwidth_Bps;
  }
  const double unlimited = 2 * total + 1;  // a chip's own capacity never limits the cut
  bool any_a = false, any_b = false;
  for (int chip = 0; chip < c.num_chips(); ++chip) {
    if (side_a[chip]) {
      add(source, chip, unlimited);
      any_a = true;
    } else {
      add(chip, sink, unlimited);
      any_b = true;
    }
  }
  if (!any_a || !any_b) return 0;
  return boost::push_relabel_max_flow(g, source, sink);
}

int diameter_hops(const Cluster& c) {
  const int sources = c.kind() == TopologyKind::kTorus ? 1 : c.num_chips();
  int diameter = 0;
  for (int s = 0; s < sources; ++s) {
    std::vector<int> dist = hop_distances(c.graph(), s);
    for (int chip = 0; chip < c.num_chips(); ++chip) diameter = std::max(diameter, dist[chip]);
  }
  return diameter;
}

ClusterMetrics compute_metrics(const Cluster& c) {
  ClusterMetrics m;
  m.chips = c.num_chips();
  m.links = static_cast<int>(c.links().size());
  m.switches = c.num_switches();
  m.diameter_hops = diameter_hops(c);
  m.bisection_bandwidth_Bps = max_flow_Bps(c, bisection_halves(c));
  double injection = std::numeric_limits<double>::infinity();
  for (int chip = 0; chip < c.num_chips(); ++chip) {
    double out = 0;
    for (int l : c.out_links(chip)) out += c.links()[l].bandwidth_Bps;
    injection = std::min(injection, out);
  }
  m.injection_bandwidth_Bps = c.num_chips() > 0 ? injection : 0;
  m.peak_flops = c.num_chips() * c.chip().peak_flops_bf16;
  m.hbm_bytes = c.num_chips() * c.chip().hbm_bytes;
  return m;
}

nlohmann::json metrics_json(const Cluster& c, const ClusterMetrics& m) {
  nlohmann::json j = {{"id", c.id()},
                      {"kind", topology_kind_name(c.kind())},
                      {"chip_kind", c.chip().kind},
                      {"chips", m.chips},
                      {"chips_per_node", c.chips_per_node()},
                      {"links", m.links},
                      {"switches", m.switches},
                      {"powered_fabric_switches", c.powered_fabric_switches()},
                      {"diameter_hops", m.diameter_hops},
                      {"bisection_bandwidth_Bps", m.bisection_bandwidth_Bps},
                      {"bisection_convention", "one direction, A to B"},
                      {"injection_bandwidth_Bps", m.injection_bandwidth_Bps},
                      {"peak_flops", m.peak_flops},
                      {"hbm_bytes", m.hbm_bytes},
                      {"switch_W", c.switch_W()},
                      {"pue", c.pue()},
                      {"carbon_kg_per_kWh", c.carbon_kg_per_kWh()}};
  if (!c.torus_dims().empty()) j["torus_dims"] = c.torus_dims();
  return j;
}

}  // namespace glam
