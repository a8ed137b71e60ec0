// The StepGraph: op ids, FLOP totals against the model accounting, collectives per plan.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "accounting.h"
#include "op_names.h"
#include "step_graph.h"

namespace glam {
namespace {

StepShape shape(int64_t tokens, int64_t dp, int64_t ep, int64_t tp) {
  StepShape s;
  s.tokens_per_rank = tokens, s.dp = dp, s.ep = ep, s.tp = tp;
  return s;
}

int count(const StepGraph& g, const std::string& name) {
  int n = 0;
  for (const auto& op : g.ops) n += op.name == name;
  return n;
}

// op_names.h lists exactly the compute ops a step has, with the phases it runs them in: an MoE
// model with dense blocks too has every one of them, but attention's three ops or the fused one.
TEST(StepGraph, ComputeOpsAreTheNamedOnes) {
  for (bool fused : {false, true}) {
    StepShape s = shape(8192, 64, 64, 2);
    s.fused_attention = fused;
    std::set<std::string> made, listed;
    for (const auto& op : build_step_graph(load_model("glam-8b-64e"), s).ops)
      if (op.kind != OpKind::kCollective) made.insert(op.name + "." + phase_name(op.phase));
    const std::set<std::string_view> left_out =
        fused ? std::set<std::string_view>{op_name::kAttnScores, op_name::kAttnSoftmax, op_name::kAttnContext}
              : std::set<std::string_view>{op_name::kAttnFused};
    for (std::string_view name : op_name::compute_ops())
      if (!left_out.count(name))
        for (std::string_view phase : op_name::phases_of(name))
          listed.insert(std::string(name) + "." + std::string(phase));
    EXPECT_EQ(made, listed) << fused;
  }
}

// Fused attention (FlashAttention-2): the products of the key blocks up to the diagonal only (blocks
// of 128: 9 of 16 for 1,024 positions per query block row, (8 + 1) / 16 of the square), four more
// products and the recomputed scores in the backward pass, and no [S, S] scores in memory: q, k, v
// and the context, their gradients, and float32 row statistics.
TEST(StepGraph, FusedAttentionComputesTheCausalBlocksAndKeepsTheScoresOnChip) {
  const ModelConfig m = load_model("glam-1.7b");
  ASSERT_EQ(m.seq_len, 1024);
  StepShape plain = shape(8192, 1, 1, 2), fused = plain;
  fused.fused_attention = true;
  const double T = 8192, tp = 2, e = 2, A = static_cast<double>(m.attention_width()),
               heads = static_cast<double>(m.heads);
  std::map<std::string, const StepOp*> a, b;
  const StepGraph ga = build_step_graph(m, plain), gb = build_step_graph(m, fused);
  for (const auto& op : ga.ops) a[op.id] = &op;
  for (const auto& op : gb.ops) b[op.id] = &op;
  ASSERT_TRUE(b.count("L0.attn_fused.fwd") && b.count("L0.attn_fused.bwd"));
  EXPECT_FALSE(b.count("L0.attn_scores.fwd"));
  const double full = a.at("L0.attn_scores.fwd")->flops + a.at("L0.attn_context.fwd")->flops;
  EXPECT_DOUBLE_EQ(b.at("L0.attn_fused.fwd")->flops, full * 9 / 16);
  EXPECT_DOUBLE_EQ(b.at("L0.attn_fused.bwd")->flops, 2.5 * full * 9 / 16);
  EXPECT_EQ(b.at("L0.attn_fused.fwd")->kind, OpKind::kAttention);
  EXPECT_DOUBLE_EQ(b.at("L0.attn_fused.fwd")->bytes, 4 * T * A / tp * e + T * heads / tp * 4);
  // backward: the context and its gradient, then q, k, v and the gradient again; dq, dk, dv written;
  // dq accumulated in float32; the logsumexp read, the row dot products written and read
  EXPECT_DOUBLE_EQ(b.at("L0.attn_fused.bwd")->bytes, 9 * T * A / tp * e + 2 * T * A / tp * 4 + 3 * T * heads / tp * 4);
  const double materialised = a.at("L0.attn_scores.bwd")->bytes + a.at("L0.attn_softmax.bwd")->bytes +
                              a.at("L0.attn_context.bwd")->bytes;
  EXPECT_LT(b.at("L0.attn_fused.bwd")->bytes, materialised / 5);
  // The rest of the step, and the model FLOPs an MFU divides by, are the same.
  EXPECT_EQ(ga.ops.size(), gb.ops.size() + 2 * 2 * static_cast<size_t>(m.layers));
  EXPECT_DOUBLE_EQ(ga.model_flops, gb.model_flops);
  EXPECT_DOUBLE_EQ(a.at("L3.ffn_in.bwd")->flops, b.at("L3.ffn_in.bwd")->flops);
}

TEST(StepGraph, IdsAreUniqueAndFollowTheScheme) {
  ModelConfig m = load_model("glam-8b-64e");
  StepGraph g = build_step_graph(m, shape(8192, 64, 64, 2));
  std::set<std::string> ids;
  for (const auto& op : g.ops) EXPECT_TRUE(ids.insert(op.id).second) << "duplicate " << op.id;
  EXPECT_TRUE(ids.count("L0.attn_qkv.fwd"));
  EXPECT_TRUE(ids.count("L1.moe_dispatch_a2a.bwd"));
  EXPECT_TRUE(ids.count("L31.moe_combine_a2a.fwd"));
  EXPECT_TRUE(ids.count("logits.fwd"));
  EXPECT_TRUE(ids.count("optimizer"));
}

// glamexec's bf16 model writes a bf16 copy of the float32 master weights each step: the optimizer op
// then moves 4 + 2 more bytes per weight; nothing changes for float32 activations or for plans.
TEST(StepGraph, TheExecutorsBf16WeightCopyIsTheOptimizers) {
  auto optimizer_bytes = [](const std::string& activations, bool copy) {
    ModelConfig m = load_model("glam-1.7b");
    m.activation_precision = activations;
    StepShape s = shape(2048, 1, 1, 1);
    s.narrow_weight_copy = copy;
    for (const auto& op : build_step_graph(m, s).ops)
      if (op.name == "optimizer") return op.bytes;
    return 0.0;
  };
  ModelConfig m = load_model("glam-1.7b");
  ASSERT_EQ(m.weight_precision, "float32");
  const double weights = memory_per_chip(m, ShardingForMemory{}).weights_bytes / 4;
  EXPECT_NEAR(optimizer_bytes("bfloat16", true) - optimizer_bytes("bfloat16", false), 6 * weights, 1e-6 * weights);
  EXPECT_DOUBLE_EQ(optimizer_bytes("float32", true), optimizer_bytes("float32", false));
}

TEST(StepGraph, ForwardMatmulFlopsMatchTheAccounting) {
  ModelConfig m = load_model("glam-1.7b");
  const int64_t tokens = 4096;
  StepGraph g = build_step_graph(m, shape(tokens, 1, 1, 1));
  double matmul = 0, attention = 0;
  for (const auto& op : g.ops) {
    if (op.phase != StepPhase::kForward) continue;
    if (op.kind == OpKind::kMatmul) matmul += op.flops;
    if (op.kind == OpKind::kAttention) attention += op.flops;
  }
  FlopsPerToken f = flops_per_token(m);
  EXPECT_NEAR(matmul, f.matmul_forward * tokens, f.matmul_forward * tokens * 1e-9);
  EXPECT_NEAR(attention, f.attention_forward * tokens, 1);
  EXPECT_NEAR(g.model_flops, f.train() * tokens, f.train() * tokens * 1e-9);
}

// Bytes a product moves, by how tensor parallelism slices it: a column-sliced product reads the
// whole input and writes its slice of the output, a row-sliced one reads its slice and writes the whole
// (partial) output; attention's products read and write the heads' [S, S] scores of every sequence.
TEST(StepGraph, ProductBytesFollowTheSlicing) {
  const ModelConfig m = load_model("glam-8b-64e");
  const double T = 8192, tp = 4, e = 2, M = static_cast<double>(m.d_model), A = static_cast<double>(m.attention_width()),
               H = static_cast<double>(m.ffn_hidden), S = static_cast<double>(m.seq_len),
               heads = static_cast<double>(m.heads);
  ASSERT_EQ(ModelConfig::precision_bytes(m.activation_precision), 2);
  std::map<std::string, double> bytes;
  for (const auto& op : build_step_graph(m, shape(8192, 8, 8, 4)).ops) bytes[op.id] = op.bytes;
  EXPECT_DOUBLE_EQ(bytes.at("L0.attn_qkv.fwd"), (M * 3 * A / tp + T * (M + 3 * A / tp)) * e);
  EXPECT_DOUBLE_EQ(bytes.at("L0.attn_out.fwd"), (A * M / tp + T * (A / tp + M)) * e);
  EXPECT_DOUBLE_EQ(bytes.at("L0.ffn_out.fwd"), (H * M / tp + T * (H / tp + M)) * e);
  EXPECT_DOUBLE_EQ(bytes.at("L0.attn_scores.fwd"), (2 * T * A + T * S * heads) / tp * e);
  EXPECT_DOUBLE_EQ(bytes.at("L0.attn_context.bwd"), 2 * (2 * T * A + T * S * heads) / tp * e);
}

TEST(StepGraph, BackwardCostsTwiceTheForward) {
  ModelConfig m = load_model("glam-1.7b");
  StepGraph g = build_step_graph(m, shape(2048, 1, 1, 1));
  double fwd = 0, bwd = 0;
  for (const auto& op : g.ops) {
    if (op.kind != OpKind::kMatmul && op.kind != OpKind::kAttention) continue;
    (op.phase == StepPhase::kForward ? fwd : bwd) += op.flops;
  }
  EXPECT_DOUBLE_EQ(bwd, 2 * fwd);
}

TEST(StepGraph, CollectivesFollowThePlan) {
  ModelConfig m = load_model("glam-8b-64e");
  StepGraph dense_plan = build_step_graph(m, shape(8192, 1, 1, 1));
  EXPECT_EQ(count(dense_plan, "moe_dispatch_a2a"), 2 * 16);  // forward and backward, 16 MoE blocks
  EXPECT_EQ(count(dense_plan, "attn_tp_allreduce"), 0);
  EXPECT_EQ(count(dense_plan, "grad_allreduce"), 0);
  StepGraph tp = build_step_graph(m, shape(8192, 8, 8, 4));
  EXPECT_EQ(count(tp, "attn_tp_allreduce"), 2 * 32);
  EXPECT_EQ(count(tp, "grad_allreduce"), 32);
  EXPECT_EQ(count(tp, "expert_grad_allreduce"), 0);  // dp == ep: one copy of each expert
  StepGraph replicas = build_step_graph(m, shape(8192, 16, 8, 1));
  EXPECT_EQ(count(replicas, "expert_grad_allreduce"), 16);
}

// Sequence parallelism (Megatron-LM's): each tp all-reduce becomes an all-gather and a reduce-scatter
// of the same bytes, in both passes; the norms and the router work on 1/tp of the tokens; each tp rank
// sends 1/tp of the all-to-all; a pipeline stage keeps its received slice rather than gathering it;
// the products do not change.
TEST(StepGraph, SequenceParallelismSplitsTheTokensBetweenTheSlicedProducts) {
  ModelConfig m = load_model("glam-8b-64e");
  StepShape plain = shape(8192, 8, 8, 4), sp = plain;
  plain.pp = sp.pp = 2;
  plain.microbatches = sp.microbatches = 2;
  sp.sequence_parallel = true;
  const StepGraph a = build_step_graph(m, plain), b = build_step_graph(m, sp);
  auto total = [](const StepGraph& g, auto field, auto keep) {
    double sum = 0;
    for (const auto& op : g.ops)
      if (keep(op)) sum += field(op);
    return sum;
  };
  auto comm = [](const StepOp& op) { return op.comm_bytes; };
  auto flops = [](const StepOp& op) { return op.flops; };
  auto tensor_kind = [](CollectiveKind k) {
    return [k](const StepOp& op) {
      return op.kind == OpKind::kCollective && op.axis == CommAxis::kTensor && op.collective == k &&
             op.name != "pp_recv_allgather" && op.name != "sp_grad_allreduce";
    };
  };
  const double all_reduced = total(a, comm, tensor_kind(CollectiveKind::kAllReduce));
  ASSERT_GT(all_reduced, 0);
  EXPECT_EQ(total(b, comm, tensor_kind(CollectiveKind::kAllReduce)), 0);
  EXPECT_DOUBLE_EQ(total(b, comm, tensor_kind(CollectiveKind::kAllGather)), all_reduced);
  EXPECT_DOUBLE_EQ(total(b, comm, tensor_kind(CollectiveKind::kReduceScatter)), all_reduced);
  EXPECT_GT(count(a, "pp_recv_allgather"), 0);
  EXPECT_EQ(count(b, "pp_recv_allgather"), 0);
  auto named = [](const std::string& name) { return [name](const StepOp& op) { return op.name == name; }; };
  for (const char* split : {"attn_norm", "ffn_norm", "moe_router", "moe_permute", "moe_dispatch_a2a", "final_norm"}) {
    const auto field = std::string(split) == "moe_dispatch_a2a" ? +[](const StepOp& op) { return op.comm_bytes; }
                                                                 : +[](const StepOp& op) { return op.flops; };
    const double whole = total(a, field, named(split));
    ASSERT_GT(whole, 0) << split;
    EXPECT_DOUBLE_EQ(total(b, field, named(split)), whole / 4) << split;
  }
  // The weights whole on every tp rank (norms' scales, routers) see 1/tp of the tokens there: their
  // gradients are summed over tp, float32, once per step.
  double whole_weights = 0;
  for (int64_t l = 0; l < m.layers; ++l)
    whole_weights += (2.0 * static_cast<double>(m.d_model) +
                      (m.is_moe_layer(l) ? static_cast<double>(m.d_model * m.experts) : 0.0)) * 4;
  EXPECT_DOUBLE_EQ(total(b, comm, named("sp_grad_allreduce")), whole_weights);
  EXPECT_EQ(count(a, "sp_grad_allreduce"), 0);
  for (const char* same : {"attn_qkv", "attn_scores", "moe_expert_in", "logits"})
    EXPECT_DOUBLE_EQ(total(b, flops, named(same)), total(a, flops, named(same))) << same;
  std::set<std::string> ids;
  for (const auto& op : b.ops) EXPECT_TRUE(ids.insert(op.id).second) << "duplicate " << op.id;
  EXPECT_TRUE(ids.count("L0.attn_tp_allgather.fwd") && ids.count("L0.attn_tp_reducescatter.bwd"));
  // Without tensor parallelism there is nothing to split.
  StepShape one = shape(8192, 8, 8, 1), one_sp = one;
  one_sp.sequence_parallel = true;
  EXPECT_EQ(build_step_graph(m, one).ops.size(), build_step_graph(m, one_sp).ops.size());
}

TEST(StepGraph, ShardedWeightsAreGatheredBeforeUse) {
  ModelConfig m = load_model("glam-1.7b-64e");
  StepShape s = shape(4096, 128, 64, 1);
  s.shard_weights = true;
  StepGraph g = build_step_graph(m, s);
  EXPECT_EQ(count(g, "weight_allgather"), 2 * 24);
  EXPECT_EQ(count(g, "expert_weight_allgather"), 2 * 12);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    for (int d : g.ops[i].deps) ASSERT_LT(static_cast<size_t>(d), i) << g.ops[i].id;
    if (g.ops[i].name == "grad_allreduce") {
      EXPECT_EQ(g.ops[i].collective, CollectiveKind::kReduceScatter);
    }
  }
  // the first op of block 5's forward waits for its gather
  for (const auto& op : g.ops)
    if (op.id == "L5.attn_norm.fwd") {
      ASSERT_FALSE(op.deps.empty());
      EXPECT_EQ(g.ops[static_cast<size_t>(op.deps.front())].id, "L5.weight_allgather.fwd");
    }
  // A block's gather is issued as the previous block (in the pass's order) starts, so that it overlaps
  // all of that block, the all-to-alls and tp all-reduces inside it included: the op after it is that
  // block's first. (Before, it was issued after the previous block's last collective.)
  s.tp = 2;
  const StepGraph sliced = build_step_graph(m, s);
  for (size_t i = 0; i + 1 < sliced.ops.size(); ++i) {
    const StepOp& op = sliced.ops[i];
    if (op.name != "weight_allgather" && op.name != "expert_weight_allgather") continue;
    const int previous = op.phase == StepPhase::kForward ? op.layer - 1 : op.layer + 1;
    if (previous < 0 || previous >= m.layers) continue;
    const StepOp* next = &sliced.ops[i + 1];
    if (next->name.find("weight_allgather") != std::string::npos) next = &sliced.ops[i + 2];  // its pair
    EXPECT_EQ(next->layer, previous) << op.id << " is followed by " << next->id;
    const char* first = op.phase == StepPhase::kForward ? "attn_norm" : m.is_moe_layer(previous) ? "moe_unpermute" : "ffn_out";
    EXPECT_EQ(next->name, first) << op.id << " is followed by " << next->id;
  }
  // Micro-batches gather once per pass and phase (the recompute uses the backward pass's gather);
  // deps still point backward (the builder relies on it when it inserts a gather).
  s.microbatches = 4;
  s.recompute = true;
  StepGraph passes = build_step_graph(m, s);
  EXPECT_EQ(count(passes, "weight_allgather"), 4 * count(g, "weight_allgather"));
  for (size_t i = 0; i < passes.ops.size(); ++i)
    for (int d : passes.ops[i].deps) ASSERT_LT(static_cast<size_t>(d), i) << passes.ops[i].id;
  std::set<std::string> ids;
  for (const auto& op : passes.ops) EXPECT_TRUE(ids.insert(op.id).second) << "duplicate " << op.id;
}

// The gradients reduced over dp are the model's own: per block, the attention, its relative position
// bias, the norms, the dense FFN or the router, and the experts over their replicas; the embedding and
// the final norm's scales; as the accounting counts them.
TEST(StepGraph, GradientReductionsCoverTheAccountingsParameters) {
  // Relative position biases in the blocks, or absolute position embeddings at the input end.
  for (const std::string positions : {"relative_bias", "absolute"}) {
    ModelConfig m = load_model("glam-1.7b-64e");
    m.position_encoding = positions;
    StepShape s = shape(8192, 16, 8, 1);
    s.overlap_grad_reduction = true;
    double dense = 0, experts = 0, ends = 0;
    for (const auto& op : build_step_graph(m, s).ops) {
      if (op.name == "grad_allreduce") dense += op.comm_bytes / 4;
      if (op.name == "embed_grad_allreduce") ends += op.comm_bytes / 4;
      if (op.name == "expert_grad_allreduce") experts += op.comm_bytes / 4 * 8;  // each rank: 1/ep of them
    }
    const ParamCounts p = count_params(m);
    EXPECT_DOUBLE_EQ(dense + ends, p.attention + p.position_bias + p.norms + p.dense_ffn + p.router + p.embedding)
        << positions;
    EXPECT_DOUBLE_EQ(experts, p.experts) << positions;
    EXPECT_GT(p.position_bias, 0) << positions;
  }
}

// Sharded weights (ZeRO-3) keep only their shard of every gradient, so each micro-batch's backward
// pass reduce-scatters its own; the embedding, sharded like the blocks, is gathered for the lookup and
// the logits in each forward pass, again for the logits' input gradient, and its gradient
// reduce-scattered after each backward pass.
TEST(StepGraph, ShardedWeightsReduceEveryMicroBatchAndGatherTheEmbedding) {
  ModelConfig m = load_model("glam-1.7b");
  StepShape s = shape(8192, 8, 1, 1);
  s.shard_weights = true, s.microbatches = 4;
  const StepGraph g = build_step_graph(m, s);
  EXPECT_EQ(count(g, "grad_allreduce"), 4 * m.layers);
  EXPECT_EQ(count(g, "embed_grad_allreduce"), 4);
  EXPECT_EQ(count(g, "embed_weight_allgather"), 2 * 4);  // forward and backward of each micro-batch
  const double V = static_cast<double>(m.vocab_size), M = static_cast<double>(m.d_model);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const StepOp& op = g.ops[i];
    for (int d : op.deps) ASSERT_LT(static_cast<size_t>(d), i) << op.id;
    if (op.name == "embed_grad_allreduce") {
      EXPECT_EQ(op.collective, CollectiveKind::kReduceScatter) << op.id;
      EXPECT_DOUBLE_EQ(op.comm_bytes, (V * M + M) * 4) << op.id;  // and the final norm's scales
    }
    if (op.name == "embed_weight_allgather") {
      EXPECT_DOUBLE_EQ(op.comm_bytes, V * M * 2) << op.id;
    }
    // The lookup and both logits products wait for their pass's gather.
    if (op.name == "embed" && op.phase == StepPhase::kBackward) continue;
    if (op.name == "embed" || op.name == "logits") {
      bool waits = false;
      for (int d : op.deps) waits |= g.ops[static_cast<size_t>(d)].name == "embed_weight_allgather";
      EXPECT_TRUE(waits) << op.id;
    }
  }
  // Untied on one stage: both matrices gathered for the forward pass, the output one for the backward.
  ModelConfig untied = m;
  untied.tied_embeddings = false;
  int untied_gathers = 0;
  for (const auto& op : build_step_graph(untied, s).ops)
    if (op.name == "embed_weight_allgather") {
      ++untied_gathers;
      EXPECT_DOUBLE_EQ(op.comm_bytes, V * M * 2 * (op.phase == StepPhase::kForward ? 2 : 1)) << op.id;
    }
  EXPECT_EQ(untied_gathers, 2 * 4);
  // With pipeline stages the tied embedding's two ends sum their shards only.
  StepShape staged = s;
  staged.pp = 2;
  double tie_bytes = 0;
  for (const auto& op : build_step_graph(m, staged).ops)
    if (op.name == "embed_tie_allreduce") tie_bytes = op.comm_bytes;
  EXPECT_DOUBLE_EQ(tie_bytes, V * M * 4 / 8);
  // Whole weights reduce once, in the last micro-batch, and gather nothing.
  StepShape whole = s;
  whole.shard_weights = false;
  const StepGraph w = build_step_graph(m, whole);
  EXPECT_EQ(count(w, "grad_allreduce"), m.layers);
  EXPECT_EQ(count(w, "embed_weight_allgather"), 0);
}

