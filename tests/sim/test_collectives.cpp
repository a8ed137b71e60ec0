// Collective schedules and their analytical cost against closed forms.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <map>
#include <set>

#include "network/collective_schedule.h"
#include "engine/step_simulator.h"
#include "network/network_model.h"
#include "support/host_cluster.h"

namespace glam {
namespace {

// Bytes each chip sends over a whole schedule, as a multiple of the buffer.
std::map<int, double> sent_per_chip(const CollectiveSchedule& s) {
  std::map<int, double> sent;
  for (const auto& ph : s.phases)
    for (const auto& f : ph.flows) sent[f.src] += f.share * ph.repeat;
  return sent;
}

std::vector<std::vector<int>> x_lines(const Cluster& c) {
  std::map<std::pair<int, int>, std::vector<int>> lines;
  for (int chip = 0; chip < c.num_chips(); ++chip) {
    auto xyz = c.torus_coords(chip);
    lines[{xyz[1], xyz[2]}].push_back(chip);
  }
  std::vector<std::vector<int>> out;
  for (auto& [k, v] : lines) out.push_back(v);
  return out;
}

// The analytical network of a tpu-v4-64 plan, with link efficiency 1 so closed forms apply.
struct FlatTorus64 {
  explicit FlatTorus64(int64_t dp, int64_t ep, int64_t tp)
      : c(load_cluster("tpu-v4-64")), map(plan(dp, ep, tp), c), flat(flat_profile()), net(c, map, flat) {}
  static ParallelPlan plan(int64_t dp, int64_t ep, int64_t tp) {
    ParallelPlan p;
    p.dp = dp, p.ep = ep, p.tp = tp, p.batch_tokens = 1 << 20;
    return p;
  }
  static CalibrationProfile flat_profile() {
    CalibrationProfile f = default_profile("tpu-v4");
    f.network_bandwidth = {{1.0}, {1.0}};
    return f;
  }
  Cluster c;
  RankMap map;
  CalibrationProfile flat;
  AnalyticalNetwork net;
};

TEST(Collectives, RingAllReduceSendsTwiceTheBufferMinusOneShare) {
  Cluster c = load_cluster("tpu-v4-64");
  CollectiveSchedule s = plan_collective(c, CollectiveKind::kAllReduce, x_lines(c));
  EXPECT_EQ(s.algorithm, "ring");
  for (const auto& [chip, sent] : sent_per_chip(s)) EXPECT_NEAR(sent, 2.0 * 3 / 4, 1e-12) << chip;
  CollectiveSchedule rs = plan_collective(c, CollectiveKind::kReduceScatter, x_lines(c));
  for (const auto& [chip, sent] : sent_per_chip(rs)) EXPECT_NEAR(sent, 3.0 / 4, 1e-12);
}

TEST(Collectives, TorusAllReduceUsesEveryDimensionAndMovesTheSameBytes) {
  Cluster c = load_cluster("tpu-v4-64");
  std::vector<int> all(64);
  for (int i = 0; i < 64; ++i) all[static_cast<size_t>(i)] = i;
  CollectiveSchedule s = plan_collective(c, CollectiveKind::kAllReduce, {all});
  EXPECT_EQ(s.algorithm, "torus_dimension_order");
  // Reduce-scatter over 4 x 4 x 4 moves 1 - 1/64 of the buffer per chip, then the gather the same.
  for (const auto& [chip, sent] : sent_per_chip(s)) EXPECT_NEAR(sent, 2 * (1 - 1.0 / 64), 1e-9) << chip;
}

TEST(Collectives, AnalyticalRingTimeMatchesTheClosedForm) {
  FlatTorus64 t(16, 1, 4);
  const Cluster& c = t.c;
  AnalyticalNetwork& net = t.net;
  // tp = 4 on a 4x4x4 torus is a 2x2 block: rings of 2 along two dimensions.
  const double B = 64e6, bw = c.links().front().bandwidth_Bps, lat = c.links().front().latency_s;
  CollectiveCost cost = net.cost({CollectiveKind::kAllReduce, CommAxis::kTensor, B, {}, false});
  EXPECT_EQ(cost.algorithm, "torus_dimension_order");
  // Each dimension's part is half the buffer. Round 1: each part crosses a ring of 2 with half of
  // itself (B/4 per link); round 2: the other dimension with half of what is left (B/8). The
  // gather mirrors the scatter. Each chip thus sends 3/4 of the buffer over two links per half.
  EXPECT_NEAR(cost.time_s, 2 * (B / 4 / bw + lat) + 2 * (B / 8 / bw + lat), 1e-9);
}

TEST(Collectives, AllToAllTimeIsTheMostLoadedLink) {
  FlatTorus64 t(64, 64, 1);
  const Cluster& c = t.c;
  AnalyticalNetwork& net = t.net;
  const double B = 64e6;
  CollectiveCost cost = net.cost({CollectiveKind::kAllToAll, CommAxis::kExpert, B, {}, false});
  // Independent count: load of every link over all 64 x 63 routes.
  std::vector<double> load(c.links().size(), 0);
  double longest = 0;
  for (int s = 0; s < 64; ++s)
    for (int d = 0; d < 64; ++d) {
      if (s == d) continue;
      double lat = 0;
      for (int l : c.route(s, d)) {
        load[static_cast<size_t>(l)] += B / 64;
        lat += c.links()[static_cast<size_t>(l)].latency_s;
      }
      longest = std::max(longest, lat);
    }
  double worst = 0;
  for (size_t l = 0; l < load.size(); ++l) worst = std::max(worst, load[l] / c.links()[l].bandwidth_Bps);
  EXPECT_NEAR(cost.time_s, worst + longest, 1e-12);
  // A skewed all-to-all is slower: the hot rank receives more.
  std::vector<double> share(64, 0.5 / 63);
  share[0] = 0.5;
  CollectiveCost skewed = net.cost({CollectiveKind::kAllToAll, CommAxis::kExpert, B, share, false});
  EXPECT_GT(skewed.time_s, 3 * cost.time_s);
}

TEST(Collectives, BackgroundTrafficSlowsACollectiveDown) {
  FlatTorus64 t(64, 64, 1);
  const Cluster& c = t.c;
  AnalyticalNetwork& net = t.net;
  const double B = 64e6, lat = 3 * 1e-6;
  CollectiveRequest req{CollectiveKind::kAllToAll, CommAxis::kExpert, B, {}, false};
  const double alone = net.cost(req).time_s;
  std::vector<double> half(c.links().size(), 0.5 * c.links().front().bandwidth_Bps);
  const double shared = net.cost_in_background(req, half).time_s;
  // Half of every link is taken: the bandwidth term doubles, the latency does not.
  EXPECT_GT(shared, 1.9 * (alone - 2 * lat));
  EXPECT_LT(shared, 2 * alone);
  // A background on links the collective does not use changes nothing.
  std::vector<double> elsewhere(c.links().size(), 0.0);
  EXPECT_DOUBLE_EQ(net.cost_in_background(req, elsewhere).time_s, alone);
  // Link shares add up to the bytes the schedule moves over links.
  double moved = 0;
  for (const auto& [l, share] : net.link_shares(req)) moved += share;
  double hops = 0;
  for (int s = 0; s < 64; ++s)
    for (int d = 0; d < 64; ++d) hops += s == d ? 0 : c.route_hops(s, d) / 64.0;
  EXPECT_NEAR(moved, hops, 1e-9 * hops);
}

TEST(Collectives, OverlappedCollectivesStretchTheBlockingOnes) {
  // Sharded weights: every block's weight gathers run on the dp lane while the all-to-alls block, which
  // take longer but never more than twice as long.
  ParallelPlan p;
  p.dp = 64, p.ep = 64, p.tp = 1, p.batch_tokens = 1 << 18, p.shard_weights = true;
  SimulationInput in{load_model("glam-1.7b-64e"), load_cluster("tpu-v4-64"), p, {}, Fidelity::kAnalytical,
                     default_profile("tpu-v4")};
  StepResult r = simulate_step(in);
  RankMap map(p, in.cluster);
  AnalyticalNetwork alone(in.cluster, map, in.profile);
  int stretched = 0;
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const auto& op = r.graph.ops[i];
    if (op.kind != OpKind::kCollective || op.collective != CollectiveKind::kAllToAll) continue;
    const double isolated =
        alone.cost({op.collective, op.axis, op.comm_bytes, op.a2a_dest_share, op.a2a_transposed}).time_s;
    EXPECT_GE(r.timing[i].duration(), isolated * (1 - 1e-12)) << op.id;
    // One lane in flight beside it: max-min fairness leaves it at least half of every link.
    EXPECT_LE(r.timing[i].duration(), 2 * isolated * (1 + 1e-12)) << op.id;
    stretched += r.timing[i].duration() > isolated * 1.001;
  }
  EXPECT_GT(stretched, 0);
}

// A collective in flight that a larger one joins is delayed by no more than what it had left (fair
// sharing delays each by the shorter one's time): the small tp all-reduces of the sequence-parallel
// norms' gradients, in flight when the 134 MB data-parallel gradient all-reduce starts, were stretched
// 300-fold by its whole bytes.
TEST(Collectives, ACollectiveInFlightIsDelayedByNoMoreThanItHadLeft) {
  ParallelPlan p;
  p.dp = 64, p.ep = 64, p.tp = 2, p.pp = 4, p.batch_tokens = 1 << 20;
  SimulationInput in{load_model("glam-1.7b-64e"), load_cluster("dgx-a100-512"), p, {}, Fidelity::kAnalytical,
                     default_profile("a100-80gb")};
  apply_cluster_conventions(in.plan, in.model, in.cluster, std::nullopt);
  const StepResult r = simulate_step(in);
  RankMap map(in.plan, in.cluster);
  AnalyticalNetwork alone(in.cluster, map, in.profile);
  int checked = 0;
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const auto& op = r.graph.ops[i];
    if (op.kind != OpKind::kCollective || op.blocking || op.axis != CommAxis::kTensor) continue;
    const double isolated =
        alone.cost({op.collective, op.axis, op.comm_bytes, op.a2a_dest_share, op.a2a_transposed}).time_s;
    EXPECT_LE(r.timing[i].duration(), 4 * isolated * (1 + 1e-9))  // (some reach the bound itself)
        << op.id << ": " << std::setprecision(17) << r.timing[i].duration() / isolated << " x alone";
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// A ring's or tree's steps stream the buffer through the links in chunks, so their bandwidth
// efficiency is the whole buffer's (nccl-tests' busbw curves are by buffer size), however thin the
// slice one step moves; an all-to-all's sends are messages of their own, at their own size. With an
// efficiency rising from 0.1 at 1 KB to 1 at 1 GB, a 1 GB all-reduce over 128 GPUs runs at full
// efficiency (its ring steps move 1 GB / 1,024 each) and a 1 GB all-to-all over the same GPUs at its
// 8 MB sends' 0.68.
TEST(Collectives, RingsReadTheEfficiencyAtTheBufferAllToAllsAtTheMessage) {
  ParallelPlan p;
  p.dp = p.ep = 128, p.tp = 1, p.batch_tokens = 1 << 20;
  const Cluster c = load_cluster("dgx-h100-1024");
  RankMap map(p, c);
  CalibrationProfile steep = default_profile("h100"), flat = steep;
  steep.network_bandwidth = {{1e3, 1e9}, {0.1, 1.0}};
  flat.network_bandwidth = {{1e3}, {1.0}};
  AnalyticalNetwork steep_net(c, map, steep), flat_net(c, map, flat);
  const CollectiveRequest all_reduce{CollectiveKind::kAllReduce, CommAxis::kData, 1e9, {}, false};
  steep_net.pin_algorithm(AlgorithmChoice::kRing), flat_net.pin_algorithm(AlgorithmChoice::kRing);
  EXPECT_NEAR(steep_net.cost(all_reduce).time_s, flat_net.cost(all_reduce).time_s, 1e-12);
  const CollectiveRequest a2a{CollectiveKind::kAllToAll, CommAxis::kExpert, 1e9, {}, false};
  steep_net.pin_algorithm(AlgorithmChoice::kFastest), flat_net.pin_algorithm(AlgorithmChoice::kFastest);
  EXPECT_GT(steep_net.cost(a2a).time_s, 1.3 * flat_net.cost(a2a).time_s);
  for (const auto& schedule : collective_candidates(c, CollectiveKind::kAllReduce, map.groups(CommAxis::kData)))
    EXPECT_TRUE(schedule.efficiency_at_buffer) << schedule.algorithm;
  EXPECT_FALSE(plan_collective(c, CollectiveKind::kAllToAll, map.groups(CommAxis::kExpert)).efficiency_at_buffer);
}


// Across nodes an all-reduce runs NCCL's rings, one per channel (8 for a node's 8 GPUs), each through all
// 16 members node after node and entering each node at another GPU: every GPU's NIC carries the same
// share, 2(n-1)/n of the buffer out of each node in all, 1/8 of it per NIC.
TEST(Collectives, GpuAllReduceAcrossNodesIsNcclRings) {
  Cluster c = load_cluster("dgx-h100-64");
  std::vector<int> two_nodes(16);
  for (int i = 0; i < 16; ++i) two_nodes[static_cast<size_t>(i)] = i;
  CollectiveSchedule s = plan_collective(c, CollectiveKind::kAllReduce, {two_nodes});
  EXPECT_EQ(s.algorithm, "ring");
  std::map<int, double> across;  // bytes each GPU sends to the other node, per byte of buffer
  for (const auto& ph : s.phases) {
    EXPECT_TRUE(ph.mean_hop_latency);  // chunks stream hop to hop, as NCCL's do
    for (const auto& f : ph.flows)
      if (c.node_of(f.src) != c.node_of(f.dst)) across[f.src] += f.share * ph.repeat;
  }
  ASSERT_EQ(across.size(), 16u);
  for (const auto& [chip, sent] : across) EXPECT_NEAR(sent, 2.0 * 15 / 16 / 8, 1e-12) << chip;
  std::vector<int> one_node = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(plan_collective(c, CollectiveKind::kAllReduce, {one_node}).algorithm, "ring");
}

// Double binary trees over the nodes: for every group size the two trees carry half of the buffer
// each, every member's data reaches every member (the up pass then the down pass), no member sends
// or receives more than the buffer per pass, and a pass takes one phase per level (log2 of the
// members, where a ring takes a step per member).
TEST(Collectives, TreeAllReduceReachesEveryMemberInLogarithmicSteps) {
  Cluster c = load_cluster("dgx-h100-1024");
  for (int n = 2; n <= 128; n += n < 8 ? 1 : 13) {
    std::vector<int> rail;  // one GPU per node
    for (int k = 0; k < n; ++k) rail.push_back(8 * k);
    const auto candidates = collective_candidates(c, CollectiveKind::kAllReduce, {rail});
    ASSERT_EQ(candidates.size(), 2u) << n;
    EXPECT_EQ(candidates[0].algorithm, "ring");
    const CollectiveSchedule& tree = candidates[1];
    EXPECT_EQ(tree.algorithm, "double_binary_tree");
    EXPECT_TRUE(tree.pipelined);
    EXPECT_LT(tree.bandwidth_factor, 1.0);
    const int levels = static_cast<int>(std::floor(std::log2(n))) + 1;
    EXPECT_LE(tree.phases.size(), static_cast<size_t>(2 * levels)) << n;
    std::map<int, std::set<int>> holds;  // whose data each member holds
    for (int chip : rail) holds[chip] = {chip};
    for (size_t pass = 0; pass < 2; ++pass) {
      std::map<int, double> sent, received;
      for (size_t p = pass * tree.phases.size() / 2; p < (pass + 1) * tree.phases.size() / 2; ++p) {
        const auto before = holds;
        for (const auto& f : tree.phases[p].flows) {
          EXPECT_DOUBLE_EQ(f.share, 0.5);
          holds[f.dst].insert(before.at(f.src).begin(), before.at(f.src).end());
          sent[f.src] += f.share, received[f.dst] += f.share;
        }
      }
      for (const auto& [chip, bytes] : sent) EXPECT_LE(bytes, 1.0) << n << " " << chip;
      for (const auto& [chip, bytes] : received) EXPECT_LE(bytes, 1.0) << n << " " << chip;
    }
    for (const auto& [chip, data] : holds) EXPECT_EQ(data.size(), static_cast<size_t>(n)) << n << " " << chip;
  }
  // Collectives other than the all-reduce have nothing to choose; nor does an all-reduce inside a node
  // whose NVSwitches do not reduce.
  EXPECT_EQ(collective_candidates(c, CollectiveKind::kReduceScatter, {{0, 8, 16}}).size(), 1u);
  EXPECT_EQ(collective_candidates(load_cluster("dgx-a100-64"), CollectiveKind::kAllReduce, {{0, 1, 2, 3}}).size(), 1u);
}

// NVLS inside a node whose NVSwitches reduce: one buffer out of and into each GPU (a ring: 2(n-1)/n
// each way), for groups inside one node only, and not where the switches do not reduce (DGX A100).
// On 8 H100s it reaches NCCL's algbw of about 275 GB/s for large buffers (busbw 480, beyond the
// 450 GB/s links, as NCCL reports), while rings keep small ones, where NVLS's latency costs more.
TEST(Collectives, NvlsAllReduceMovesOneBufferEachWayInsideANode) {
  const Cluster c = load_cluster("dgx-h100-64");
  const std::vector<std::vector<int>> nodes = {{0, 1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11, 12, 13, 14, 15}},
                                      halves = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  for (const auto& groups : {nodes, halves}) {
    const auto candidates = collective_candidates(c, CollectiveKind::kAllReduce, groups);
    ASSERT_EQ(candidates.size(), 2u);
    EXPECT_EQ(candidates[0].algorithm, "ring");
    const CollectiveSchedule& nvls = candidates[1];
    EXPECT_EQ(nvls.algorithm, kNvlsAlgorithm);
    std::map<int, double> sent, received;
    for (const auto& ph : nvls.phases)
      for (const auto& f : ph.flows) {
        EXPECT_EQ(c.node_of(f.src), c.node_of(f.dst));
        sent[f.src] += f.share * ph.repeat, received[f.dst] += f.share * ph.repeat;
      }
    EXPECT_EQ(sent.size(), groups.size() * groups[0].size());
    for (const auto& [chip, bytes] : sent) EXPECT_NEAR(bytes, 1.0, 1e-12) << chip;
    for (const auto& [chip, bytes] : received) EXPECT_NEAR(bytes, 1.0, 1e-12) << chip;
    for (const auto& [chip, bytes] : sent_per_chip(candidates[0]))
      EXPECT_NEAR(bytes, 2.0 * (groups[0].size() - 1) / groups[0].size(), 1e-12) << chip;
  }
  EXPECT_EQ(collective_candidates(c, CollectiveKind::kAllReduce, {{0, 8}}).size(), 2u);  // ring and tree
  EXPECT_EQ(collective_candidates(c, CollectiveKind::kAllReduce, {{0, 8}})[1].algorithm, kTreeAlgorithm);
  EXPECT_EQ(collective_candidates(c, CollectiveKind::kAllGather, nodes).size(), 1u);

  const Cluster node = load_cluster("dgx-h100-8");
  ParallelPlan plan;
  plan.tp = 8, plan.batch_tokens = 1 << 20;
  const RankMap map(plan, node);
  const CalibrationProfile profile = default_profile("h100");
  AnalyticalNetwork net(node, map, profile);
  const CollectiveCost large = net.cost({CollectiveKind::kAllReduce, CommAxis::kTensor, 4e9}),
                       small = net.cost({CollectiveKind::kAllReduce, CommAxis::kTensor, 64e3});
  EXPECT_EQ(large.algorithm, kNvlsAlgorithm);
  EXPECT_NEAR(4e9 / large.time_s, 275e9, 0.01 * 275e9);
  EXPECT_EQ(small.algorithm, "ring");
}

// The network runs whichever algorithm is faster at the buffer size, as NCCL's tuner does: trees
// for small all-reduces across nodes, whose time then grows with the logarithm of the nodes (1 KiB
// over 1,024 GPUs within 4 times its time over 64), rings for large ones. Where the profile measured
// the collective, the measured curve is of what the library ran: the first algorithm only.
TEST(Collectives, AllReduceAcrossNodesRunsTheFasterAlgorithmBySize) {
  const CalibrationProfile profile = default_profile("h100");
  auto all_reduce_over_all = [&](const Cluster& c, const CalibrationProfile& p, double bytes) {
    ParallelPlan plan;
    plan.dp = c.num_chips(), plan.ep = 1, plan.tp = 1, plan.batch_tokens = 1 << 20;
    const RankMap map(plan, c);
    AnalyticalNetwork net(c, map, p);
    return net.cost({CollectiveKind::kAllReduce, CommAxis::kData, bytes});
  };
  const Cluster small = load_cluster("dgx-h100-64"), large = load_cluster("dgx-h100-1024");
  const CollectiveCost tiny = all_reduce_over_all(small, profile, 1024), huge = all_reduce_over_all(small, profile, 4e9);
  EXPECT_EQ(tiny.algorithm, "double_binary_tree");
  EXPECT_EQ(huge.algorithm, "ring");
  const CollectiveCost tiny_at_scale = all_reduce_over_all(large, profile, 1024);
  EXPECT_EQ(tiny_at_scale.algorithm, "double_binary_tree");
  EXPECT_LT(tiny_at_scale.time_s, 4 * tiny.time_s);  // 16 times the nodes: a ring's steps would be 16 times
  CalibrationProfile measured = profile;
  measured.collectives.push_back({CollectiveKind::kAllReduce, 64, {{1e3, 1e9}, {0.01, 0.8}}});
  EXPECT_EQ(all_reduce_over_all(small, measured, 1024).algorithm, "ring");
}

// Pipeline sends: every stage but the last sends its whole buffer to the next (backward: to the
// previous); interleaved schedules go round a ring, the last stage sending on to the first.
TEST(Collectives, PipelineSendsGoToTheNeighbouringStage) {
  Cluster c = load_cluster("dgx-h100-64");
  const std::vector<std::vector<int>> pipes = {{0, 16, 32, 48}, {1, 17, 33, 49}};
  auto flows = [&](bool transposed, bool wraps) {
    std::set<std::pair<int, int>> out;
    const CollectiveSchedule s = plan_collective(c, CollectiveKind::kSendRecv, pipes, {}, transposed, wraps);
    EXPECT_EQ(s.phases.size(), 1u);
    for (const auto& f : s.phases.front().flows) {
      EXPECT_DOUBLE_EQ(f.share, 1.0);
      out.insert({f.src, f.dst});
    }
    return out;
  };
  using Pairs = std::set<std::pair<int, int>>;
  EXPECT_EQ(flows(false, false), (Pairs{{0, 16}, {16, 32}, {32, 48}, {1, 17}, {17, 33}, {33, 49}}));
  EXPECT_EQ(flows(true, false), (Pairs{{16, 0}, {32, 16}, {48, 32}, {17, 1}, {33, 17}, {49, 33}}));
  EXPECT_EQ(flows(false, true),
            (Pairs{{0, 16}, {16, 32}, {32, 48}, {48, 0}, {1, 17}, {17, 33}, {33, 49}, {49, 1}}));
}


// An efficiency curve never gives a larger size a shorter time (size / efficiency): where measured
// points rise faster than the size, the size takes the slowest smaller one's time; elsewhere the
// curve is the log-linear interpolation of its points.
TEST(Collectives, EfficiencyCurvesNeverMakeALargerSizeFaster) {
  const EfficiencyCurve steep{{64, 256, 1e6}, {0.01, 0.08, 0.9}};  // 256 B: 3.2 us at 1 B/us, 64 B: 6.4
  double last_time = 0;
  for (double size = 16; size < 4e6; size *= 1.1) {
    const double time = size / steep.at(size);
    EXPECT_GE(time, last_time * (1 - 1e-12)) << size;
    last_time = time;
  }
  EXPECT_DOUBLE_EQ(256 / steep.at(256), 64 / 0.01);  // held at the 64 B point's time
  EXPECT_DOUBLE_EQ(steep.at(1e6), 0.9);               // past the plateau the points rule again
  EXPECT_DOUBLE_EQ(steep.at(16), 0.01);               // below the first point: the efficiency held
  EXPECT_DOUBLE_EQ(steep.at(16, true), 0.01 * 16 / 64);  // or the time
  const EfficiencyCurve gentle = default_profile("h100").network_bandwidth;  // untouched by the rule
  const double mid = std::sqrt(1e3 * 1e6);
  EXPECT_DOUBLE_EQ(gentle.at(mid), 0.5 * (gentle.values[0] + gentle.values[1]));
}

// A collective measured by `glamexec calibrate` replaces the generic curve and the route
// latencies: on a host of 4 ranks behind one switch its simulated time is the NCCL-tests
// relation, bus factor x bytes / (link bandwidth x bus efficiency), exactly. Kinds without a
// measurement keep the generic model; the curve nearest the group size (by ratio) is used.
TEST(Collectives, MeasuredCollectiveCurvesGiveTheMeasuredTime) {
  const double link_bw = 10e9;
  Cluster c = testing::host_cluster(4);
  ParallelPlan plan;
  plan.dp = 4, plan.ep = 4, plan.tp = 1, plan.batch_tokens = 4096;
  RankMap map(plan, c);
  CalibrationProfile generic = default_profile("cpu");
  CalibrationProfile measured = generic;
  measured.collectives.push_back({CollectiveKind::kAllReduce, 4, {{1e3, 1e6}, {0.01, 0.5}}});
  measured.collectives.push_back({CollectiveKind::kAllReduce, 2, {{1e3}, {0.9}}});
  AnalyticalNetwork plain(c, map, generic), calibrated(c, map, measured);
  const double B = 1e6;
  const CollectiveRequest all_reduce{CollectiveKind::kAllReduce, CommAxis::kData, B, {}, false};
  EXPECT_NEAR(calibrated.cost(all_reduce).time_s, 2.0 * 3 / 4 * B / (link_bw * 0.5), 1e-12);
  EXPECT_NE(plain.cost(all_reduce).time_s, calibrated.cost(all_reduce).time_s);
  // Below the first point the curve holds its time: the latency is inside the measurement.
  const CollectiveRequest tiny{CollectiveKind::kAllReduce, CommAxis::kData, 100, {}, false};
  EXPECT_NEAR(calibrated.cost(tiny).time_s, 2.0 * 3 / 4 * 1e3 / (link_bw * 0.01), 1e-15);
  const CollectiveRequest a2a{CollectiveKind::kAllToAll, CommAxis::kExpert, B, {}, false};
  EXPECT_DOUBLE_EQ(calibrated.cost(a2a).time_s, plain.cost(a2a).time_s);
  EXPECT_EQ(measured.collective_curve(CollectiveKind::kAllReduce, 3)->bus_efficiency.values.front(), 0.01);  // 4 is nearer than 2
  EXPECT_EQ(measured.collective_curve(CollectiveKind::kAllReduce, 2)->bus_efficiency.values.front(), 0.9);
  EXPECT_EQ(measured.collective_curve(CollectiveKind::kAllGather, 4), nullptr);
}

// Network models of one cluster share routed schedules by groups: a second model of the same layout
// routes nothing and costs the same; another layout's groups are routed anew, as an unshared model
// would; and the cache refuses another cluster.
TEST(Collectives, NetworksOfOneClusterShareRoutedSchedulesByGroups) {
  const Cluster c = load_cluster("tpu-v4-64");
  const CalibrationProfile profile = default_profile("tpu-v4");
  const RankMap sliced(FlatTorus64::plan(16, 16, 4), c), wide(FlatTorus64::plan(64, 64, 1), c);
  const std::vector<CollectiveRequest> requests = {{CollectiveKind::kAllReduce, CommAxis::kData, 1e8},
                                                   {CollectiveKind::kAllToAll, CommAxis::kExpert, 4e6},
                                                   {CollectiveKind::kAllReduce, CommAxis::kTensor, 2e6}};
  auto cache = std::make_shared<RoutedScheduleCache>(c);
  AnalyticalNetwork first(c, sliced, profile, cache), second(c, sliced, profile, cache);
  AnalyticalNetwork other(c, wide, profile, cache), other_alone(c, wide, profile);
  for (const auto& req : requests) {
    const CollectiveCost a = first.cost(req), b = second.cost(req);
    EXPECT_EQ(a.time_s, b.time_s);
    EXPECT_EQ(a.link_bytes, b.link_bytes);
    EXPECT_EQ(first.link_shares(req), second.link_shares(req));
    const CollectiveCost o = other.cost(req), alone = other_alone.cost(req);
    EXPECT_EQ(o.time_s, alone.time_s);
    EXPECT_EQ(o.link_bytes, alone.link_bytes);
  }
  EXPECT_GT(first.flows_routed(), 0);
  EXPECT_EQ(second.flows_routed(), 0);
  EXPECT_EQ(other.flows_routed(), other_alone.flows_routed());
  EXPECT_NE(first.cost(requests[0]).time_s, other.cost(requests[0]).time_s);  // dp 16 against dp 64
  const Cluster another = load_cluster("tpu-v4-256");
  const RankMap there(FlatTorus64::plan(256, 64, 1), another);
  EXPECT_THROW(AnalyticalNetwork(another, there, profile, cache), std::logic_error);
  // Nor does it serve the same id with other links: its loads hold their bandwidths.
  std::ifstream file(std::string(GLAM_SOURCE_DIR) + "/topologies/tpu-v4-64.toml");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_NE(text.find("bandwidth_Bps = 45e9"), std::string::npos);
  text.replace(text.find("bandwidth_Bps = 45e9"), 20, "bandwidth_Bps = 50e9");
  const Cluster faster = parse_cluster(text, "faster.toml");
  EXPECT_EQ(faster.id(), c.id());
  const RankMap faster_map(FlatTorus64::plan(16, 16, 4), faster);
  EXPECT_THROW(AnalyticalNetwork(faster, faster_map, profile, cache), std::logic_error);
}

}  // namespace
}  // namespace glam
