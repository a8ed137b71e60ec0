#pragma once
// Network fidelity levels behind one interface. Both take the same collective schedules
// (collective_schedule.h) over the same cluster routes:
//  - AnalyticalNetwork: per phase, bytes per link from the routes; time from the most loaded
//    link plus the longest route latency. Schedules are computed once per (collective, axis,
//    shares) and scale linearly with the message size, so a step costs microseconds per op.
//  - FlowNetwork (flow_network.h): SimGrid flow-level max-min sharing.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster.h"
#include "compute/calibration_profile.h"
#include "network/collective_schedule.h"
#include "network/routed_schedule.h"
#include "plan/parallel_plan.h"
#include "step_graph.h"

namespace glam {

struct CollectiveRequest {
  CollectiveKind kind = CollectiveKind::kAllReduce;
  CommAxis axis = CommAxis::kData;
  double bytes = 0;  // per-rank buffer
  std::vector<double> a2a_dest_share;
  bool a2a_transposed = false;
  bool send_wraps = false;  // pipeline sends: round a ring, the last stage sending on to the first
};

struct CollectiveCost {
  double time_s = 0;
  std::string algorithm;
  // Bytes that crossed links of each kind (all groups together), for statistics and energy.
  std::map<LinkKind, double> link_bytes;
};

// Which of a collective's candidate algorithms runs: the fastest at each size, as NCCL's tuner picks,
// or one pinned, as NCCL_ALGO pins it: the first (ring or torus dimension order), the tree or NVLS,
// where the collective has one (the first otherwise).
enum class AlgorithmChoice { kFastest, kRing, kTree, kNvls };
// The schedule a choice pins by name (kTreeAlgorithm, kNvlsAlgorithm); nullptr for the fastest and
// for the ring, which is the first candidate.
inline const char* pinned_algorithm(AlgorithmChoice choice) {
  return choice == AlgorithmChoice::kTree ? kTreeAlgorithm : choice == AlgorithmChoice::kNvls ? kNvlsAlgorithm : nullptr;
}

class NetworkModel {
 public:
  NetworkModel(const Cluster& cluster, const RankMap& ranks, const CalibrationProfile& profile);
  virtual ~NetworkModel() = default;
  virtual CollectiveCost cost(const CollectiveRequest& req) = 0;
  // The cost when links already carry `background` bytes per second (dense, by link id) from
  // collectives running at the same time on other lanes.
  virtual CollectiveCost cost_in_background(const CollectiveRequest& req, const std::vector<double>& background) = 0;
  // Bytes the collective puts on each link it uses, per byte of its buffer (sparse and sorted by
  // link id; all groups together): multiply by req.bytes.
  virtual const std::vector<std::pair<int, double>>& link_shares(const CollectiveRequest& req) = 0;
  virtual std::string name() const = 0;
  // Which candidate runs (glamsim collective --algorithm); set it before the first cost.
  virtual void pin_algorithm(AlgorithmChoice choice) { choice_ = choice; }
  // Host-side work done, for the benchmark: distinct schedules built, simulated events.
  int schedules_built() const { return static_cast<int>(schedules_.size()); }

 protected:
  // The candidate algorithms for a request (collective_candidates), cached by everything but the
  // message size.
  const std::vector<CollectiveSchedule>& schedules(const CollectiveRequest& req);
  // The profile's measured curve for this collective at its group size (nullptr: none measured).
  // It gives the bandwidth efficiency by buffer size with the latency folded in, so a measured
  // collective adds no route latency of its own.
  const CollectiveCurve* measured_curve(const CollectiveRequest& req);
  // The axis's groups as bytes: with schedule_key(req), all a routed schedule depends on.
  const std::string& groups_key(CommAxis axis);
  const Cluster& cluster_;
  const RankMap& ranks_;
  const CalibrationProfile& profile_;
  AlgorithmChoice choice_ = AlgorithmChoice::kFastest;

