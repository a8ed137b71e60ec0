#pragma once
// Collective algorithms: each collective over a set of concurrent groups becomes a sequence
// of phases, each a set of point-to-point flows that run at the same time. Flow sizes are
// fractions of the per-rank buffer, so one schedule serves every message size.
#include <string>
#include <vector>

#include "cluster.h"
#include "step_graph.h"

namespace glam {

struct Flow {
  int src = 0, dst = 0;  // chip ids
  double share = 0;      // bytes / per-rank buffer bytes
};

struct CommPhase {
  std::vector<Flow> flows;
  int repeat = 1;  // identical steps in a row (ring algorithms)
};

struct CollectiveSchedule {
  std::string algorithm;  // "direct", "ring", "torus_dimension_order", "hierarchical"
  std::vector<CommPhase> phases;
  // The phases stream into one another, as NCCL's chunked rings do: each link works through the bytes
  // of every phase at once, so the most loaded link sets the time (plus every phase's latency), not
  // the sum of the phases' times.
  bool pipelined = false;
};

// Chooses the algorithm by collective and topology: all-to-all is direct (all pairs), and so are
// pipeline sends (each stage to its neighbour; `a2a_transposed`: to the previous stage; `send_wraps`:
// round a ring, the last stage to the first);
// all-reduce, reduce-scatter and all-gather run dimension by dimension on tori, hierarchically
// (NVSwitch inside the node, then rings across nodes) on GPU clusters, and as rings otherwise.
CollectiveSchedule plan_collective(const Cluster& cluster, CollectiveKind kind,
                                   const std::vector<std::vector<int>>& groups,
                                   const std::vector<double>& a2a_dest_share = {}, bool a2a_transposed = false,
                                   bool send_wraps = false);

}  // namespace glam