double optimizer_bytes_of(const StepGraph& g) {
  for (const auto& op : g.ops)
    if (op.name == "optimizer") return op.bytes;
  return 0;
}

// Sharded weights and a sharded optimizer both leave each rank its shard to update: the optimizer
// moves 1/dp of the non-expert weights' bytes and 1/(dp/ep) of the experts'.
TEST(StepGraph, TheOptimizerUpdatesItsShard) {
  ModelConfig m = load_model("glam-1.7b");  // dense: every weight sharded over dp
  const StepShape whole = shape(4096, 16, 1, 2);
  StepShape weights = whole, optimizer = whole;
  weights.shard_weights = true;
  optimizer.shard_optimizer = true;
  const double whole_bytes = optimizer_bytes_of(build_step_graph(m, whole));
  ASSERT_GT(whole_bytes, 0);
  EXPECT_NEAR(optimizer_bytes_of(build_step_graph(m, weights)), whole_bytes / 16, 1e-9 * whole_bytes);
  EXPECT_NEAR(optimizer_bytes_of(build_step_graph(m, optimizer)), whole_bytes / 16, 1e-9 * whole_bytes);
  // Experts over their dp / ep replicas: 4 here, against 16 for the attention and the dense FFNs.
  ModelConfig moe = load_model("glam-1.7b-64e");
  StepShape moe_whole = shape(4096, 16, 4, 1), moe_sharded = moe_whole;
  moe_sharded.shard_optimizer = true;
  const double moe_bytes = optimizer_bytes_of(build_step_graph(moe, moe_whole));
  const double moe_shard = optimizer_bytes_of(build_step_graph(moe, moe_sharded));
  EXPECT_LT(moe_shard, moe_bytes / 4);
  EXPECT_GT(moe_shard, moe_bytes / 16);
}

