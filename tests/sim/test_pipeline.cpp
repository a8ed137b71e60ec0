// Pipeline parallelism: the 1F1B schedule the simulator plays, the work and memory each stage holds,
// and the ranks each stage's collectives run over.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "engine/step_simulator.h"
#include "plan/default_plan.h"
#include "support/run_command.h"
#include "support/expect_error.h"

namespace glam {
namespace {

namespace fs = std::filesystem;

// glam-1.7b (24 dense blocks) on 64 H100s: 2 replicas of 4 stages of 8-way tensor parallelism.
SimulationInput pipeline_input(int64_t microbatches, int64_t pp = 4) {
  Cluster c = load_cluster("dgx-h100-64");
  ParallelPlan p;
  p.tp = 8, p.pp = pp, p.dp = 64 / (8 * pp), p.ep = 1, p.batch_tokens = 1 << 20, p.microbatches = microbatches;
  return SimulationInput{load_model("glam-1.7b"), c, p, {}, Fidelity::kAnalytical, default_profile("h100")};
}

// One 8-GPU node whose links cost nothing, so a pipeline's timing is its schedule's alone.
Cluster free_links_node() {
  const fs::path path = fs::temp_directory_path() / ("glam-pipeline-node-" + std::to_string(::getpid()) + ".toml");
  std::string text = testing::read_whole_file(fs::path(GLAM_SOURCE_DIR) / "topologies/dgx-h100-8.toml");
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"bandwidth_Bps = 450e9", "bandwidth_Bps = 1e15"}, {"latency_s = 0.3e-6", "latency_s = 0"}})
    text.replace(text.find(from), from.size(), to);
  std::ofstream(path) << text;
  Cluster c = load_cluster(path.string());
  fs::remove(path);
  return c;
}

int microbatch_of(const std::string& id) {
  return id.rfind("mb", 0) == 0 ? std::stoi(id.substr(2, id.find('.') - 2)) : 0;
}

// One micro-batch's forward or backward pass through one chunk of blocks: its ops on the stage's stream.
struct Chunk {
  double start = 1e300, end = 0, busy = 0;
};
using PassKey = std::tuple<int, bool, int, int>;  // stage, forward, micro-batch, chunk

// The passes of a step whose `blocks` are cut into `chunks` (pp x virtual stages), chunk c on stage
// c mod pp.
std::map<PassKey, Chunk> passes_of(const StepResult& r, int blocks, int chunks) {
  std::map<PassKey, Chunk> passes;
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const StepOp& op = r.graph.ops[i];
    const bool on_stream = op.kind != OpKind::kCollective || op.blocking;
    // The step's tail (the tied embedding's sync, the optimizer) follows the pipeline.
    if (!on_stream || op.phase == StepPhase::kOptimizer || op.name == "embed_tie_allreduce") continue;
    const bool input_end = op.name == "embed" || op.name == "embed_tp_allreduce";
    int chunk = op.layer >= 0 ? op.layer / (blocks / chunks) : input_end ? 0 : chunks - 1;
    // Interleaved sends and receives name their chunk; plain ones are their stage's.
    if (op.name == "pp_send" || op.name == "pp_recv_allgather")
      chunk = op.id.find(".c") != std::string::npos ? std::stoi(op.id.substr(op.id.find(".c") + 2)) : op.stage;
    EXPECT_EQ(chunk % r.graph.stages, op.stage) << op.id;
    Chunk& c = passes[{op.stage, op.phase == StepPhase::kForward, microbatch_of(op.id), chunk}];
    c.start = std::min(c.start, r.timing[i].start_s);
    c.end = std::max(c.end, r.timing[i].end_s);
    c.busy += r.timing[i].duration();
  }
  return passes;
}

