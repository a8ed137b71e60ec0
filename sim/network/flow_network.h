#pragma once
// Flow-level fidelity: every phase of a collective is played in SimGrid (CM02 max-min sharing,
// no cross-traffic) on the platform built from the cluster graph, so flows that share a link
// slow each other down with the dynamics of their start and end times.
//
// Speed: a 1,024-chip all-to-all cannot be simulated flow by flow (in SimGrid 3.32 all pairs at once
// take 5 s at 128 chips, 194 s at 256 and over 7 minutes at 512), so
// (1) a phase whose flows split into link-disjoint, identical components (the ep groups of a
// torus, the tp groups inside nodes) is simulated for one component only, and (2) every
// (schedule, message size) is simulated once and reused: a GLaM step repeats each collective
// up to 128 times with identical sizes. (3) A phase that still holds more than
// `max_flows` concurrent flows (interleaved groups on a large torus) is costed by the analytical
// congestion model, which the flow model checks at smaller scale; such phases are counted.
#include <map>
#include <memory>
#include <optional>

#include "network/network_model.h"

namespace glam {

class FlowNetwork : public NetworkModel {
 public:
  static constexpr size_t kDefaultMaxFlows = 16384;
  FlowNetwork(const Cluster& cluster, const RankMap& ranks, const CalibrationProfile& profile,
              size_t max_flows = kDefaultMaxFlows);
  CollectiveCost cost(const CollectiveRequest& req) override;
  // SimGrid plays one collective at a time; traffic of other lanes stretches it by the ratio the
  // analytical model gives for the same background.
  CollectiveCost cost_in_background(const CollectiveRequest& req, const std::vector<double>& background) override;
  const std::vector<std::pair<int, double>>& link_shares(const CollectiveRequest& req) override {
    return analytical_.link_shares(req);
  }
  std::string name() const override { return "flow"; }
  void pin_algorithm(AlgorithmChoice choice) override {
    NetworkModel::pin_algorithm(choice);
    analytical_.pin_algorithm(choice);
  }
  double flows_simulated() const { return flows_simulated_; }
  double flows_routed() const { return analytical_.flows_routed(); }
  int phases_simulated() const { return phases_simulated_; }
  int phases_analytical() const { return phases_analytical_; }

 private:
  // nullopt when the phase is too large to play flow by flow.
  // `measured`: the profile's curve for the collective (by buffer bytes), else the network curve at
  // the buffer's size or each flow's (CollectiveSchedule::efficiency_at_buffer); either times the
  // algorithm's bandwidth factor. SimGrid adds the route latencies.
  std::optional<double> phase_time(const CommPhase& phase, double bytes, double bandwidth_factor,
                                   bool efficiency_at_buffer, const CollectiveCurve* measured);
  // The flows of one component when the phase is a union of identical, link-disjoint ones.
  std::vector<Flow> representative_flows(const CommPhase& phase) const;

  AnalyticalNetwork analytical_;  // link statistics; same schedules
  std::map<std::pair<const CommPhase*, double>, std::optional<double>> phase_cache_;
  size_t max_flows_;
  double flows_simulated_ = 0;
  int phases_simulated_ = 0;
  int phases_analytical_ = 0;
};

}  // namespace glam
