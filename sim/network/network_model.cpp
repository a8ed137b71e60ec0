#include "network/network_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace glam {

std::string schedule_key(const CollectiveRequest& req) {
  std::string key = std::string(collective_name(req.kind)) + "/" + axis_name(req.axis);
  if (req.kind == CollectiveKind::kAllToAll) {
    key += req.a2a_transposed ? "/T" : "/N";
    for (double s : req.a2a_dest_share) {
      char buf[32];
      std::snprintf(buf, sizeof buf, ",%.4f", s);
      key += buf;
    }
  }
  if (req.kind == CollectiveKind::kSendRecv) key += std::string(req.a2a_transposed ? "/previous" : "/next") + (req.send_wraps ? "/ring" : "");
  return key;
}

NetworkModel::NetworkModel(const Cluster& cluster, const RankMap& ranks, const CalibrationProfile& profile)
    : cluster_(cluster), ranks_(ranks), profile_(profile) {}

const std::vector<std::vector<int>>& NetworkModel::groups(CommAxis axis) {
  auto g = groups_.find(axis);
  if (g == groups_.end()) g = groups_.emplace(axis, ranks_.groups(axis)).first;
  return g->second;
}

const std::string& NetworkModel::groups_key(CommAxis axis) {
  auto k = groups_keys_.find(axis);
  if (k != groups_keys_.end()) return k->second;
  std::string key;
  auto append = [&key](int v) { key.append(reinterpret_cast<const char*>(&v), sizeof v); };
  append(static_cast<int>(groups(axis).size()));  // so that no groups key is the start of another
  for (const auto& group : groups(axis)) {
    append(static_cast<int>(group.size()));
    for (int chip : group) append(chip);
  }
  return groups_keys_.emplace(axis, std::move(key)).first->second;
}

const std::vector<CollectiveSchedule>& NetworkModel::schedules(const CollectiveRequest& req) {
  std::string key = schedule_key(req);
  auto it = schedules_.find(key);
  if (it != schedules_.end()) return it->second;
  return schedules_
      .emplace(key, collective_candidates(cluster_, req.kind, groups(req.axis), req.a2a_dest_share,
                                          req.a2a_transposed, req.send_wraps))
      .first->second;
}

const CollectiveCurve* NetworkModel::measured_curve(const CollectiveRequest& req) {
  if (profile_.collectives.empty()) return nullptr;
  const auto& g = groups(req.axis);
  return profile_.collective_curve(req.kind, g.empty() ? 1 : static_cast<int>(g.front().size()));
}

AnalyticalNetwork::AnalyticalNetwork(const Cluster& cluster, const RankMap& ranks, const CalibrationProfile& profile,
                                     std::shared_ptr<RoutedScheduleCache> shared)
    : NetworkModel(cluster, ranks, profile), shared_(std::move(shared)) {
  if (shared_) shared_->check_cluster(cluster);
}

AnalyticalNetwork::Resolved& AnalyticalNetwork::resolve(const CollectiveRequest& req) {
  std::string key = schedule_key(req);
  auto it = resolved_.find(key);
  if (it != resolved_.end()) return it->second;
  Resolved r;
  r.measured = measured_curve(req);
  const std::string shared_key = shared_ ? groups_key(req.axis) + key : std::string();
  if (shared_) r.routed = shared_->find(shared_key);
  if (!r.routed) {
    auto routed = std::make_shared<RoutedCandidates>();
    for (const auto& candidate : schedules(req)) {
      routed->push_back(route_schedule(cluster_, candidate));
      flows_routed_ += routed->back().flows;
    }
    r.routed = shared_ ? shared_->keep(shared_key, std::move(routed)) : std::move(routed);
  }
  return resolved_.emplace(std::move(key), std::move(r)).first->second;
}

namespace {
// Traffic already on a link leaves its flows the rest of the bandwidth (at least a tenth of it).
double bandwidth_left(const Link& link, const std::vector<double>* background, int l) {
  if (!background) return link.bandwidth_Bps;
  return std::max(link.bandwidth_Bps - (*background)[static_cast<size_t>(l)], 0.1 * link.bandwidth_Bps);
}
}  // namespace

double AnalyticalNetwork::phase_efficiency(const Resolved& r, const RoutedSchedule& s, const RoutedPhase& pc,
                                           double bytes) const {
  return s.bandwidth_factor *
         profile_.link_efficiency(r.measured, s.efficiency_at_buffer, bytes, pc.largest_share * bytes);
}

double AnalyticalNetwork::phase_latency(const Resolved& r, const RoutedPhase& pc) const {
  return r.measured ? 0.0 : pc.latency_s * profile_.network_latency_factor;
}

double AnalyticalNetwork::phase_step_time(const Resolved& r, const RoutedSchedule& s, const RoutedPhase& pc,
                                          double bytes, const std::vector<double>* background) const {
  const auto& links = cluster_.links();
  double seconds_per_byte = pc.seconds_per_byte;  // the busiest link at full bandwidth
  if (background)  // only links with traffic on them can be busier now
    for (const auto& [l, load] : pc.link_load)
      if ((*background)[static_cast<size_t>(l)] > 0)
        seconds_per_byte = std::max(seconds_per_byte, load / bandwidth_left(links[static_cast<size_t>(l)], background, l));
  return seconds_per_byte * bytes / phase_efficiency(r, s, pc, bytes) + phase_latency(r, pc);
}

