#pragma once
// A collective schedule routed over the cluster's links: per phase, each link's load per byte of
// buffer, the busiest link and the longest route. It depends on the collective, its groups and the
// cluster only (not on the message size or the calibration), so the network models of one plan
// search can share it: layouts with the same dp, tp, pp and ep route the same collectives, and
// routing is a third of a large torus's search.
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cluster.h"
#include "network/collective_schedule.h"

namespace glam {

struct RoutedPhase {
  int repeat = 1;
  double seconds_per_byte = 0;  // max over links of load / bandwidth, per byte of buffer
  double latency_s = 0;         // longest route (mean_hop_latency: the mean), times the phase's rounds
  int rounds = 1;
  double largest_share = 0;     // biggest flow, as a share of the buffer (for the efficiency curve)
  std::vector<std::pair<int, double>> link_load;  // per loaded link: sum of flow shares
};

struct RoutedSchedule {
  std::string algorithm;
  bool pipelined = false;
  double bandwidth_factor = 1.0;
  bool efficiency_at_buffer = false;  // CollectiveSchedule::efficiency_at_buffer
  double fixed_latency_s = 0;         // CollectiveSchedule::fixed_latency_s
  std::vector<RoutedPhase> phases;
  std::vector<std::pair<int, double>> link_shares;  // per link, sorted: flow shares x repeats
  std::map<LinkKind, double> link_kind_share;       // flow shares x hops x repeats, per link kind
  double flows = 0;                                 // flows routed to build it
};

RoutedSchedule route_schedule(const Cluster& cluster, const CollectiveSchedule& schedule);

// One collective's candidate algorithms (collective_candidates), routed, in the same order.
using RoutedCandidates = std::vector<RoutedSchedule>;

// Routed candidates of one cluster by key (the caller's: its groups and schedule), shared between
// threads. Each is routed once; a lookup that finds one returns it without routing.
class RoutedScheduleCache {
 public:
  explicit RoutedScheduleCache(const Cluster& cluster);
  // Throws std::logic_error for a cluster other than the one it was made for (another id, or other
  // links: the routed loads hold their bandwidths and latencies).
  void check_cluster(const Cluster& cluster) const;
  // The cached candidates, or nullptr.
  std::shared_ptr<const RoutedCandidates> find(const std::string& key) const;
  // Keeps `routed` unless another thread stored them first; returns the ones kept.
  std::shared_ptr<const RoutedCandidates> keep(const std::string& key, std::shared_ptr<const RoutedCandidates> routed);

 private:
  static std::vector<std::pair<double, double>> link_figures(const Cluster& cluster);  // bandwidth, latency
  std::string cluster_id_;
  std::vector<std::pair<double, double>> links_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const RoutedCandidates>> routed_;
};

}  // namespace glam