 private:
  const std::vector<std::vector<int>>& groups(CommAxis axis);
  std::map<std::string, std::vector<CollectiveSchedule>> schedules_;
  std::map<CommAxis, std::vector<std::vector<int>>> groups_;
  std::map<CommAxis, std::string> groups_keys_;
};

class AnalyticalNetwork : public NetworkModel {
 public:
  // `shared`: routed schedules shared with other network models of the same cluster (a plan search's).
  AnalyticalNetwork(const Cluster& cluster, const RankMap& ranks, const CalibrationProfile& profile,
                    std::shared_ptr<RoutedScheduleCache> shared = nullptr);
  CollectiveCost cost(const CollectiveRequest& req) override;
  CollectiveCost cost_in_background(const CollectiveRequest& req, const std::vector<double>& background) override;
  const std::vector<std::pair<int, double>>& link_shares(const CollectiveRequest& req) override;
  std::string name() const override { return "analytical"; }
  void pin_algorithm(AlgorithmChoice choice) override;
  // Which of the request's candidate algorithms (schedules(req)) runs at its size: the fastest alone,
  // or the first where the profile measured the collective (the curve is of what the library ran).
  size_t chosen(const CollectiveRequest& req);
  // Time of one step of each phase of the chosen algorithm (not multiplied by its repeat).
  std::vector<double> phase_step_times(const CollectiveRequest& req, const std::vector<double>* background = nullptr);
  // Each phase's latency, all its rounds together (0 with a measured curve).
  std::vector<double> phase_latencies(const CollectiveRequest& req);
  // The profile's fixed cost per call, in every time this model gives (0 with a measured curve, or
  // for a collective with nothing to send).
  double base_latency(const CollectiveRequest& req) {
    Resolved& r = resolve(req);
    return base_latency(r, chosen_schedule(r, req.bytes));
  }
  // The chosen algorithm's phases one after the other: the sum of their steps' times (a pipelined
  // schedule takes less).
  double sequential_time(const CollectiveRequest& req, const std::vector<double>* background = nullptr);
  double flows_routed() const { return flows_routed_; }

 private:
  // Everything about a request but its size, worked out once per schedule key: a step repeats each
  // collective for every layer and micro-batch, so costing one must not route or allocate.
  struct Alone {
    size_t chosen = 0;  // index into routed
    double time_s = 0;
  };
  struct Resolved {
    std::shared_ptr<const RoutedCandidates> routed;
    const CollectiveCurve* measured = nullptr;  // measured_curve(req)
    std::map<double, Alone> alone;              // by buffer bytes: the chosen candidate without background
  };
  Resolved& resolve(const CollectiveRequest& req);
  double base_latency(const Resolved& r, const RoutedSchedule& s) const {
    return r.measured || s.phases.empty() ? 0.0 : profile_.collective_base_latency_s + s.fixed_latency_s;
  }
  // The chosen candidate at this buffer size and its time without background.
  const Alone& alone(Resolved& r, double bytes);
  const RoutedSchedule& chosen_schedule(Resolved& r, double bytes) { return (*r.routed)[alone(r, bytes).chosen]; }
  // A phase's bandwidth efficiency at this buffer size (times the algorithm's bandwidth factor), and
  // its route latency (none with a measured curve, which has the latency folded in).
  double phase_efficiency(const Resolved& r, const RoutedSchedule& s, const RoutedPhase& pc, double bytes) const;
  double phase_latency(const Resolved& r, const RoutedPhase& pc) const;
  double phase_step_time(const Resolved& r, const RoutedSchedule& s, const RoutedPhase& pc, double bytes,
                         const std::vector<double>* background) const;
  // A candidate's time: its phases in sequence, or pipelined (CollectiveSchedule::pipelined), and the
  // call's base latency.
  double time_of(const Resolved& r, const RoutedSchedule& s, double bytes, const std::vector<double>* background);
  std::map<std::string, Resolved> resolved_;
  std::shared_ptr<RoutedScheduleCache> shared_;
  std::vector<double> link_work_;  // scratch, dense by link id, zero between calls
  double flows_routed_ = 0;
};

std::string schedule_key(const CollectiveRequest& req);

}  // namespace glam