// Each stage runs pp - s - 1 forward passes, then one forward and one backward in turn, then the
// backward passes left; a pass starts when the stage is free and its input has arrived (the previous
// stage's forward, or the next stage's backward, send included), and runs without a gap.
TEST(Pipeline, StagesFollowOneForwardOneBackward) {
  for (int64_t m : {2, 4, 8}) {
    const SimulationInput in = pipeline_input(m);
    const StepResult r = simulate_step(in);
    const int p = 4;
    const auto chunks = passes_of(r, 24, p);  // chunk s is stage s's blocks
    ASSERT_EQ(chunks.size(), static_cast<size_t>(2 * p * m));
    for (int s = 0; s < p; ++s) {
      std::vector<std::pair<bool, int>> program;
      const int warmup = std::min<int>(p - s - 1, static_cast<int>(m));
      for (int i = 0; i < warmup; ++i) program.push_back({true, i});
      for (int i = 0; i < m - warmup; ++i) program.push_back({true, warmup + i}), program.push_back({false, i});
      for (int i = static_cast<int>(m) - warmup; i < m; ++i) program.push_back({false, i});
      double free_at = 0;
      int in_flight = 0, most_in_flight = 0;
      for (const auto& [forward, mb] : program) {
        const Chunk& c = chunks.at({s, forward, mb, s});
        double input = 0;
        if (forward && s > 0) input = chunks.at({s - 1, true, mb, s - 1}).end;
        if (!forward && s + 1 < p) input = chunks.at({s + 1, false, mb, s + 1}).end;
        const double tol = 1e-9 * r.step_time_s;
        EXPECT_NEAR(c.start, std::max(free_at, input), tol) << "stage " << s << (forward ? " F" : " B") << mb << ", m " << m;
        EXPECT_NEAR(c.end - c.start, c.busy, tol) << "stage " << s << (forward ? " F" : " B") << mb;
        free_at = c.end;
        in_flight += forward ? 1 : -1;
        most_in_flight = std::max(most_in_flight, in_flight);
      }
      EXPECT_EQ(most_in_flight, std::min<int>(p - s, static_cast<int>(m))) << "stage " << s;
      EXPECT_LE(free_at, r.step_time_s);
    }
  }
}

// The interleaved schedule (Narayanan et al. 2021; Megatron-LM's): chunk c of the blocks on stage
// c mod pp; stage s runs (pp - s - 1) x 2 + (v - 1) x pp forward passes first, micro-batches in groups
// of pp through each of its chunks in turn (backward: the chunks in reverse), then one forward and one
// backward in turn. A pass starts when its stage is free and the previous chunk's forward (the next
// chunk's backward) has arrived.
TEST(Pipeline, StagesFollowTheInterleavedSchedule) {
  for (const int m : {4, 8}) {
    SCOPED_TRACE("micro-batches " + std::to_string(m));
    const int p = 4, v = 2;
    SimulationInput in = pipeline_input(m);
    in.plan.virtual_stages = v;
    const StepResult r = simulate_step(in);
    const auto passes = passes_of(r, 24, p * v);
    ASSERT_EQ(passes.size(), static_cast<size_t>(2 * m * p * v));
    for (int s = 0; s < p; ++s) {
      auto pass = [&](bool forward, int k) {
        const int in_group = k % (p * v), local = forward ? in_group / p : v - 1 - in_group / p;
        return PassKey{s, forward, k / (p * v) * p + in_group % p, local * p + s};
      };
      // One group of micro-batches (m = pp): every forward pass first, as Megatron-LM runs it.
      const int warmup = m == p ? m * v : (p - s - 1) * 2 + (v - 1) * p;
      std::vector<PassKey> program;
      for (int k = 0; k < warmup; ++k) program.push_back(pass(true, k));
      for (int k = 0; k < m * v - warmup; ++k) program.push_back(pass(true, warmup + k)), program.push_back(pass(false, k));
      for (int k = m * v - warmup; k < m * v; ++k) program.push_back(pass(false, k));
      double free_at = 0;
      int in_flight = 0, most_in_flight = 0;
      for (const auto& key : program) {
        const auto [stage, forward, mb, chunk] = key;
        const Chunk& c = passes.at(key);
        double input = 0;
        if (forward && chunk > 0) input = passes.at({(chunk - 1) % p, true, mb, chunk - 1}).end;
        if (!forward && chunk < p * v - 1) input = passes.at({(chunk + 1) % p, false, mb, chunk + 1}).end;
        const double tol = 1e-9 * r.step_time_s;
        EXPECT_NEAR(c.start, std::max(free_at, input), tol) << "stage " << s << (forward ? " F" : " B") << mb << " chunk " << chunk;
        EXPECT_NEAR(c.end - c.start, c.busy, tol);
        free_at = c.end;
        in_flight += forward ? 1 : -1;
        most_in_flight = std::max(most_in_flight, in_flight);
      }
      EXPECT_EQ(most_in_flight, std::min(warmup + 1, m * v)) << "stage " << s;
    }
    // The last stage's forward sends go on to the first stage (the ring's wrap).
    bool wraps = false;
    for (size_t i = 0; i < r.graph.ops.size(); ++i) wraps |= r.graph.ops[i].name == "pp_send" && r.graph.ops[i].stage == p - 1 &&
                                                            r.graph.ops[i].phase == StepPhase::kForward;
    EXPECT_TRUE(wraps);
  }
}

