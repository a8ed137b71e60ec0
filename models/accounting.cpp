#include "accounting.h"

#include <algorithm>

namespace glam {

const char* weight_group_name(WeightGroup g) {
  switch (g) {
    case WeightGroup::kEmbedding: return "embedding";
    case WeightGroup::kAttention: return "attention";
    case WeightGroup::kPositionBias: return "position_bias";
    case WeightGroup::kNorm: return "norm";
    case WeightGroup::kDenseFfn: return "dense_ffn";
    case WeightGroup::kRouter: return "router";
    case WeightGroup::kExpert: return "expert";
  }
  return "?";
}

std::vector<WeightTensor> weight_tensors(const ModelConfig& m) {
  const int64_t L = m.layers, M = m.d_model, A = m.attention_width();
  const int64_t dense = m.dense_layers(), moe = m.moe_layers();
  const int64_t He = m.expert_hidden_size();
  std::vector<WeightTensor> t;
  auto add = [&](std::string name, WeightGroup g, int64_t rows, int64_t cols, int64_t copies, int64_t activated) {
    if (copies > 0) t.push_back({std::move(name), g, rows, cols, copies, activated});
  };
  add("embedding", WeightGroup::kEmbedding, m.vocab_size, M, m.tied_embeddings ? 1 : 2, m.tied_embeddings ? 1 : 2);
  add("attention.wq", WeightGroup::kAttention, M, A, L, L);
  add("attention.wk", WeightGroup::kAttention, M, A, L, L);
  add("attention.wv", WeightGroup::kAttention, M, A, L, L);
  add("attention.wo", WeightGroup::kAttention, A, M, L, L);
  if (m.position_encoding == "relative_bias")
    add("attention.relative_bias", WeightGroup::kPositionBias, m.relative_buckets, m.heads, L, L);
  if (m.position_encoding == "absolute")
    add("position_embedding", WeightGroup::kPositionBias, m.seq_len, M, 1, 1);
  add("norm.scale", WeightGroup::kNorm, 1, M, 2 * L + 1, 2 * L + 1);
  const bool gated = m.ffn_kind == "gated";
  add("ffn.wi", WeightGroup::kDenseFfn, M, m.ffn_hidden, dense, dense);
  if (gated) add("ffn.wi_gate", WeightGroup::kDenseFfn, M, m.ffn_hidden, dense, dense);
  add("ffn.wo", WeightGroup::kDenseFfn, m.ffn_hidden, M, dense, dense);
  if (m.is_moe()) {
    const int64_t E = m.experts, k = m.top_k;
    add("router.wg", WeightGroup::kRouter, M, E, moe, moe);
    add("expert.wi", WeightGroup::kExpert, M, He, moe * E, moe * k);
    if (m.expert_kind == "gated") add("expert.wi_gate", WeightGroup::kExpert, M, He, moe * E, moe * k);
    add("expert.wo", WeightGroup::kExpert, He, M, moe * E, moe * k);
  }
  return t;
}

ParamCounts count_params(const ModelConfig& m) {
  ParamCounts p;
  for (const auto& w : weight_tensors(m)) {
    double total = static_cast<double>(w.elements()) * static_cast<double>(w.copies);
    double active = static_cast<double>(w.elements()) * static_cast<double>(w.activated_copies);
    switch (w.group) {
      case WeightGroup::kEmbedding: p.embedding += total; break;
      case WeightGroup::kAttention: p.attention += total; break;
      case WeightGroup::kPositionBias: p.position_bias += total; break;
      case WeightGroup::kNorm: p.norms += total; break;
      case WeightGroup::kDenseFfn: p.dense_ffn += total; break;
      case WeightGroup::kRouter: p.router += total; break;
      case WeightGroup::kExpert: p.experts += total; break;
    }
    p.total += total;
    p.activated += active;
    if (w.group != WeightGroup::kEmbedding) {
      p.total_without_embedding += total;
      p.activated_without_embedding += active;
    }
  }
  return p;
}

FlopsPerToken flops_per_token(const ModelConfig& m) {
  FlopsPerToken f;
  for (const auto& w : weight_tensors(m)) {
    if (w.group == WeightGroup::kNorm || w.group == WeightGroup::kPositionBias) continue;
    // The tied embedding is a lookup on input and a product only for the logits.
    int64_t products = w.group == WeightGroup::kEmbedding ? 1 : w.activated_copies;
    f.matmul_forward += 2.0 * static_cast<double>(w.elements()) * static_cast<double>(products);
  }
  // QK^T and AV: each 2 * seq_len * attention_width FLOPs per token per layer.
  f.attention_forward = 2.0 * 2.0 * static_cast<double>(m.seq_len) * static_cast<double>(m.attention_width()) *
                        static_cast<double>(m.layers);
  return f;
}

namespace {

// Expert slots per token (capacity padding included).
double expert_slots_per_token(const ModelConfig& m) {
  return static_cast<double>(m.capacity_per_group() * m.experts) / static_cast<double>(m.group_tokens);
}

}  // namespace

SublayerActivationBytes saved_activation_bytes_per_token_by_sublayer(const ModelConfig& m, bool moe_block,
                                                                     int64_t tp, bool sequence_parallel,
                                                                     bool fused_attention) {
  if (sequence_parallel && tp > 1) {
    SublayerActivationBytes whole =
        saved_activation_bytes_per_token_by_sublayer(m, moe_block, 1, false, fused_attention);
    whole.attention /= static_cast<double>(tp), whole.ffn /= static_cast<double>(tp);
    return whole;
  }
  const double e = static_cast<double>(ModelConfig::precision_bytes(m.activation_precision));
  const double M = static_cast<double>(m.d_model), A = static_cast<double>(m.attention_width());
  const double heads = static_cast<double>(m.heads), S = static_cast<double>(m.seq_len);
  const double slices = static_cast<double>(std::max<int64_t>(1, tp));
  SublayerActivationBytes b;
  // attention: norm input and output (whole), q, k, v, context, softmax probabilities (heads x seq
  // per token; fused: each row's float32 logsumexp instead), the last five split over the heads
  b.attention = (2 * M + 4 * A / slices) * e + heads / slices * (fused_attention ? 4 : S * e);
  if (!moe_block) {
    const double H = static_cast<double>(m.ffn_hidden);
    b.ffn = (2 * M + (m.ffn_kind == "gated" ? 4 * H : 2 * H) / slices) * e;
    return b;
  }
  // MoE: norm input and output, and per slot the dispatched input and the expert's output (whole: the
  // slices add their shares of it), and the expert's hidden tensors (split)
  const double He = static_cast<double>(m.expert_hidden_size());
  const double per_slot = 2 * M + (m.expert_kind == "gated" ? 4 * He : 2 * He) / slices;
  b.ffn = (2 * M + expert_slots_per_token(m) * per_slot) * e + 4.0 * static_cast<double>(m.experts);  // router: fp32
  return b;
}

double saved_activation_bytes_per_token(const ModelConfig& m, bool moe_block, int64_t tp, bool sequence_parallel,
                                        bool fused_attention) {
  return saved_activation_bytes_per_token_by_sublayer(m, moe_block, tp, sequence_parallel, fused_attention).total();
}

namespace {

// Weight elements of one block, non-expert and expert (all experts of an MoE block).
struct BlockWeights {
  double dense = 0, experts = 0;
  double whole_over_tp = 0;  // norms and router: gathered whole onto each tp chip
};
BlockWeights block_weight_elements(const ModelConfig& m, bool moe_block) {
  BlockWeights b;
  for (const auto& w : weight_tensors(m)) {
    const double n = static_cast<double>(w.elements());
    switch (w.group) {
      case WeightGroup::kAttention: b.dense += n; break;
      case WeightGroup::kPositionBias: b.dense += w.name == "position_embedding" ? 0 : n; break;
      case WeightGroup::kNorm: b.whole_over_tp += 2 * n; break;
      case WeightGroup::kDenseFfn: b.dense += moe_block ? 0 : n; break;
      case WeightGroup::kRouter: b.whole_over_tp += moe_block ? n : 0; break;
      case WeightGroup::kExpert: b.experts += moe_block ? n * static_cast<double>(m.experts) : 0; break;
      case WeightGroup::kEmbedding: break;
    }
  }
  return b;
}

// The transient buffers of one block's backward pass on one chip (MemoryFootprint::working_bytes).
double block_working_bytes(const ModelConfig& m, const ShardingForMemory& s, bool moe_block) {
  const double e = static_cast<double>(ModelConfig::precision_bytes(m.activation_precision));
  const double wbytes = static_cast<double>(ModelConfig::precision_bytes(m.weight_precision));
  const double tokens = static_cast<double>(s.tokens_per_chip);
  double bytes = 0;
  const SublayerActivationBytes acts =
      saved_activation_bytes_per_token_by_sublayer(m, moe_block, s.tp, s.sequence_parallel, s.fused_attention);
  if (s.recompute_activations) bytes += acts.total() * tokens;
  // The gradients of the sub-layer's activations, live during its backward: at most its saved
  // activations' shapes, the larger sub-layer's (attention's includes the softmax probabilities').
  bytes += std::max(acts.attention, acts.ffn) * tokens;
  // Gathered weights in the products' precision, and their gradients in the weights'.
  const BlockWeights w = block_weight_elements(m, moe_block);
  if (s.gathered_dense_shards > 0)
    bytes += (w.dense / static_cast<double>(s.gathered_dense_shards) + w.whole_over_tp) * (e + wbytes);
  if (s.gathered_expert_shards > 0) bytes += w.experts / static_cast<double>(s.gathered_expert_shards) * (e + wbytes);
  // The all-to-all's staging: the dispatched tokens and combined expert outputs, whole on each tp chip
  // (with sequence parallelism, of its share of the tokens).
  if (moe_block)
    bytes += 2 * expert_slots_per_token(m) * static_cast<double>(m.d_model) * e * tokens /
             (s.sequence_parallel ? static_cast<double>(std::max<int64_t>(1, s.tp)) : 1.0);
  return bytes;
}

}  // namespace

MemoryFootprint memory_per_chip(const ModelConfig& m, const ShardingForMemory& s) {
  MemoryFootprint fp;
  const double wbytes = static_cast<double>(ModelConfig::precision_bytes(m.weight_precision));
  std::vector<int64_t> blocks = s.blocks_held;
  if (blocks.empty())
    for (int64_t l = 0; l < m.layers; ++l) blocks.push_back(l);
  int64_t held = 0, held_moe = 0;
  for (int64_t l : blocks) ++held, held_moe += m.is_moe_layer(l) ? 1 : 0;
  const int64_t ends = (s.input_end ? 1 : 0) + (s.output_end ? 1 : 0);
  // Copies of each tensor this chip's blocks and ends hold, out of the model's.
  auto held_copies = [&](const WeightTensor& w) -> int64_t {
    switch (w.group) {
      case WeightGroup::kEmbedding:  // tied: each end stage keeps the one matrix; untied: one each
        return m.tied_embeddings ? (ends > 0 ? 1 : 0) : ends;
      case WeightGroup::kPositionBias:
        return w.name == "position_embedding" ? (s.input_end ? w.copies : 0) : held;  // absolute: at the input
      case WeightGroup::kNorm: return 2 * held + (s.output_end ? 1 : 0);
      case WeightGroup::kAttention: return held;
      case WeightGroup::kDenseFfn: return held - held_moe;
      case WeightGroup::kRouter: return held_moe;
      case WeightGroup::kExpert: return held_moe * m.experts;
    }
    return w.copies;
  };
  const int64_t tp = std::max<int64_t>(1, s.tp);
  const double e = static_cast<double>(ModelConfig::precision_bytes(m.activation_precision));
  const double narrow = s.narrow_weight_copy && e < wbytes ? e : 0.0;
  for (const auto& w : weight_tensors(m)) {
    const bool whole_over_tp = w.group == WeightGroup::kNorm || w.group == WeightGroup::kRouter;
    const double shards = static_cast<double>(w.group == WeightGroup::kExpert ? s.expert_shards
                                              : whole_over_tp               ? std::max<int64_t>(1, s.dense_shards / tp)
                                                                            : s.dense_shards);
    const double copies = static_cast<double>(held_copies(w));
    const double elems = static_cast<double>(w.elements()) * copies / shards;
    const double optimizer_shards = static_cast<double>(
        std::max<int64_t>(1, w.group == WeightGroup::kExpert ? s.optimizer_expert_shards : s.optimizer_dense_shards));
    // With a narrow copy for the products, the master weights are the optimizer's alone.
    fp.weights_bytes += narrow > 0 ? elems * (wbytes / optimizer_shards + narrow) : elems * wbytes;
    fp.gradients_bytes += elems * wbytes;
    if (m.optimizer == "adam") {
      fp.optimizer_bytes += 2 * elems * 4 / optimizer_shards;
    } else if (w.factored()) {
      // Adafactor: a row and a column average per matrix, sharded like the matrix.
      fp.optimizer_bytes += static_cast<double>(w.rows + w.cols) * copies / shards * 4 / optimizer_shards;
    } else {
      fp.optimizer_bytes += elems * 4 / optimizer_shards;
    }
  }
  const double tokens = static_cast<double>(s.tokens_per_chip);
  double per_token = 0;
  // With recomputation a block keeps its input, whole on each tp chip (its tokens' share with
  // sequence parallelism).
  const double input_share = s.sequence_parallel ? 1.0 / static_cast<double>(tp) : 1.0;
  for (int64_t l : blocks)
    per_token += s.recompute_activations
                     ? static_cast<double>(m.d_model) * e * input_share
                     : saved_activation_bytes_per_token(m, m.is_moe_layer(l), tp, s.sequence_parallel,
                                                        s.fused_attention);
  per_token *= s.activation_microbatches;
  // float32 logits for the loss, of the one micro-batch at the output end: each tp chip holds its
  // slice of the vocabulary
  if (s.output_end) per_token += static_cast<double>(m.vocab_size) * 4.0 / static_cast<double>(tp);
  fp.activations_bytes = per_token * tokens;
  // Blocks of one kind have the same buffers: the larger of the kinds held.
  if (held > held_moe) fp.working_bytes = block_working_bytes(m, s, false);
  if (held_moe > 0) fp.working_bytes = std::max(fp.working_bytes, block_working_bytes(m, s, true));
  // Sharded weights: a stage at an end gathers its embedding matrices for the lookup and the logits and
  // holds their gradient until the reduce-scatter after its pass. At the output end the logits make
  // that gradient before the pass's blocks run their backward, so it lives beside their buffers.
  if (s.gathered_dense_shards > 0) {
    double embedding = 0;
    for (const auto& w : weight_tensors(m))
      if (w.group == WeightGroup::kEmbedding)
        embedding += static_cast<double>(w.elements() * held_copies(w)) / static_cast<double>(s.gathered_dense_shards);
    const double beside_blocks = fp.working_bytes + (s.output_end ? embedding * wbytes : 0.0);
    fp.working_bytes = std::max(beside_blocks, embedding * (e + wbytes));
  }
  return fp;
}

double checkpoint_bytes(const ModelConfig& m) {
  const MemoryFootprint whole = memory_per_chip(m, ShardingForMemory{});
  return whole.weights_bytes + whole.optimizer_bytes;
}

}  // namespace glam
