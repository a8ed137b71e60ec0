#include "network/flow_network.h"

#include <algorithm>
#include <numeric>

#include "network/simgrid_flows.h"

namespace glam {

FlowNetwork::FlowNetwork(const Cluster& cluster, const RankMap& ranks, const CalibrationProfile& profile,
                         size_t max_flows)
    : NetworkModel(cluster, ranks, profile), analytical_(cluster, ranks, profile), max_flows_(max_flows) {}

CollectiveCost FlowNetwork::cost(const CollectiveRequest& req) {
  CollectiveCost c = analytical_.cost(req);  // algorithm name and per-link-kind bytes
  const CollectiveSchedule& s = schedules(req)[analytical_.chosen(req)];  // the algorithm the library would run
  c.time_s = 0;
  std::vector<double> analytical_steps, latencies;
  for (size_t i = 0; i < s.phases.size(); ++i) {
    std::optional<double> t =
        phase_time(s.phases[i], req.bytes, s.bandwidth_factor, s.efficiency_at_buffer, measured_curve(req));
    if (!t) {
      if (analytical_steps.empty()) analytical_steps = analytical_.phase_step_times(req);
      t = analytical_steps[i];
    } else if (const int rounds = s.phases[i].rounds; rounds > 1) {
      // SimGrid's flows pay their route latency once; the rounds after the first add theirs.
      if (latencies.empty()) latencies = analytical_.phase_latencies(req);
      *t += latencies[i] * (rounds - 1) / rounds;
    }
    c.time_s += s.phases[i].repeat * *t;
  }
  // SimGrid plays the phases one by one; a pipelined schedule overlaps them by the ratio the
  // analytical model gives.
  const double base = analytical_.base_latency(req);
  if (s.pipelined) {
    const double sequential = analytical_.sequential_time(req);
    if (sequential > 0) c.time_s *= (analytical_.cost(req).time_s - base) / sequential;
  }
  c.time_s += base;
  return c;
}

CollectiveCost FlowNetwork::cost_in_background(const CollectiveRequest& req, const std::vector<double>& background) {
  CollectiveCost c = cost(req);
  const double alone = analytical_.cost(req).time_s;
  if (alone > 0) c.time_s *= analytical_.cost_in_background(req, background).time_s / alone;
  return c;
}

std::vector<Flow> FlowNetwork::representative_flows(const CommPhase& phase) const {
  // Union-find over flows that share a link.
  const size_t n = phase.flows.size();
  std::vector<size_t> parent(n);
  std::iota(parent.begin(), parent.end(), 0);
  auto find = [&](size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  std::vector<size_t> owner(cluster_.links().size(), SIZE_MAX);
  std::vector<int> route;
  for (size_t f = 0; f < n; ++f) {
    route.clear();
    cluster_.append_route(phase.flows[f].src, phase.flows[f].dst, route);
    for (int l : route) {
      size_t& o = owner[static_cast<size_t>(l)];
      if (o == SIZE_MAX) o = f;
      else parent[find(f)] = find(o);
    }
  }
  std::map<size_t, std::vector<Flow>> components;
  for (size_t f = 0; f < n; ++f) components[find(f)].push_back(phase.flows[f]);
  if (components.size() < 2) return phase.flows;
  // Identical components: same number of flows and the same sorted shares.
  auto signature = [](std::vector<Flow> flows) {
    std::vector<double> s;
    for (const auto& f : flows) s.push_back(f.share);
    std::sort(s.begin(), s.end());
    return s;
  };
  auto first = signature(components.begin()->second);
  for (const auto& [root, flows] : components)
    if (signature(flows) != first) return phase.flows;
  return components.begin()->second;
}

std::optional<double> FlowNetwork::phase_time(const CommPhase& phase, double bytes, double bandwidth_factor,
                                              bool efficiency_at_buffer, const CollectiveCurve* measured) {
  auto key = std::make_pair(&phase, bytes);
  if (auto it = phase_cache_.find(key); it != phase_cache_.end()) return it->second;
  std::vector<Flow> flows = representative_flows(phase);
  if (flows.size() > max_flows_) {
    ++phases_analytical_;
    return phase_cache_[key] = std::nullopt;
  }
  std::vector<SimgridFlow> sg;
  sg.reserve(flows.size());
  for (const auto& f : flows) {
    const double size = f.share * bytes;
    const double efficiency = profile_.link_efficiency(measured, efficiency_at_buffer, bytes, size);
    sg.push_back({f.src, f.dst, size / (bandwidth_factor * efficiency)});
  }
  double t = simulate_flows(cluster_, sg, profile_.network_latency_factor);
  flows_simulated_ += static_cast<double>(sg.size());
  ++phases_simulated_;
  phase_cache_[key] = t;
  return t;
}

}  // namespace glam