// Balanced stages (a small vocabulary, so the ends weigh no more than the middle) with sends that cost
// nothing: glam-1.7b over 4 stages of one GPU, 2 replicas.
StepResult balanced_pipeline(int64_t microbatches, int64_t virtual_stages) {
  SimulationInput in = pipeline_input(microbatches);
  in.cluster = free_links_node();
  in.plan.dp = 2, in.plan.tp = 1, in.plan.virtual_stages = virtual_stages;
  in.model.vocab_size = 256;
  return simulate_step(in);
}

// The bubble's share of the pipeline: the step less the optimizer after the pipeline has drained.
double bubble_share(const StepResult& r) {
  double optimizer = 0;
  for (size_t i = 0; i < r.graph.ops.size(); ++i)
    if (r.graph.ops[i].phase == StepPhase::kOptimizer && r.graph.ops[i].stage == r.busiest_stage)
      optimizer = r.timing[i].duration();
  return r.pipeline_bubble_s / (r.step_time_s - optimizer);
}

// On balanced stages with free sends the bubble takes the textbook (p - 1) / (m + p - 1) of the pipeline (the step less the
// optimizer after it has drained), within 1%: the ends' embedding and head still weigh a little.
TEST(Pipeline, BubbleIsTheFillAndDrainOfOneForwardOneBackward) {
  double previous = 1;
  for (int64_t m : {4, 16, 64}) {
    const StepResult r = balanced_pipeline(m, 1);
    const double textbook = 3.0 / static_cast<double>(m + 3);
    EXPECT_NEAR(bubble_share(r), textbook, 0.01 * textbook) << "m " << m;
    EXPECT_LT(r.pipeline_bubble_s / r.step_time_s, previous);
    previous = r.pipeline_bubble_s / r.step_time_s;
    EXPECT_NEAR(r.step_time_s, r.compute_s + r.exposed_comm_s + r.pipeline_bubble_s, 1e-9 * r.step_time_s);
    EXPECT_GE(r.exposed_comm_s, 0);
  }
}

// The tied embedding's copies on the first and last stage are summed after each end has reduced its
// gradient over dp, by one all-reduce both ends run (so neither end counts it as bubble).
TEST(Pipeline, TiedEmbeddingSyncFollowsBothEndsDataParallelSums) {
  const SimulationInput in = pipeline_input(4);
  ASSERT_TRUE(in.model.tied_embeddings);
  const StepResult r = simulate_step(in);
  std::map<int, double> reduced, tie_start, tie_end;
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const StepOp& op = r.graph.ops[i];
    if (op.name == "embed_grad_allreduce") reduced[op.stage] = r.timing[i].end_s;
    if (op.name == "embed_tie_allreduce") tie_start[op.stage] = r.timing[i].start_s, tie_end[op.stage] = r.timing[i].end_s;
  }
  ASSERT_EQ(reduced.size(), 2u);  // dp = 2: both ends reduce their copy
  ASSERT_EQ(tie_start.size(), 2u);
  EXPECT_GE(tie_start[0], std::max(reduced[0], reduced[3]));
  EXPECT_DOUBLE_EQ(tie_start[0], tie_start[3]);
  EXPECT_DOUBLE_EQ(tie_end[0], tie_end[3]);
  EXPECT_GT(tie_end[0], tie_start[0]);
}