// The distributed optimizer (ZeRO-1): gradients reduce-scattered, and each block's updated weights
// all-gathered once per step, in the precision the products read, before the first micro-batch's
// forward pass uses them.
TEST(StepGraph, AShardedOptimizerGathersTheUpdatedWeightsOncePerStep) {
  ModelConfig m = load_model("glam-1.7b-64e");
  ASSERT_EQ(m.weight_precision, "float32");
  ASSERT_EQ(m.activation_precision, "bfloat16");
  StepShape s = shape(8192, 16, 4, 1);
  s.shard_optimizer = true, s.narrow_weight_copy = true, s.microbatches = 2;
  const StepGraph g = build_step_graph(m, s);
  EXPECT_EQ(count(g, "param_allgather"), m.layers);
  EXPECT_EQ(count(g, "expert_param_allgather"), m.layers / 2);
  EXPECT_EQ(count(g, "embed_param_allgather"), 1);
  EXPECT_EQ(count(g, "weight_allgather"), 0);
  double gathered = 0, reduced = 0;
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const StepOp& op = g.ops[i];
    for (int d : op.deps) ASSERT_LT(static_cast<size_t>(d), i) << op.id;
    if (op.name.find("grad_allreduce") != std::string::npos && op.axis != CommAxis::kTensor) {
      EXPECT_EQ(op.collective, CollectiveKind::kReduceScatter) << op.id;
    }
    if (op.name.find("param_allgather") == std::string::npos) continue;
    EXPECT_EQ(op.collective, CollectiveKind::kAllGather) << op.id;
    EXPECT_FALSE(op.blocking) << op.id;
    EXPECT_EQ(op.id.rfind("mb", 0), std::string::npos) << op.id << ": only the first micro-batch gathers";
    if (op.name == "param_allgather") gathered += op.comm_bytes;
  }
  for (const auto& op : g.ops)
    if (op.name == "grad_allreduce") reduced += op.comm_bytes;
  // bf16 weights gathered, float32 gradients reduced: half the bytes.
  EXPECT_NEAR(gathered, reduced / 2, 1e-9 * reduced);
  // The first op of block 5's first forward pass waits for the block's gather; the embedding lookup
  // for the embedding's.
  for (const auto& op : g.ops) {
    if (op.id != "L5.attn_norm.fwd" && op.id != "embed.fwd") continue;
    std::set<std::string> waits_for;
    for (int d : op.deps) waits_for.insert(g.ops[static_cast<size_t>(d)].id);
    const std::set<std::string> gathers =
        op.id == "embed.fwd" ? std::set<std::string>{"embed_param_allgather.fwd"}
                             : std::set<std::string>{"L5.param_allgather.fwd", "L5.expert_param_allgather.fwd"};
    for (const auto& gather : gathers) EXPECT_TRUE(waits_for.count(gather)) << op.id << " does not wait for " << gather;
  }
  // Untied input and output matrices on one stage: both gathered, and both gradients reduced.
  auto embedding_bytes = [&](bool tied, const std::string& name) {
    ModelConfig copy = m;
    copy.tied_embeddings = tied;
    double bytes = 0;
    for (const auto& op : build_step_graph(copy, s).ops) bytes += op.name == name ? op.comm_bytes : 0;
    return bytes;
  };
  ASSERT_GT(embedding_bytes(true, "embed_param_allgather"), 0);
  EXPECT_DOUBLE_EQ(embedding_bytes(false, "embed_param_allgather"), 2 * embedding_bytes(true, "embed_param_allgather"));
  const double final_norm = static_cast<double>(m.d_model) * 4;  // reduced with the output end's matrix
  EXPECT_DOUBLE_EQ(embedding_bytes(false, "embed_grad_allreduce") - final_norm,
                   2 * (embedding_bytes(true, "embed_grad_allreduce") - final_norm));
  // Nothing to gather with one data-parallel rank, and sharded weights gather their own way.
  StepShape alone = s;
  alone.dp = 1, alone.ep = 1;
  EXPECT_EQ(count(build_step_graph(m, alone), "param_allgather"), 0);
  StepShape zero3 = s;
  zero3.shard_weights = true;
  EXPECT_EQ(count(build_step_graph(m, zero3), "param_allgather"), 0);
}

