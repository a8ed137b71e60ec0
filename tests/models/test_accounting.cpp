// Parameter, FLOP and memory accounting on a model small enough to count by hand.
#include <gtest/gtest.h>

#include <algorithm>

#include "accounting.h"
#include "model_config.h"

namespace glam {
namespace {

ModelConfig tiny(int64_t experts) {
  std::string text = R"(
id = "t"
[architecture]
layers = 2
d_model = 8
ffn_hidden = 16
heads = 2
head_dim = 4
vocab_size = 100
seq_len = 32
relative_buckets = 4
[moe]
group_tokens = 32
experts = )" + std::to_string(experts) + "\n";
  return parse_model(text, "tiny.toml");
}

TEST(Accounting, DenseCountsByHand) {
  ParamCounts p = count_params(tiny(0));
  EXPECT_DOUBLE_EQ(p.embedding, 100 * 8);
  EXPECT_DOUBLE_EQ(p.attention, 2 * 4 * 8 * 8);
  EXPECT_DOUBLE_EQ(p.position_bias, 2 * 4 * 2);
  EXPECT_DOUBLE_EQ(p.norms, 5 * 8);
  EXPECT_DOUBLE_EQ(p.dense_ffn, 2 * 3 * 8 * 16);
  EXPECT_DOUBLE_EQ(p.total, 800 + 512 + 16 + 40 + 768);
  EXPECT_DOUBLE_EQ(p.activated, p.total);
  EXPECT_DOUBLE_EQ(p.total_without_embedding, p.total - 800);
}

TEST(Accounting, MoeCountsByHand) {
  ParamCounts p = count_params(tiny(4));  // block 0 dense, block 1 MoE
  EXPECT_DOUBLE_EQ(p.dense_ffn, 3 * 8 * 16);
  EXPECT_DOUBLE_EQ(p.experts, 4 * 2 * 8 * 16);
  EXPECT_DOUBLE_EQ(p.router, 8 * 4);
  EXPECT_DOUBLE_EQ(p.activated, p.total - 2 * 2 * 8 * 16);  // two of four experts are idle per token
}

TEST(Accounting, FlopsPerToken) {
  ModelConfig m = tiny(4);
  FlopsPerToken f = flops_per_token(m);
  // attention 4*64 per layer, dense FFN 384, two experts 2*256, router 32, logits 800
  const double macs = 2 * 256 + 384 + 2 * 256 + 32 + 800;
  EXPECT_DOUBLE_EQ(f.matmul_forward, 2 * macs);
  EXPECT_DOUBLE_EQ(f.attention_forward, 2 * 2 * 32 * 8 * 2);
  EXPECT_DOUBLE_EQ(f.train(), 3 * f.forward());
}

TEST(Accounting, AdafactorStateIsFactored) {
  ModelConfig m = tiny(0);
  MemoryFootprint fp = memory_per_chip(m, {});
  double expected = 0;
  for (const auto& w : weight_tensors(m))
    expected += (w.factored() ? static_cast<double>(w.rows + w.cols) : static_cast<double>(w.elements())) *
                static_cast<double>(w.copies) * 4;
  EXPECT_DOUBLE_EQ(fp.optimizer_bytes, expected);
  EXPECT_LT(fp.optimizer_bytes, fp.weights_bytes / 2);
  EXPECT_DOUBLE_EQ(fp.weights_bytes, count_params(m).total * 4);
  EXPECT_DOUBLE_EQ(fp.gradients_bytes, fp.weights_bytes);
}

TEST(Accounting, ShardingDividesMemory) {
  ModelConfig m = tiny(4);
  ShardingForMemory one;
  ShardingForMemory experts_split = one;
  experts_split.expert_shards = 4;
  MemoryFootprint a = memory_per_chip(m, one), b = memory_per_chip(m, experts_split);
  const double expert_bytes = count_params(m).experts * 4;
  EXPECT_DOUBLE_EQ(a.weights_bytes - b.weights_bytes, expert_bytes * 0.75);
  ShardingForMemory more_tokens = one;
  more_tokens.tokens_per_chip = 2 * one.tokens_per_chip;
  EXPECT_DOUBLE_EQ(memory_per_chip(m, more_tokens).activations_bytes, 2 * a.activations_bytes);
  ShardingForMemory recompute = one;
  recompute.recompute_activations = true;
  EXPECT_LT(memory_per_chip(m, recompute).activations_bytes, a.activations_bytes);
  // Tensor parallelism over 2 chips halves the products' weights but keeps the norms and the router
  // whole (Megatron-LM); weights sharded over data parallelism as well (ZeRO) split those too.
  ShardingForMemory halves = one, tp2 = one, tp2_zero2 = one;
  halves.dense_shards = 2;
  tp2.dense_shards = 2, tp2.tp = 2;
  tp2_zero2.dense_shards = 4, tp2_zero2.tp = 2;
  double norms_and_router = 0;
  for (const auto& w : weight_tensors(m))
    if (w.group == WeightGroup::kNorm || w.group == WeightGroup::kRouter)
      norms_and_router += static_cast<double>(w.elements() * w.copies);
  EXPECT_GT(norms_and_router, 0);
  EXPECT_DOUBLE_EQ(memory_per_chip(m, tp2).weights_bytes - memory_per_chip(m, halves).weights_bytes,
                   norms_and_router / 2 * 4);
  ShardingForMemory quarters = one;
  quarters.dense_shards = 4;
  EXPECT_DOUBLE_EQ(memory_per_chip(m, tp2_zero2).weights_bytes - memory_per_chip(m, quarters).weights_bytes,
                   norms_and_router / 4 * 4);
}

// A sharded optimizer (ZeRO-1) splits the master weights (when the products read a narrow copy) and
// the optimizer state, non-expert ones and experts by their own counts; the narrow copy the products
// read and the gradients they accumulate into stay whole. Without a narrow copy the master weights
// are the ones the products read, and stay whole too.
TEST(Accounting, AShardedOptimizerSplitsTheMasterWeightsAndTheState) {
  ModelConfig m = tiny(4);
  m.optimizer = "adam";  // state the size of the weights, twice: easy to see
  ShardingForMemory whole;
  whole.narrow_weight_copy = true;
  ShardingForMemory sharded = whole;
  sharded.optimizer_dense_shards = 8, sharded.optimizer_expert_shards = 2;
  const MemoryFootprint a = memory_per_chip(m, whole), b = memory_per_chip(m, sharded);
  const ParamCounts p = count_params(m);
  const double dense = p.total - p.experts;
  ASSERT_GT(p.experts, 0);
  EXPECT_DOUBLE_EQ(a.weights_bytes, p.total * (4 + 2));
  EXPECT_DOUBLE_EQ(b.weights_bytes, dense * (4.0 / 8 + 2) + p.experts * (4.0 / 2 + 2));
  EXPECT_DOUBLE_EQ(b.gradients_bytes, a.gradients_bytes);
  EXPECT_DOUBLE_EQ(b.optimizer_bytes, dense * 8 / 8 + p.experts * 8 / 2);
  ShardingForMemory no_copy = sharded;
  no_copy.narrow_weight_copy = false;
  EXPECT_DOUBLE_EQ(memory_per_chip(m, no_copy).weights_bytes, p.total * 4);
  EXPECT_DOUBLE_EQ(memory_per_chip(m, no_copy).optimizer_bytes, b.optimizer_bytes);
}

// With sharded weights a stage holding an end of the model gathers its embedding matrices (into the
// gathered shards) and holds their gradient: its working buffers are at least that; a stage without an
// end is unaffected.
TEST(Accounting, ShardedWeightsGatherTheEmbeddingAtTheEnds) {
  ModelConfig m = tiny(0);
  m.vocab_size = 100000;  // an embedding larger than a block's buffers
  ShardingForMemory sh;
  sh.dense_shards = 8, sh.gathered_dense_shards = 2, sh.tp = 2;
  double embedding = 0;
  for (const auto& w : weight_tensors(m))
    if (w.group == WeightGroup::kEmbedding) embedding += static_cast<double>(w.elements() * w.copies);
  ASSERT_GT(embedding, 0);
  EXPECT_DOUBLE_EQ(memory_per_chip(m, sh).working_bytes, embedding / 2 * (2 + 4));
  ShardingForMemory middle = sh;
  middle.input_end = middle.output_end = false;
  middle.blocks_held = {0};
  EXPECT_LT(memory_per_chip(m, middle).working_bytes, embedding / 2 * (2 + 4));
  ShardingForMemory not_gathered = sh;
  not_gathered.gathered_dense_shards = 0;
  EXPECT_LT(memory_per_chip(m, not_gathered).working_bytes, embedding / 2 * (2 + 4));
  // A small embedding: the output end's gradient of it lives beside the blocks' buffers (the logits
  // make it before the blocks' backward); the input end makes its own after them.
  ModelConfig small = tiny(0);
  double small_embedding = 0;
  for (const auto& w : weight_tensors(small))
    if (w.group == WeightGroup::kEmbedding) small_embedding += static_cast<double>(w.elements() * w.copies);
  ShardingForMemory no_end = sh;
  no_end.input_end = no_end.output_end = false;
  const double blocks = memory_per_chip(small, no_end).working_bytes;
  ASSERT_GT(blocks, small_embedding / 2 * (2 + 4));
  ShardingForMemory output_end = no_end, input_end = no_end;
  output_end.output_end = true, input_end.input_end = true;
  EXPECT_DOUBLE_EQ(memory_per_chip(small, output_end).working_bytes, blocks + small_embedding / 2 * 4);
  EXPECT_DOUBLE_EQ(memory_per_chip(small, input_end).working_bytes, blocks);
}

// Megatron-LM's table of bytes per parameter with Adam (docs/source/distrib_optimizer.md), d data-parallel
// ranks: a bf16 copy beside float32 weights and gradients, 18 whole and 6 + 12/d distributed; float32
// weights alone, 16 and 8 + 8/d.
TEST(Accounting, BytesPerParameterAsMegatronLmCountsThem) {
  ModelConfig m = tiny(0);
  m.optimizer = "adam";
  const double params = count_params(m).total;
  auto bytes_per_param = [&](bool narrow_copy, int64_t d) {
    ShardingForMemory s;
    s.narrow_weight_copy = narrow_copy;
    s.optimizer_dense_shards = d;
    const MemoryFootprint fp = memory_per_chip(m, s);
    return (fp.weights_bytes + fp.gradients_bytes + fp.optimizer_bytes) / params;
  };
  EXPECT_DOUBLE_EQ(bytes_per_param(true, 1), 18);
  EXPECT_DOUBLE_EQ(bytes_per_param(true, 8), 6 + 12.0 / 8);
  EXPECT_DOUBLE_EQ(bytes_per_param(false, 1), 16);
  EXPECT_DOUBLE_EQ(bytes_per_param(false, 8), 8 + 8.0 / 8);
}

// Tensor parallelism without sequence parallelism, as the StepGraph and the executor run it: each of
// the tp chips keeps its heads' q, k, v, context and probabilities and its share of the FFNs' hidden
// tensors, but the norms' inputs and outputs, the router's float32 logits and the experts' dispatched
// inputs and outputs whole. Counted by hand for the tiny model (d_model 8, 2 heads of 4, sequence 32,
// a gated FFN of 16, plain experts of 16, bf16 activations, 4 experts of capacity factor 2 at top-2
// over groups of 32: 16 slots per expert per group, 2 per token).
TEST(Accounting, TensorParallelismSplitsTheHeadsAndTheHiddenActivations) {
  const ModelConfig m = tiny(4);
  ASSERT_EQ(m.capacity_per_group() * m.experts / m.group_tokens, 2);
  for (int64_t tp : {1, 2}) {
    const double t = static_cast<double>(tp);
    const SublayerActivationBytes dense = saved_activation_bytes_per_token_by_sublayer(m, false, tp);
    const SublayerActivationBytes moe = saved_activation_bytes_per_token_by_sublayer(m, true, tp);
    EXPECT_DOUBLE_EQ(dense.attention, (2 * 8 + (4 * 8 + 2 * 32) / t) * 2) << tp;
    EXPECT_DOUBLE_EQ(dense.ffn, (2 * 8 + 4 * 16 / t) * 2) << tp;
    EXPECT_DOUBLE_EQ(moe.attention, dense.attention) << tp;
    EXPECT_DOUBLE_EQ(moe.ffn, (2 * 8 + 2 * (2 * 8 + 2 * 16 / t)) * 2 + 4 * 4) << tp;
  }
  // Fused attention keeps each head's float32 logsumexp per token instead of its 32 probabilities.
  for (int64_t tp : {1, 2}) {
    const double t = static_cast<double>(tp);
    const SublayerActivationBytes fused = saved_activation_bytes_per_token_by_sublayer(m, false, tp, false, true);
    EXPECT_DOUBLE_EQ(fused.attention, (2 * 8 + 4 * 8 / t) * 2 + 2 * 4 / t) << tp;
    EXPECT_DOUBLE_EQ(fused.ffn, saved_activation_bytes_per_token_by_sublayer(m, false, tp).ffn) << tp;
  }
  // With sequence parallelism every activation is split (Korthikanti et al. 2022).
  for (bool moe : {false, true}) {
    const SublayerActivationBytes whole = saved_activation_bytes_per_token_by_sublayer(m, moe, 1);
    const SublayerActivationBytes split = saved_activation_bytes_per_token_by_sublayer(m, moe, 2, true);
    EXPECT_DOUBLE_EQ(split.attention, whole.attention / 2) << moe;
    EXPECT_DOUBLE_EQ(split.ffn, whole.ffn / 2) << moe;
  }
  // A whole model on one of 2 tp chips: the blocks' activations at tp 2, and half of the float32 logits
  // (the chip's slice of the vocabulary).
  ShardingForMemory tp2;
  tp2.tp = 2, tp2.dense_shards = 2;
  const double per_token = saved_activation_bytes_per_token(m, false, 2) + saved_activation_bytes_per_token(m, true, 2);
  EXPECT_DOUBLE_EQ(memory_per_chip(m, tp2).activations_bytes,
                   (per_token + 100 * 4 / 2.0) * static_cast<double>(tp2.tokens_per_chip));
}

// The transient buffers of a block's backward pass: one micro-batch's, per tensor-parallel slice, plus
// the block's recomputed activations with recomputation and its gathered weights and their gradients
// with sharded weights (bf16 products and float32 weights by default: 2 + 4 bytes per gathered element).
TEST(Accounting, WorkingBuffersOfOneBlocksBackward) {
  const ModelConfig m = tiny(4);  // block 0 dense, block 1 MoE
  ShardingForMemory dense_block, moe_block;
  dense_block.blocks_held = {0};
  moe_block.blocks_held = {1};
  const double T = static_cast<double>(dense_block.tokens_per_chip);
  const double base = memory_per_chip(m, moe_block).working_bytes;
  EXPECT_GT(base, 0);

  // Over 2 tp slices: the activations' gradients of the larger sub-layer at tp 2, and the dispatched
  // tokens and expert outputs whole (2 slots x d_model per token, bf16).
  ShardingForMemory tp2 = moe_block;
  tp2.tp = 2;
  const SublayerActivationBytes acts2 = saved_activation_bytes_per_token_by_sublayer(m, true, 2);
  EXPECT_DOUBLE_EQ(memory_per_chip(m, tp2).working_bytes,
                   (std::max(acts2.attention, acts2.ffn) + 2 * 2 * 8 * 2) * T);
  EXPECT_LT(memory_per_chip(m, tp2).working_bytes, base);
  ShardingForMemory in_flight = moe_block;  // buffers of one micro-batch, however many are kept
  in_flight.activation_microbatches = 3;
  EXPECT_DOUBLE_EQ(memory_per_chip(m, in_flight).working_bytes, base);
  EXPECT_GT(memory_per_chip(m, in_flight).activations_bytes, memory_per_chip(m, moe_block).activations_bytes);

  ShardingForMemory recompute = moe_block;
  recompute.recompute_activations = true;
  EXPECT_DOUBLE_EQ(memory_per_chip(m, recompute).working_bytes - base, saved_activation_bytes_per_token(m, true) * T);

  // Gathered block weights, counted by hand, into 2 tp slices: attention 4 x 8 x 8, relative bias
  // 4 x 2, gated FFN 3 x 8 x 16 and two whole norms of 8 (Megatron-LM keeps them whole on every tp
  // chip); the MoE block has a whole router 8 x 4 and four 2 x 8 x 16 experts instead of the FFN.
  ShardingForMemory gathered = dense_block;
  gathered.gathered_dense_shards = 2, gathered.gathered_expert_shards = 2;
  gathered.input_end = gathered.output_end = false;  // the ends' embedding: ShardedWeightsGatherTheEmbeddingAtTheEnds
  EXPECT_DOUBLE_EQ(memory_per_chip(m, gathered).working_bytes - memory_per_chip(m, dense_block).working_bytes,
                   ((256 + 8 + 384) / 2.0 + 16) * 6);
  gathered.blocks_held = {1};
  EXPECT_DOUBLE_EQ(memory_per_chip(m, gathered).working_bytes - base, ((256 + 8) / 2.0 + 16 + 32 + 4 * 256 / 2.0) * 6);

  // A chip holding both blocks needs the larger block's buffers, not their sum.
  const double both = memory_per_chip(m, ShardingForMemory{}).working_bytes;
  EXPECT_DOUBLE_EQ(both, std::max(base, memory_per_chip(m, dense_block).working_bytes));
  EXPECT_DOUBLE_EQ(memory_per_chip(m, ShardingForMemory{}).total_bytes(),
                   memory_per_chip(m, ShardingForMemory{}).weights_bytes * 2 +
                       memory_per_chip(m, ShardingForMemory{}).optimizer_bytes +
                       memory_per_chip(m, ShardingForMemory{}).activations_bytes + both);
}

TEST(Accounting, CapacityConventions) {
  EXPECT_EQ(expert_capacity(CapacityConvention::kGlam, 2.0, 2, 1024, 64), 32);
  EXPECT_EQ(expert_capacity(CapacityConvention::kGlam, 1.25, 2, 1024, 64), 20);
  EXPECT_EQ(expert_capacity(CapacityConvention::kGlam, 1.0, 2, 100, 8), 16);  // 12.5 -> 13 -> 16
  EXPECT_EQ(expert_capacity(CapacityConvention::kGshard, 1.0, 2, 1024, 64), 32);
  EXPECT_EQ(expert_capacity(CapacityConvention::kGshard, 1.0, 2, 100, 8), 25);
}

}  // namespace
}  // namespace glam