// Interleaving v chunks per stage shrinks the bubble v-fold: ((p - 1) / v) / (m + (p - 1) / v) of the
// pipeline on balanced stages with free sends, and holds 1 + (p - 1) / (p v) times the activations on
// the first stage (Korthikanti et al. 2022), with the same weights.
TEST(Pipeline, InterleavingShrinksTheBubbleAndGrowsTheActivations) {
  for (int64_t v : {1, 2, 3}) {
    const double fill = 3.0 / static_cast<double>(v), textbook = fill / (16 + fill);
    EXPECT_NEAR(bubble_share(balanced_pipeline(16, v)), textbook, 0.01 * textbook) << "v " << v;
  }
  const ModelConfig m = load_model("glam-64b-64e");  // 64 blocks: chunks of 8 (4 MoE, 4 dense) for v = 2
  ParallelPlan p;
  p.dp = 16, p.tp = 16, p.pp = 4, p.ep = 16, p.batch_tokens = 1 << 20, p.microbatches = 16;
  const MemoryFootprint plain = plan_memory(m, p);
  p.virtual_stages = 2;
  const MemoryFootprint interleaved = plan_memory(m, p);
  EXPECT_DOUBLE_EQ(interleaved.weights_bytes, plain.weights_bytes);
  EXPECT_NEAR(interleaved.activations_bytes, plain.activations_bytes * (1 + 3.0 / 8), 1e-9 * plain.activations_bytes);
}

// Every stage runs its blocks and no other; together they do the work of one stage-less pass.
TEST(Pipeline, StagesSplitTheBlocksAndKeepTheWork) {
  const ModelConfig m = load_model("glam-8b-64e");  // 32 blocks, MoE every other
  StepShape one;
  one.tokens_per_rank = 1 << 16, one.dp = 8, one.ep = 8, one.tp = 2, one.microbatches = 8;
  one.shard_weights = one.recompute = true;
  StepShape four = one;
  four.pp = 4;
  const StepGraph flat = build_step_graph(m, one), piped = build_step_graph(m, four);
  auto work = [](const StepGraph& g) {
    double flops = 0;
    for (const StepOp& op : g.ops)
      if (op.phase != StepPhase::kOptimizer) flops += op.flops;
    return flops;
  };
  EXPECT_NEAR(work(piped), work(flat), 1e-9 * work(flat));
  EXPECT_NEAR(piped.model_flops * 4, flat.model_flops, 1e-9 * flat.model_flops);
  std::set<std::string> ids;
  for (size_t i = 0; i < piped.ops.size(); ++i) {
    const StepOp& op = piped.ops[i];
    EXPECT_TRUE(ids.insert(op.id).second) << "duplicate id " << op.id;
    for (int d : op.deps) EXPECT_LT(d, static_cast<int>(i)) << op.id;
    if (op.layer >= 0) {
      EXPECT_EQ(op.stage, op.layer / 8) << op.id;
    }
    if (op.name == "embed" || op.name == "logits") {
      EXPECT_EQ(op.stage, op.name == "embed" ? 0 : 3) << op.id;
    }
  }
  // Interleaved (8 chunks of 4 blocks, 2 per stage): the same work, ids
  // still unique, dependencies still backwards, chunk c on stage c mod 4, a send per chunk boundary
  // and micro-batch each way.
  four.virtual_stages = 2;
  const StepGraph interleaved = build_step_graph(m, four);
  EXPECT_NEAR(work(interleaved), work(flat), 1e-9 * work(flat));
  std::set<std::string> interleaved_ids;
  int interleaved_sends = 0;
  for (size_t i = 0; i < interleaved.ops.size(); ++i) {
    const StepOp& op = interleaved.ops[i];
    EXPECT_TRUE(interleaved_ids.insert(op.id).second) << "duplicate id " << op.id;
    for (int d : op.deps) EXPECT_LT(d, static_cast<int>(i)) << op.id;
    if (op.layer >= 0) {
      EXPECT_EQ(op.stage, op.layer / 4 % 4) << op.id;
    }
    interleaved_sends += op.name == "pp_send" ? 1 : 0;
  }
  EXPECT_EQ(interleaved_sends, 2 * (4 * 2 - 1) * 8);
  // Each stage ends with its own optimizer; sends go forward from stages 0-2 and back from 1-3. Each
  // send carries a tp rank's slice, which the receiving stage's tp group gathers whole first: its
  // pass's first op on the stream, waiting for that send.
  std::map<int, int> optimizers, sends_forward, sends_back, gathers_forward, gathers_back;
  for (size_t i = 0; i < piped.ops.size(); ++i) {
    const StepOp& op = piped.ops[i];
    if (op.phase == StepPhase::kOptimizer) ++optimizers[op.stage];
    if (op.name == "pp_send") ++(op.phase == StepPhase::kForward ? sends_forward : sends_back)[op.stage];
    if (op.name != "pp_recv_allgather") continue;
    ++(op.phase == StepPhase::kForward ? gathers_forward : gathers_back)[op.stage];
    EXPECT_EQ(op.axis, CommAxis::kTensor);
    EXPECT_EQ(op.collective, CollectiveKind::kAllGather);
    EXPECT_TRUE(op.blocking);
    ASSERT_EQ(op.deps.size(), 1u) << op.id;
    const StepOp& send = piped.ops[static_cast<size_t>(op.deps[0])];
    EXPECT_EQ(send.name, "pp_send") << op.id;
    EXPECT_EQ(send.stage, op.stage + (op.phase == StepPhase::kForward ? -1 : 1)) << op.id;
    EXPECT_DOUBLE_EQ(op.comm_bytes, send.comm_bytes * 2) << op.id;  // tp = 2
  }
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(optimizers[s], 1);
    EXPECT_EQ(sends_forward[s], s < 3 ? 8 : 0) << s;
    EXPECT_EQ(sends_back[s], s > 0 ? 8 : 0) << s;
    EXPECT_EQ(gathers_forward[s], s > 0 ? 8 : 0) << s;
    EXPECT_EQ(gathers_back[s], s < 3 ? 8 : 0) << s;
  }
  // Without tensor parallelism a send carries whole activations: nothing to gather.
  StepShape no_tp = four;
  no_tp.tp = 1;
  for (const StepOp& op : build_step_graph(m, no_tp).ops) EXPECT_NE(op.name, "pp_recv_allgather");
}

