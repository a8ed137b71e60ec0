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
  // Rounds the flows go out in, each paying the route latency: a collective library sends an
  // all-to-all's n - 1 messages a few peers at a time.
  int rounds = 1;
  // A step costs the mean latency of its flows' routes rather than the longest: a ring whose chunks
  // stream hop to hop (NCCL's), its NVLink and network hops in their proportion.
  bool mean_hop_latency = false;
};

struct CollectiveSchedule {
  std::string algorithm;  // "direct", "ring", "torus_dimension_order", "double_binary_tree", "nvls"
  std::vector<CommPhase> phases;
  // The phases stream into one another, as NCCL's chunked rings do: each link works through the bytes
  // of every phase at once, so the most loaded link sets the time (plus every phase's latency), not
  // the sum of the phases' times.
  bool pipelined = false;
  // The share of the links' bandwidth (as the efficiency curve gives it) the algorithm reaches: below 1
  // where it moves data less efficiently than a ring (the tree).
  double bandwidth_factor = 1.0;
  // Whether the efficiency curve is read at the whole buffer's size: rings and trees, whose steps
  // stream the buffer through the links in chunks (NCCL's, XLA's; nccl-tests gives their busbw by
  // buffer size), so a step's small slice of a large buffer moves at the large buffer's rate. Else at
  // each flow's size: schedules whose flows are messages of their own (an all-to-all's sends,
  // pipeline transfers).
  bool efficiency_at_buffer = false;
  // Latency of the algorithm beyond its routes' and the call's base latency (NVLS: the switch's
  // reduction and multicast).
  double fixed_latency_s = 0;
};

// Chooses the algorithm by collective and topology: all-to-all is direct (all pairs; on switched
// fabrics in rounds of a few peers at a time, as NCCL sends it), and so are
// pipeline sends (each stage to its neighbour; `a2a_transposed`: to the previous stage; `send_wraps`:
// round a ring, the last stage to the first);
// all-reduce, reduce-scatter and all-gather run dimension by dimension on tori, as NCCL's rings (one
// per channel through every member, node after node) on GPU clusters, and as rings otherwise.
CollectiveSchedule plan_collective(const Cluster& cluster, CollectiveKind kind,
                                   const std::vector<std::vector<int>>& groups,
                                   const std::vector<double>& a2a_dest_share = {}, bool a2a_transposed = false,
                                   bool send_wraps = false);

// The names of the tree and NVLS all-reduces' schedules.
inline constexpr const char* kTreeAlgorithm = "double_binary_tree";
inline constexpr const char* kNvlsAlgorithm = "nvls";

// The algorithms a collective library could run for this collective on these groups: plan_collective's
// first, then, for an all-reduce across the nodes of a GPU cluster, double binary trees (latency
// log2 of the nodes where a ring's is linear in them), and for an all-reduce inside nodes whose
// NVSwitches reduce, NVLS (each GPU sends its buffer into the switch once and receives the sum once,
// where a ring moves 2(n-1)/n of it each way). The network model times each at the buffer size and
// runs the fastest, as NCCL's tuner picks between its algorithms by its cost model.
std::vector<CollectiveSchedule> collective_candidates(const Cluster& cluster, CollectiveKind kind,
                                                      const std::vector<std::vector<int>>& groups,
                                                      const std::vector<double>& a2a_dest_share = {},
                                                      bool a2a_transposed = false, bool send_wraps = false);

}  // namespace glam
