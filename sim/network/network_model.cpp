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

const CollectiveSchedule& NetworkModel::schedule(const CollectiveRequest& req) {
  std::string key = schedule_key(req);
  auto it = schedules_.find(key);
  if (it != schedules_.end()) return it->second;
  return schedules_
      .emplace(key, plan_collective(cluster_, req.kind, groups(req.axis), req.a2a_dest_share, req.a2a_transposed,
                                    req.send_wraps))
      .first->second;
}

const EfficiencyCurve* NetworkModel::measured_curve(const CollectiveRequest& req) {
  if (profile_.collectives.empty()) return nullptr;
  const auto& g = groups(req.axis);
  return profile_.collective_curve(req.kind, g.empty() ? 1 : static_cast<int>(g.front().size()));
}

const std::vector<AnalyticalNetwork::PhaseCoefficients>& AnalyticalNetwork::coefficients(const CollectiveRequest& req,
                                                                                         std::string& algorithm) {
  std::string key = schedule_key(req);
  auto it = cache_.find(key);
  if (it != cache_.end()) {
    algorithm = it->second.first;
    return it->second.second;
  }
  const CollectiveSchedule& s = schedule(req);
  const auto& links = cluster_.links();
  std::vector<double> load(links.size(), 0.0);
  std::vector<PhaseCoefficients> out;
  std::vector<int> route;
  for (const auto& ph : s.phases) {
    PhaseCoefficients pc;
    pc.repeat = ph.repeat;
    std::fill(load.begin(), load.end(), 0.0);
    flows_routed_ += static_cast<double>(ph.flows.size());
    for (const auto& f : ph.flows) {
      double latency = 0;
      route.clear();
      cluster_.append_route(f.src, f.dst, route);
      for (int l : route) {
        load[static_cast<size_t>(l)] += f.share;
        latency += links[static_cast<size_t>(l)].latency_s;
        pc.link_share[links[static_cast<size_t>(l)].kind] += f.share;
      }
      pc.latency_s = std::max(pc.latency_s, latency);
      pc.largest_share = std::max(pc.largest_share, f.share);
    }
    for (size_t l = 0; l < links.size(); ++l)
      if (load[l] > 0) {
        pc.seconds_per_byte = std::max(pc.seconds_per_byte, load[l] / links[l].bandwidth_Bps);
        pc.link_load.emplace_back(static_cast<int>(l), load[l]);
      }
    out.push_back(std::move(pc));
  }
  auto& entry = cache_[key];
  entry = {s.algorithm, std::move(out)};
  algorithm = entry.first;
  return entry.second;
}

namespace {
// Traffic already on a link leaves its flows the rest of the bandwidth (at least a tenth of it).
double bandwidth_left(const Link& link, const std::vector<double>* background, int l) {
  if (!background) return link.bandwidth_Bps;
  return std::max(link.bandwidth_Bps - (*background)[static_cast<size_t>(l)], 0.1 * link.bandwidth_Bps);
}
}  // namespace

std::vector<double> AnalyticalNetwork::phase_step_times(const CollectiveRequest& req, const std::vector<double>* background) {
  std::string algorithm;
  std::vector<double> out;
  const auto& links = cluster_.links();
  const EfficiencyCurve* measured = measured_curve(req);
  for (const auto& pc : coefficients(req, algorithm)) {
    const double efficiency =
        measured ? measured->at(req.bytes) : profile_.network_bandwidth.at(pc.largest_share * req.bytes);
    const double latency = measured ? 0.0 : pc.latency_s * profile_.network_latency_factor;
    double seconds_per_byte = pc.seconds_per_byte;
    if (background) {
      seconds_per_byte = 0;
      for (const auto& [l, load] : pc.link_load)
        seconds_per_byte = std::max(seconds_per_byte, load / bandwidth_left(links[static_cast<size_t>(l)], background, l));
    }
    out.push_back(seconds_per_byte * req.bytes / efficiency + latency);
  }
  return out;
}

double AnalyticalNetwork::sequential_time(const CollectiveRequest& req, const std::vector<double>* background) {
  std::string algorithm;
  const auto& phases = coefficients(req, algorithm);
  const auto steps = phase_step_times(req, background);
  double t = 0;
  for (size_t i = 0; i < steps.size(); ++i) t += phases[i].repeat * steps[i];
  return t;
}

double AnalyticalNetwork::time_of(const CollectiveRequest& req, const std::vector<double>* background) {
  if (!schedule(req).pipelined) return sequential_time(req, background);
  std::string algorithm;
  const auto& phases = coefficients(req, algorithm);
  // Pipelined: each link's bytes from every phase (at each phase's efficiency) over its bandwidth; the
  // busiest link sets the time, and each phase's steps add their latency (the first chunk's path).
  const auto& links = cluster_.links();
  const EfficiencyCurve* measured = measured_curve(req);
  std::map<int, double> work;  // per link: seconds per byte of buffer at full bandwidth, efficiency included
  double latency = 0;
  for (const auto& pc : phases) {
    const double efficiency =
        measured ? measured->at(req.bytes) : profile_.network_bandwidth.at(pc.largest_share * req.bytes);
    for (const auto& [l, load] : pc.link_load) work[l] += pc.repeat * load / efficiency;
    if (!measured) latency += pc.repeat * pc.latency_s * profile_.network_latency_factor;
  }
  double busiest = 0;
  for (const auto& [l, w] : work)
    busiest = std::max(busiest, w * req.bytes / bandwidth_left(links[static_cast<size_t>(l)], background, l));
  return busiest + latency;
}

const std::vector<std::pair<int, double>>& AnalyticalNetwork::link_shares(const CollectiveRequest& req) {
  const std::string key = schedule_key(req);
  auto it = link_share_cache_.find(key);
  if (it != link_share_cache_.end()) return it->second;
  std::string algorithm;
  std::map<int, double> shares;
  for (const auto& pc : coefficients(req, algorithm))
    for (const auto& [l, load] : pc.link_load) shares[l] += pc.repeat * load;
  return link_share_cache_.emplace(key, std::vector<std::pair<int, double>>(shares.begin(), shares.end())).first->second;
}

CollectiveCost AnalyticalNetwork::cost_in_background(const CollectiveRequest& req, const std::vector<double>& background) {
  CollectiveCost c = cost(req);
  c.time_s = time_of(req, &background);
  return c;
}

CollectiveCost AnalyticalNetwork::cost(const CollectiveRequest& req) {
  CollectiveCost c;
  for (const auto& pc : coefficients(req, c.algorithm))
    for (const auto& [kind, share] : pc.link_share) c.link_bytes[kind] += pc.repeat * share * req.bytes;
  c.time_s = time_of(req, nullptr);
  return c;
}

}  // namespace glam