// The stages' weights add up to the model's, the tied embedding counted on both ends; the first
// stage holds min(pp, m) micro-batches of activations, and the plan's footprint is the worst stage's.
TEST(Pipeline, MemoryIsTheWorstStages) {
  const ModelConfig m = load_model("glam-64b-64e");
  auto blocks = [](int64_t first, int64_t count) {
    std::vector<int64_t> out;
    for (int64_t l = first; l < first + count; ++l) out.push_back(l);
    return out;
  };
  ShardingForMemory whole;
  whole.tokens_per_chip = 4096;
  const MemoryFootprint all = memory_per_chip(m, whole);
  const double embedding_bytes =
      static_cast<double>(m.vocab_size * m.d_model * ModelConfig::precision_bytes(m.weight_precision));
  double weights = 0;
  std::vector<MemoryFootprint> stage(4);
  for (int s = 0; s < 4; ++s) {
    ShardingForMemory sh = whole;
    sh.blocks_held = blocks(16 * s, 16), sh.input_end = s == 0, sh.output_end = s == 3;
    sh.activation_microbatches = std::min(4 - s, 8);
    stage[static_cast<size_t>(s)] = memory_per_chip(m, sh);
    weights += stage[static_cast<size_t>(s)].weights_bytes;
  }
  EXPECT_NEAR(weights, all.weights_bytes + embedding_bytes, 1e-9 * weights);
  const double logits = static_cast<double>(m.vocab_size) * 4 * 4096;
  // Stage 0 holds four micro-batches of a quarter of the blocks: the whole model's block activations.
  EXPECT_NEAR(stage[0].activations_bytes, all.activations_bytes - logits, 1e-9 * all.activations_bytes);
  EXPECT_NEAR(stage[3].activations_bytes, (all.activations_bytes - logits) / 4 + logits, 1e-9 * all.activations_bytes);

  ParallelPlan p;  // 1,024 chips: 16 replicas of 4 stages of 16-way tensor parallelism
  p.dp = 16, p.tp = 16, p.pp = 4, p.ep = 16, p.batch_tokens = 1 << 20, p.microbatches = 8;
  ShardingForMemory sh;
  sh.dense_shards = 16, sh.expert_shards = 16 * 16, sh.tp = 16;  // tp, ep x tp
  sh.tokens_per_chip = p.tokens_per_rank() / 8;
  double worst = 0;
  for (int s = 0; s < 4; ++s) {
    sh.blocks_held = blocks(16 * s, 16), sh.input_end = s == 0, sh.output_end = s == 3;
    sh.activation_microbatches = std::min(4 - s, 8);
    worst = std::max(worst, memory_per_chip(m, sh).total_bytes());
  }
  EXPECT_DOUBLE_EQ(plan_memory(m, p).total_bytes(), worst);
}

