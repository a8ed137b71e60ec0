#include "network/routed_schedule.h"

#include <algorithm>
#include <array>
#include <stdexcept>

namespace glam {

RoutedSchedule route_schedule(const Cluster& cluster, const CollectiveSchedule& s) {
  RoutedSchedule r;
  r.algorithm = s.algorithm;
  r.pipelined = s.pipelined;
  r.efficiency_at_buffer = s.efficiency_at_buffer;
  r.bandwidth_factor = s.bandwidth_factor;
  r.fixed_latency_s = s.fixed_latency_s;
  const auto& links = cluster.links();
  std::vector<double> load(links.size(), 0.0), total(links.size(), 0.0);
  std::vector<int> route;
  constexpr size_t kKinds = static_cast<size_t>(LinkKind::kPcie) + 1;
  std::array<double, kKinds> kind_share{};  // a map lookup per hop would cost more than the route
  std::array<bool, kKinds> kind_used{};
  for (const auto& ph : s.phases) {
    RoutedPhase pc;
    pc.repeat = ph.repeat;
    pc.rounds = ph.rounds;
    std::fill(load.begin(), load.end(), 0.0);
    r.flows += static_cast<double>(ph.flows.size());
    double latency_sum = 0;
    for (const auto& f : ph.flows) {
      double latency = 0;
      route.clear();
      cluster.append_route(f.src, f.dst, route);
      for (int l : route) {
        load[static_cast<size_t>(l)] += f.share;
        latency += links[static_cast<size_t>(l)].latency_s;
        const auto kind = static_cast<size_t>(links[static_cast<size_t>(l)].kind);
        kind_share[kind] += ph.repeat * f.share;
        kind_used[kind] = true;
      }
      pc.latency_s = std::max(pc.latency_s, latency);
      latency_sum += latency;
      pc.largest_share = std::max(pc.largest_share, f.share);
    }
    if (ph.mean_hop_latency && !ph.flows.empty()) pc.latency_s = latency_sum / static_cast<double>(ph.flows.size());
    pc.latency_s *= ph.rounds;
    for (size_t l = 0; l < links.size(); ++l)
      if (load[l] > 0) {
        pc.seconds_per_byte = std::max(pc.seconds_per_byte, load[l] / links[l].bandwidth_Bps);
        pc.link_load.emplace_back(static_cast<int>(l), load[l]);
        total[l] += ph.repeat * load[l];
      }
    r.phases.push_back(std::move(pc));
  }
  for (size_t k = 0; k < kKinds; ++k)
    if (kind_used[k]) r.link_kind_share[static_cast<LinkKind>(k)] = kind_share[k];
  for (size_t l = 0; l < links.size(); ++l)
    if (total[l] > 0) r.link_shares.emplace_back(static_cast<int>(l), total[l]);
  return r;
}

RoutedScheduleCache::RoutedScheduleCache(const Cluster& cluster)
    : cluster_id_(cluster.id()), links_(link_figures(cluster)) {}

std::vector<std::pair<double, double>> RoutedScheduleCache::link_figures(const Cluster& cluster) {
  std::vector<std::pair<double, double>> figures;
  for (const Link& l : cluster.links()) figures.emplace_back(l.bandwidth_Bps, l.latency_s);
  return figures;
}

void RoutedScheduleCache::check_cluster(const Cluster& cluster) const {
  if (cluster.id() != cluster_id_ || link_figures(cluster) != links_)
    throw std::logic_error("RoutedScheduleCache: made for cluster " + cluster_id_ + ", used for " + cluster.id());
}

std::shared_ptr<const RoutedCandidates> RoutedScheduleCache::find(const std::string& key) const {
  std::lock_guard lock(mutex_);
  auto it = routed_.find(key);
  return it == routed_.end() ? nullptr : it->second;
}

std::shared_ptr<const RoutedCandidates> RoutedScheduleCache::keep(const std::string& key,
                                                                  std::shared_ptr<const RoutedCandidates> routed) {
  std::lock_guard lock(mutex_);
  return routed_.try_emplace(key, std::move(routed)).first->second;
}

}  // namespace glam