TEST(StepGraph, RecomputeRepeatsTheForwardInsideTheBackward) {
  ModelConfig m = load_model("glam-1.7b");
  StepShape s = shape(2048, 1, 1, 1);
  double plain = 0, recompute = 0;
  for (const auto& op : build_step_graph(m, s).ops) plain += op.flops;
  s.recompute = true;
  for (const auto& op : build_step_graph(m, s).ops) recompute += op.flops;
  EXPECT_GT(recompute, plain * 1.25);
  EXPECT_LT(recompute, plain * 1.40);
}

TEST(StepGraph, MicroBatchesSplitTheWorkNotTheTotal) {
  ModelConfig m = load_model("glam-8b-64e");
  StepShape one = shape(8192, 8, 8, 1), four = one;
  four.microbatches = 4;
  StepGraph a = build_step_graph(m, one), b = build_step_graph(m, four);
  double flops_a = 0, flops_b = 0, a2a_a = 0, a2a_b = 0;
  for (const auto& op : a.ops) flops_a += op.kind == OpKind::kCollective ? 0 : op.flops, a2a_a += op.collective == CollectiveKind::kAllToAll ? op.comm_bytes : 0;
  for (const auto& op : b.ops) flops_b += op.kind == OpKind::kCollective ? 0 : op.flops, a2a_b += op.collective == CollectiveKind::kAllToAll ? op.comm_bytes : 0;
  EXPECT_NEAR(flops_b, flops_a, 1e-9 * flops_a + 4 * 2e9);  // the optimizer runs once either way
  EXPECT_NEAR(a2a_b, a2a_a, 1e-9 * a2a_a);
  EXPECT_DOUBLE_EQ(a.model_flops, b.model_flops);
  EXPECT_EQ(count(b, "moe_dispatch_a2a"), 4 * count(a, "moe_dispatch_a2a"));
  EXPECT_EQ(count(b, "grad_allreduce"), count(a, "grad_allreduce"));  // reduced once per step
  EXPECT_EQ(count(b, "optimizer"), 1);
  std::set<std::string> ids;
  for (const auto& op : b.ops) EXPECT_TRUE(ids.insert(op.id).second) << op.id;
}

TEST(StepGraph, FirstLayersOnly) {
  ModelConfig m = load_model("glam-8b-64e");
  StepShape s = shape(2048, 1, 1, 1);
  s.layers_run = 2;
  StepGraph g = build_step_graph(m, s);
  for (const auto& op : g.ops) EXPECT_LT(op.layer, 2) << op.id;
  EXPECT_EQ(count(g, "moe_router"), 2);
}

}  // namespace
}  // namespace glam