// A stage's groups (tensor, expert, data) stay inside the stage; pipeline groups take one chip of
// each stage, in stage order; on a torus each stage is a compact block.
TEST(Pipeline, RanksOfAStageStayTogether) {
  for (const char* id : {"dgx-h100-64", "tpu-v4-64"}) {
    const Cluster c = load_cluster(id);
    ParallelPlan p;
    p.dp = 8, p.ep = 8, p.tp = 2, p.pp = 4, p.batch_tokens = 1 << 20;
    RankMap ranks(p, c);
    auto stage_of = [&](int chip) {
      for (int64_t r = 0; r < p.chips(); ++r)
        if (ranks.chip_of_rank(r) == chip) return static_cast<int>(r / (p.dp * p.tp));
      return -1;
    };
    for (CommAxis axis : {CommAxis::kTensor, CommAxis::kExpert, CommAxis::kData, CommAxis::kExpertData}) {
      std::set<int> seen;
      for (const auto& g : ranks.groups(axis))
        for (int chip : g) {
          EXPECT_EQ(stage_of(chip), stage_of(g.front())) << id << " " << axis_name(axis);
          EXPECT_TRUE(seen.insert(chip).second);
        }
      EXPECT_EQ(seen.size(), 64u);
    }
    const auto pipes = ranks.groups(CommAxis::kPipeline);
    EXPECT_EQ(pipes.size(), 16u);
    std::set<int> seen;
    for (const auto& g : pipes) {
      ASSERT_EQ(g.size(), 4u);
      for (int s = 0; s < 4; ++s) EXPECT_EQ(stage_of(g[static_cast<size_t>(s)]), s) << id;
      seen.insert(g.begin(), g.end());
    }
    EXPECT_EQ(seen.size(), 64u);
    for (const auto& g : ranks.groups(CommAxis::kPipelineEnds)) {
      ASSERT_EQ(g.size(), 2u);
      EXPECT_EQ(stage_of(g[0]), 0);
      EXPECT_EQ(stage_of(g[1]), 3);
    }
    if (!c.torus_dims().empty()) {  // 4x4x4: each stage of 16 chips is a 4x4 block along one axis
      for (int s = 0; s < 4; ++s) {
        std::set<int> xs, ys, zs;
        for (int64_t r = s * 16; r < (s + 1) * 16; ++r) {
          auto xyz = c.torus_coords(ranks.chip_of_rank(r));
          xs.insert(xyz[0]), ys.insert(xyz[1]), zs.insert(xyz[2]);
        }
        EXPECT_EQ(xs.size() * ys.size() * zs.size(), 16u) << "stage " << s << " is not a block";
      }
    }
  }
}

