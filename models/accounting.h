#pragma once
// Exact accounting derived from a ModelConfig: parameters, FLOPs per token and the per-chip
// memory footprint. Everything is computed from one list of weight tensors so that parameter
// counts, optimizer state and sharding never disagree.
#include <cstdint>
#include <string>
#include <vector>

#include "model_config.h"

namespace glam {

enum class WeightGroup { kEmbedding, kAttention, kPositionBias, kNorm, kDenseFfn, kRouter, kExpert };
const char* weight_group_name(WeightGroup g);

// One kind of weight tensor and how many copies of it the model holds.
struct WeightTensor {
  std::string name;    // e.g. "expert.wi"
  WeightGroup group;
  int64_t rows = 0;    // 1 for vectors
  int64_t cols = 0;
  int64_t copies = 0;            // in the whole model (layers x experts ...)
  int64_t activated_copies = 0;  // used by one token's forward pass
  int64_t elements() const { return rows * cols; }
  bool factored() const { return rows > 1 && cols > 1; }  // Adafactor factors matrices only
};

std::vector<WeightTensor> weight_tensors(const ModelConfig& m);

struct ParamCounts {
  double embedding = 0, attention = 0, position_bias = 0, norms = 0, dense_ffn = 0, router = 0, experts = 0;
  double total = 0;            // with the embedding counted once (tied) or twice (untied)
  double activated = 0;        // parameters one token's forward pass touches
  double total_without_embedding = 0;
  double activated_without_embedding = 0;
  double expert_params() const { return experts; }
  double non_expert_params() const { return total - experts; }
};
ParamCounts count_params(const ModelConfig& m);

// FLOPs per token, 2 FLOPs per multiply-add. Conventions: matrix products count the activated
// weights including the output logits; attention counts QK^T and AV over the full sequence
// (no causal halving), which is what dense kernels execute. A training step is 3x forward.
struct FlopsPerToken {
  double matmul_forward = 0;     // weight matrix products incl. logits and router
  double attention_forward = 0;  // score and context products
  double forward() const { return matmul_forward + attention_forward; }
  double train() const { return 3 * forward(); }
};
FlopsPerToken flops_per_token(const ModelConfig& m);

// How one chip holds the model. A chip keeps 1/dense_shards of every non-expert tensor and
// 1/expert_shards of the expert tensors; it processes tokens_per_chip tokens per step.
struct ShardingForMemory {
  int64_t dense_shards = 1;
  int64_t expert_shards = 1;
  // Tensor parallelism (Megatron-LM) splits the products' weights but keeps the norms' scales and the
  // MoE router whole on each of its tp chips: those are sharded over dense_shards / tp only. It splits
  // only some activations (saved_activation_bytes_per_token_by_sublayer).
  int64_t tp = 1;
  // With sequence parallelism every saved activation is split over tp (Korthikanti et al. 2022).
  bool sequence_parallel = false;
  bool fused_attention = false;  // StepShape::fused_attention: no [S, S] probabilities kept
  int64_t tokens_per_chip = 1024;
  bool recompute_activations = false;  // keep only block inputs, recompute the rest
  // Pipeline parallelism: a stage holds some blocks (empty: all), the embedding when it runs the input
  // or the output end of the model, and the activations of its blocks for `activation_microbatches`
  // micro-batches at once (1F1B: stage s of p holds min(p - s, m); interleaved stages hold parts).
  std::vector<int64_t> blocks_held;
  bool input_end = true, output_end = true;
  // Weights sharded over data-parallel ranks too (ZeRO-3, GSPMD 2D) are gathered block by block for
  // the products, into these shards (tp; ep x tp for experts). 0: those weights are not gathered
  // (not sharded beyond tp, or ep x tp), and the products read them in place.
  int64_t gathered_dense_shards = 0;
  int64_t gathered_expert_shards = 0;
  double activation_microbatches = 1;
  // A copy of the weights in the activations' precision beside the master weights (GPU frameworks'
  // bf16 model, Megatron-LM's; XLA fuses the casts into the products instead).
  bool narrow_weight_copy = false;
  // The optimizer sharded over data-parallel ranks beyond the weights' shards (ZeRO-1, Megatron-LM's
  // distributed optimizer): each chip keeps 1/optimizer_*_shards of the optimizer state and, when the
  // products read a narrow copy, of the master weights; the weights the products read and the
  // gradients they accumulate into stay whole.
  int64_t optimizer_dense_shards = 1;
  int64_t optimizer_expert_shards = 1;
};

struct MemoryFootprint {
  double weights_bytes = 0;
  double gradients_bytes = 0;
  double optimizer_bytes = 0;
  double activations_bytes = 0;
  // Transient buffers of the busiest block's backward pass (the largest over the blocks held):
  //  - the gradients of its larger sub-layer's activations, live during that sub-layer's backward;
  //  - with recomputation, that block's activations recomputed for its backward (Korthikanti et al.
  //    2022: full recomputation keeps one block's activations besides the block inputs);
  //  - with sharded weights, that block's gathered weights and its gradients before their
  //    reduce-scatter (ZeRO-3, Rajbhandari et al. 2020: parameters gathered block by block), or at a
  //    stage holding an end of the model, its embedding matrices gathered and their gradient, if more;
  //  - in an MoE block, the all-to-all staging buffers: the dispatched tokens before the dispatch
  //    and the expert outputs after the combine (GShard's [E, C, M] tensors, Lepikhin et al. 2020).
  double working_bytes = 0;
  // The collective library's own buffers a plan makes it allocate beyond the runtime's reserve: on GPUs
  // NCCL's point-to-point channels to the expert all-to-all's peers in the node (plan_memory).
  double communication_bytes = 0;
  double total_bytes() const {
    return weights_bytes + gradients_bytes + optimizer_bytes + activations_bytes + working_bytes +
           communication_bytes;
  }
};
MemoryFootprint memory_per_chip(const ModelConfig& m, const ShardingForMemory& s);

// Bytes of one checkpoint's tensors: the whole model's weights and optimizer state (glamexec's
// checkpoint payload; the planner's checkpoint writes and reads).
double checkpoint_bytes(const ModelConfig& m);

// Bytes of activations kept for the backward pass, per token, for one block on one of its tp chips:
// its attention and its FFN (dense or MoE, router included) sub-layers. Tensor parallelism as the
// StepGraph and the executor run it (Megatron-LM, without sequence parallelism) splits the heads'
// tensors (q, k, v, context, probabilities) and the FFNs' hidden ones over tp; the norms' inputs and
// outputs, the router's logits and the experts' dispatched inputs and outputs stay whole on every
// tp chip.
struct SublayerActivationBytes {
  double attention = 0, ffn = 0;
  double total() const { return attention + ffn; }
};
// With sequence parallelism (Megatron-LM's, Korthikanti et al. 2022) all of them split over tp. Fused
// attention (StepShape::fused_attention) keeps each row's logsumexp instead of the probabilities.
SublayerActivationBytes saved_activation_bytes_per_token_by_sublayer(const ModelConfig& m, bool moe_block,
                                                                     int64_t tp = 1, bool sequence_parallel = false,
                                                                     bool fused_attention = false);
double saved_activation_bytes_per_token(const ModelConfig& m, bool moe_block, int64_t tp = 1,
                                        bool sequence_parallel = false, bool fused_attention = false);

}  // namespace glam
