#pragma once
// Plays a set of concurrent point-to-point flows in SimGrid on the cluster's platform and
// returns the time until the last one completes. The platform is built once per process.
#include <vector>

#include "cluster.h"

namespace glam {

struct SimgridFlow {
  int src = 0, dst = 0;  // chip ids
  double bytes = 0;
};

double simulate_flows(const Cluster& cluster, const std::vector<SimgridFlow>& flows, double latency_factor);

}  // namespace glam