// On a torus the stages follow a snake through their grid of blocks: each stage's neighbour in the
// pipeline is the next block along one dimension, so every send crosses one block's width. Row-major
// order would send from stage 1 to stage 2 of a 2 x 4 grid diagonally.
TEST(Pipeline, ConsecutiveStagesAreNeighbouringBlocks) {
  struct Case {
    const char* cluster;
    int64_t dp, tp, pp;
  };
  for (const Case& k : {Case{"tpu-v4-1024", 16, 8, 8}, Case{"tpu-v4-64", 4, 2, 8}, Case{"tpu-v4-256", 16, 4, 4},
                        Case{"tpu-v4-4096", 64, 8, 8}, Case{"tpu-v4-4096", 16, 16, 16}}) {
    const Cluster c = load_cluster(k.cluster);
    ParallelPlan p;
    p.dp = k.dp, p.ep = 1, p.tp = k.tp, p.pp = k.pp, p.batch_tokens = 1 << 20;
    const RankMap ranks(p, c);
    const std::string where = std::string(k.cluster) + " pp " + std::to_string(k.pp) + " (" + ranks.describe() + ")";
    const int64_t per_stage = p.dp * p.tp;
    const auto& dims = c.torus_dims();
    // A stage's extent in each dimension: the block width a step to the next block crosses.
    std::vector<std::set<int>> coords(dims.size());
    for (int64_t r = 0; r < per_stage; ++r) {
      const auto xyz = c.torus_coords(ranks.chip_of_rank(r));
      for (size_t d = 0; d < dims.size(); ++d) coords[d].insert(xyz[d]);
    }
    for (int64_t s = 0; s + 1 < p.pp; ++s)
      for (int64_t r = s * per_stage; r < (s + 1) * per_stage; ++r) {
        const auto a = c.torus_coords(ranks.chip_of_rank(r)), b = c.torus_coords(ranks.chip_of_rank(r + per_stage));
        int dims_moved = 0;
        for (size_t d = 0; d < a.size(); ++d) {
          if (a[d] == b[d]) continue;
          ++dims_moved;
          const int step = std::abs(a[d] - b[d]), around = std::min(step, dims[d] - step);
          EXPECT_EQ(around, static_cast<int>(coords[d].size())) << where << ", rank " << r << ", dimension " << d;
        }
        EXPECT_EQ(dims_moved, 1) << where << ", rank " << r << ", stage " << s << " to " << s + 1;
      }
  }
}

TEST(Pipeline, ValidationNamesTheProblem) {
  const ModelConfig m = load_model("glam-1.7b");
  const Cluster c = load_cluster("dgx-h100-64");
  ParallelPlan p;
  p.dp = 8, p.tp = 8, p.pp = 1, p.batch_tokens = 1 << 20;
  EXPECT_NO_THROW(validate_plan(p, m, c));
  p.pp = 2;
  const std::string too_many = testing::error_message_of<UsageError>([&] { validate_plan(p, m, c); });
  EXPECT_NE(too_many.find("dp x tp x pp = 8 x 8 x 2 = 128"), std::string::npos) << too_many;
  p.dp = 1, p.tp = 8, p.pp = 8;  // 24 blocks: 8 stages of 3
  EXPECT_NO_THROW(validate_plan(p, m, c));
  p.dp = 4, p.tp = 1, p.pp = 16;
  const std::string stages = testing::error_message_of<UsageError>([&] { validate_plan(p, m, c); });
  EXPECT_NE(stages.find("pp = 16 must divide the 24 blocks"), std::string::npos) << stages;
  p.dp = 2, p.tp = 8, p.pp = 4, p.microbatches = 8;
  for (const auto& [v, microbatches, expected] : std::vector<std::tuple<int64_t, int64_t, std::string>>{
           {4, 8, "pp x virtual_stages = 4 x 4 must divide the 24 blocks"},
           {2, 6, "groups of pp = 4"},
           {2, 8, ""}}) {
    p.virtual_stages = v, p.microbatches = microbatches;
    try {
      validate_plan(p, m, c);
      EXPECT_EQ(expected, "") << "v " << v << " accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      EXPECT_NE(expected, "") << e.what();
    }
  }
  p.dp = 8, p.pp = 1, p.virtual_stages = 2;
  EXPECT_THROW(validate_plan(p, m, c), UsageError);  // chunks of stages, without stages
}

// When the user fixes dp and tp to a quarter of the chips, the chooser's only layouts have 4 stages.
TEST(Pipeline, ChooserFillsTheChipsWithStages) {
  SimulationInput in = pipeline_input(1);
  ParallelPlan base{};
  base.dp = 2, base.tp = 8, base.batch_tokens = 1 << 20;
  base.pp = base.microbatches = 0;  // free
  PlanChoice choice = choose_plan(in, base, false);
  EXPECT_EQ(choice.plan.pp, 4);
  EXPECT_EQ(choice.plan.microbatches, 16);  // four per stage
  for (const LayoutTrial& t : choice.trials) EXPECT_EQ(t.plan.pp, 4);
  // A stage count the user gives is kept, past the 8 the chooser tries on its own.
  in.model = load_model("glam-8b");  // 32 blocks
  base = ParallelPlan{};
  base.pp = 16, base.batch_tokens = 1 << 20, base.dp = base.tp = base.microbatches = 0;
  EXPECT_EQ(choose_plan(in, base, true).plan.pp, 16);
}

}  // namespace
}  // namespace glam