void AnalyticalNetwork::pin_algorithm(AlgorithmChoice choice) {
  NetworkModel::pin_algorithm(choice);
  for (auto& [key, r] : resolved_) r.alone.clear();
}

const AnalyticalNetwork::Alone& AnalyticalNetwork::alone(Resolved& r, double bytes) {
  if (auto hit = r.alone.find(bytes); hit != r.alone.end()) return hit->second;
  const auto& candidates = *r.routed;
  Alone best{0, 0};
  if (const char* pinned = pinned_algorithm(choice_))
    for (size_t i = 0; i < candidates.size(); ++i)
      if (candidates[i].algorithm == pinned) best.chosen = i;
  best.time_s = time_of(r, candidates[best.chosen], bytes, nullptr);
  if (choice_ == AlgorithmChoice::kFastest && !r.measured)
    for (size_t i = 1; i < candidates.size(); ++i)
      if (const double t = time_of(r, candidates[i], bytes, nullptr); t < best.time_s) best = {i, t};
  return r.alone.emplace(bytes, best).first->second;
}

size_t AnalyticalNetwork::chosen(const CollectiveRequest& req) { return alone(resolve(req), req.bytes).chosen; }

std::vector<double> AnalyticalNetwork::phase_step_times(const CollectiveRequest& req, const std::vector<double>* background) {
  Resolved& r = resolve(req);
  const RoutedSchedule& s = chosen_schedule(r, req.bytes);
  std::vector<double> out;
  for (const auto& pc : s.phases) out.push_back(phase_step_time(r, s, pc, req.bytes, background));
  return out;
}

std::vector<double> AnalyticalNetwork::phase_latencies(const CollectiveRequest& req) {
  Resolved& r = resolve(req);
  std::vector<double> out;
  for (const auto& pc : chosen_schedule(r, req.bytes).phases) out.push_back(phase_latency(r, pc));
  return out;
}

double AnalyticalNetwork::sequential_time(const CollectiveRequest& req, const std::vector<double>* background) {
  Resolved& r = resolve(req);
  const RoutedSchedule& s = chosen_schedule(r, req.bytes);
  double t = 0;
  for (const auto& pc : s.phases) t += pc.repeat * phase_step_time(r, s, pc, req.bytes, background);
  return t;
}

double AnalyticalNetwork::time_of(const Resolved& r, const RoutedSchedule& s, double bytes,
                                  const std::vector<double>* background) {
  double t = base_latency(r, s);
  if (!s.pipelined) {
    for (const auto& pc : s.phases) t += pc.repeat * phase_step_time(r, s, pc, bytes, background);
    return t;
  }
  // Pipelined: each link's bytes from every phase (at each phase's efficiency) over its bandwidth; the
  // busiest link sets the time, and each phase's steps add their latency (the first chunk's path).
  const auto& links = cluster_.links();
  link_work_.resize(links.size(), 0.0);  // per link: seconds per byte of buffer at full bandwidth
  double latency = 0;
  for (const auto& pc : s.phases) {
    const double efficiency = phase_efficiency(r, s, pc, bytes);
    for (const auto& [l, load] : pc.link_load) link_work_[static_cast<size_t>(l)] += pc.repeat * load / efficiency;
    latency += pc.repeat * phase_latency(r, pc);
  }
  double busiest = 0;
  for (const auto& [l, share] : s.link_shares) {
    double& w = link_work_[static_cast<size_t>(l)];
    busiest = std::max(busiest, w * bytes / bandwidth_left(links[static_cast<size_t>(l)], background, l));
    w = 0;
  }
  return t + busiest + latency;
}

const std::vector<std::pair<int, double>>& AnalyticalNetwork::link_shares(const CollectiveRequest& req) {
  Resolved& r = resolve(req);
  return chosen_schedule(r, req.bytes).link_shares;
}

CollectiveCost AnalyticalNetwork::cost_in_background(const CollectiveRequest& req, const std::vector<double>& background) {
  CollectiveCost c = cost(req);
  Resolved& r = resolve(req);
  const RoutedSchedule& s = chosen_schedule(r, req.bytes);
  c.time_s = time_of(r, s, req.bytes, &background);
  return c;
}

CollectiveCost AnalyticalNetwork::cost(const CollectiveRequest& req) {
  Resolved& r = resolve(req);
  const Alone& a = alone(r, req.bytes);
  const RoutedSchedule& s = (*r.routed)[a.chosen];
  CollectiveCost c;
  c.algorithm = s.algorithm;
  for (const auto& [kind, share] : s.link_kind_share) c.link_bytes[kind] = share * req.bytes;
  c.time_s = a.time_s;
  return c;
}

}  // namespace glam
