#include "step_graph.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <tuple>
#include <stdexcept>

#include "accounting.h"
#include "moe_load.h"
#include "op_names.h"

namespace glam {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::kMatmul: return "matmul";
    case OpKind::kAttention: return "attention";
    case OpKind::kElementwise: return "elementwise";
    case OpKind::kCollective: return "collective";
  }
  return "?";
}
const char* phase_name(StepPhase p) {
  switch (p) {
    case StepPhase::kForward: return "fwd";
    case StepPhase::kBackward: return "bwd";
    case StepPhase::kOptimizer: return "opt";
  }
  return "?";
}
std::string op_curve_key(const StepOp& op) { return op.name + "." + phase_name(op.phase); }

const char* collective_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::kAllToAll: return "all_to_all";
    case CollectiveKind::kAllReduce: return "all_reduce";
    case CollectiveKind::kReduceScatter: return "reduce_scatter";
    case CollectiveKind::kAllGather: return "all_gather";
    case CollectiveKind::kSendRecv: return "send_recv";
  }
  return "?";
}
double bus_factor(CollectiveKind kind, int ranks) {
  const double f = ranks > 1 ? static_cast<double>(ranks - 1) / ranks : 0.0;
  return kind == CollectiveKind::kAllReduce ? 2 * f : f;
}

const char* axis_name(CommAxis a) {
  switch (a) {
    case CommAxis::kTensor: return "tp";
    case CommAxis::kExpert: return "ep";
    case CommAxis::kData: return "dp";
    case CommAxis::kExpertData: return "expert_dp";
    case CommAxis::kPipeline: return "pp";
    case CommAxis::kPipelineEnds: return "pp_ends";
  }
  return "?";
}

int64_t blocks_run(const ModelConfig& m, const StepShape& s) {
  return s.layers_run <= 0 ? m.layers : std::min(s.layers_run, m.layers);
}

std::vector<int64_t> PipelineLayout::blocks_of_stage(int64_t stage) const {
  std::vector<int64_t> out;
  for (int64_t c = stage; c < chunks(); c += stages)
    for (int64_t l = c * blocks_per_chunk(); l < (c + 1) * blocks_per_chunk(); ++l) out.push_back(l);
  return out;
}

int64_t PipelineLayout::warmup_passes(int64_t stage) const {
  const int64_t total = microbatches * virtual_stages;
  if (virtual_stages == 1) return std::min(stages - stage - 1, total);
  if (microbatches == stages) return total;  // Megatron-LM: one group of micro-batches, all forward first
  return std::min((stages - stage - 1) * 2 + (virtual_stages - 1) * stages, total);
}

std::vector<PipelineLayout::Pass> PipelineLayout::program(int64_t stage) const {
  // Pass k of a direction: micro-batches go in groups of pp, each group through every chunk of the
  // stage in turn (backward: the chunks in reverse).
  auto pass = [&](bool forward, int64_t k) {
    const int64_t group = k / (stages * virtual_stages), in_group = k % (stages * virtual_stages);
    const int64_t local = forward ? in_group / stages : virtual_stages - 1 - in_group / stages;
    return Pass{forward, local * stages + stage, group * stages + in_group % stages};
  };
  const int64_t total = microbatches * virtual_stages, warmup = warmup_passes(stage);
  std::vector<Pass> out;
  for (int64_t k = 0; k < warmup; ++k) out.push_back(pass(true, k));
  for (int64_t k = 0; k < total - warmup; ++k) out.push_back(pass(true, warmup + k)), out.push_back(pass(false, k));
  for (int64_t k = total - warmup; k < total; ++k) out.push_back(pass(false, k));
  return out;
}

double PipelineLayout::peak_activation_microbatches(int64_t stage) const {
  const int64_t units = std::min(warmup_passes(stage) + 1, microbatches * virtual_stages);
  return static_cast<double>(units) / static_cast<double>(virtual_stages);
}

namespace {

// Builds the op list; keeps the arithmetic of each op next to its name.
class Builder {
 public:
  Builder(const ModelConfig& m, const StepShape& s) : m_(m), s_(s) {
    e_ = static_cast<double>(ModelConfig::precision_bytes(m.activation_precision));
    w_ = static_cast<double>(ModelConfig::precision_bytes(m.weight_precision));
    T_ = static_cast<double>(s.tokens_per_rank) / static_cast<double>(std::max<int64_t>(1, s.microbatches));
    tp_ = static_cast<double>(s.tp);
    sp_ = s.sequence_parallel && s.tp > 1;
    Tsp_ = sp_ ? T_ / tp_ : T_;
    M_ = static_cast<double>(m.d_model);
    V_ = static_cast<double>(m.vocab_size);
    A_ = static_cast<double>(m.attention_width());
  }

  // Which side of W[k, n] the `shards` tensor-parallel ranks split (Megatron-LM): its columns (each rank
  // reads the whole input and writes its slice of the output) or its rows (reads its slice of the
  // input, writes a partial sum of the whole output).
  enum class Sliced { kColumns, kRows };
  // y[T, n] = x[T, k] W[k, n], weights sharded over tp. Backward: data and weight gradients.
  void matmul(int layer, const std::string& name, StepPhase ph, double tokens, double k, double n, double shards,
              Sliced sliced = Sliced::kColumns) {
    const double mul = ph == StepPhase::kBackward ? 2 : 1;
    const double in = sliced == Sliced::kRows ? k / shards : k, out = sliced == Sliced::kColumns ? n / shards : n;
    add(layer, name, ph, OpKind::kMatmul, 2 * tokens * k * n / shards * mul,
        (k * n / shards + tokens * (in + out)) * e_ * mul);
  }
  // Attention's products of each sequence and head (tp splits the heads): the scores Q K^T, [S, S] per
  // head from queries and keys of `A_` / tp columns, and the context P V back to `A_` / tp columns.
  // Each reads or writes the heads' [S, S] probabilities and two of [T, A / tp].
  void attention_product(int layer, const std::string& name, StepPhase ph) {
    const double mul = ph == StepPhase::kBackward ? 2 : 1;
    const double S = static_cast<double>(m_.seq_len), heads = static_cast<double>(m_.heads);
    add(layer, name, ph, OpKind::kAttention, 2 * T_ * S * A_ / tp_ * mul,
        (2 * T_ * A_ + T_ * S * heads) / tp_ * e_ * mul);
  }
  // The fused attention kernel (FlashAttention-2, Dao 2023): per query block of 128 rows, the key
  // blocks up to the diagonal, the rest masked away unread; the same products as attention_product's
  // over that share of the [S, S] scores. It reads q, k and v and writes the context and each row's
  // logsumexp (float32). Its backward pass recomputes the scores and takes four more products (dP,
  // dV, dQ, dK: 2.5 times the forward's): a first kernel reads the context and its gradient for each
  // row's dot product (float32), the main one q, k, v, the context's gradient again and the row
  // statistics, writes the three input gradients and accumulates dQ in float32. The relative position
  // bias is added, and its gradient summed per bucket, on chip (as glamexec's softmax kernels do):
  // no HBM traffic beyond its small table.
  void fused_attention(int layer, StepPhase ph) {
    const double S = static_cast<double>(m_.seq_len), heads = static_cast<double>(m_.heads);
    const double key_blocks = std::ceil(S / 128), computed_share = (key_blocks + 1) / (2 * key_blocks);
    const double forward_flops = 2 * 2 * T_ * S * A_ / tp_ * computed_share;
    const double columns = T_ * A_ / tp_, rows = T_ * heads / tp_;
    if (ph == StepPhase::kForward)
      add(layer, op_name::kAttnFused, ph, OpKind::kAttention, forward_flops, 4 * columns * e_ + rows * 4);
    else
      add(layer, op_name::kAttnFused, ph, OpKind::kAttention, 2.5 * forward_flops,
          9 * columns * e_ + 2 * columns * 4 + 3 * rows * 4);
  }
  // Memory-bound op touching `elements` values `passes` times.
  void elementwise(int layer, const std::string& name, StepPhase ph, double elements, double passes) {
    double mul = ph == StepPhase::kBackward ? 2 : 1;
    add(layer, name, ph, OpKind::kElementwise, elements * passes, elements * passes * e_ * mul);
  }
  void collective(int layer, const std::string& name, StepPhase ph, CollectiveKind c, CommAxis axis, double bytes,
                  bool blocking = true) {
    StepOp op = make(layer, name, ph, OpKind::kCollective, 0, 0);
    op.collective = c;
    op.axis = axis;
    op.comm_bytes = bytes;
    op.blocking = blocking;
    g_.ops.push_back(std::move(op));
  }

  // The tensor-parallel exchange of `elements` activations at one end of a block's sliced products
  // (Megatron-LM's f and g), `front` before them in the forward order. Without sequence parallelism an
  // all-reduce "<stem>_tp_allreduce": after the row-sliced output product in the forward pass (the back
  // end), and in the backward pass after the column-sliced input product, of its input gradient (the
  // front end). With it, an all-gather into the sliced products and a reduce-scatter out of them, in
  // both passes (the same bytes as the all-reduce). A sequence of the block's ops takes one at each end.
  std::function<void()> tp_exchange(int l, const std::string& stem, StepPhase ph, bool front, double elements) {
    return [this, l, stem, ph, front, elements] {
      if (s_.tp <= 1) return;
      const bool forward = ph == StepPhase::kForward;
      if (!sp_) {
        if (front != forward) collective(l, stem + "_tp_allreduce", ph, CollectiveKind::kAllReduce, CommAxis::kTensor, elements * e_);
        return;
      }
      const bool gather = front == forward;
      collective(l, stem + (gather ? "_tp_allgather" : "_tp_reducescatter"), ph,
                 gather ? CollectiveKind::kAllGather : CollectiveKind::kReduceScatter, CommAxis::kTensor, elements * e_);
    };
  }

  void attention(int l, StepPhase ph) {
    const double S = static_cast<double>(m_.seq_len), heads = static_cast<double>(m_.heads);
    std::vector<std::function<void()>> seq = {
        [&] { elementwise(l, op_name::kAttnNorm, ph, Tsp_ * M_, 2); },
        tp_exchange(l, "attn", ph, true, T_ * M_),
        [&] { matmul(l, op_name::kAttnQkv, ph, T_, M_, 3 * A_, tp_); },
    };
    if (s_.fused_attention) {
      seq.push_back([&] { fused_attention(l, ph); });
    } else {
      seq.push_back([&] { attention_product(l, op_name::kAttnScores, ph); });
      seq.push_back([&] { elementwise(l, op_name::kAttnSoftmax, ph, T_ * S * heads / tp_, 3); });
      seq.push_back([&] { attention_product(l, op_name::kAttnContext, ph); });
    }
    seq.push_back([&] { matmul(l, op_name::kAttnOut, ph, T_, A_, M_, tp_, Sliced::kRows); });
    seq.push_back(tp_exchange(l, "attn", ph, false, T_ * M_));
    run(seq, ph);
  }

  void dense_ffn(int l, StepPhase ph) {
    const double H = static_cast<double>(m_.ffn_hidden);
    const double in_cols = m_.ffn_kind == "gated" ? 2 * H : H;
    std::vector<std::function<void()>> seq = {
        [&] { elementwise(l, op_name::kFfnNorm, ph, Tsp_ * M_, 2); },
        tp_exchange(l, "ffn", ph, true, T_ * M_),
        [&] { matmul(l, op_name::kFfnIn, ph, T_, M_, in_cols, tp_); },
        [&] { elementwise(l, op_name::kFfnAct, ph, T_ * H / tp_, 3); },
        [&] { matmul(l, op_name::kFfnOut, ph, T_, H, M_, tp_, Sliced::kRows); },
        tp_exchange(l, "ffn", ph, false, T_ * M_),
    };
    run(seq, ph);
  }

  void moe_ffn(int l, StepPhase ph, const MoeLayerLoad& load) {
    const double He = static_cast<double>(m_.expert_hidden_size()), E = static_cast<double>(m_.experts);
    const double in_cols = m_.expert_kind == "gated" ? 2 * He : He;
    const double copies = load.expert_tokens;
    // With sequence parallelism each tp rank routes and sends its own 1/tp of the tokens, and the tp
    // group gathers the copies its experts' sliced products need.
    const double sent = sp_ ? load.a2a_send_tokens / tp_ : load.a2a_send_tokens;
    // Experts on this rank: E / ep when ep <= E; an expert split over tp otherwise.
    std::vector<std::function<void()>> seq = {
        [&] { elementwise(l, op_name::kFfnNorm, ph, Tsp_ * M_, 2); },
        [&] { matmul(l, op_name::kMoeRouter, ph, Tsp_, M_, E, 1); },
        [&] { elementwise(l, op_name::kMoePermute, ph, sent * M_, 2); },
        [&] {
          collective(l, "moe_dispatch_a2a", ph, CollectiveKind::kAllToAll, CommAxis::kExpert, sent * M_ * e_);
          g_.ops.back().a2a_dest_share = load.dest_share;
          g_.ops.back().a2a_transposed = ph == StepPhase::kBackward;
        },
        tp_exchange(l, "ffn", ph, true, copies * M_),
        [&] { matmul(l, op_name::kMoeExpertIn, ph, copies, M_, in_cols, tp_); },
        [&] { elementwise(l, op_name::kMoeExpertAct, ph, copies * He / tp_, 3); },
        [&] { matmul(l, op_name::kMoeExpertOut, ph, copies, He, M_, tp_, Sliced::kRows); },
        tp_exchange(l, "ffn", ph, false, copies * M_),
        [&] {
          collective(l, "moe_combine_a2a", ph, CollectiveKind::kAllToAll, CommAxis::kExpert, sent * M_ * e_);
          g_.ops.back().a2a_dest_share = load.dest_share;
          g_.ops.back().a2a_transposed = ph == StepPhase::kForward;
        },
        [&] { elementwise(l, op_name::kMoeUnpermute, ph, sent * M_, 2); },
    };
    run(seq, ph);
  }

  // Gradient reduction of one block's weights, overlapped with the rest of the backward pass.
  // Non-expert weights are replicated over all dp ranks, an expert's over dp / ep of them.
  void grad_reduction(int l) {
    if (!s_.overlap_grad_reduction) return;
    if (sp_)
      collective(l, "sp_grad_allreduce", StepPhase::kBackward, CollectiveKind::kAllReduce, CommAxis::kTensor,
                 layer_sequence_parallel_bytes(l), false);
    if (s_.dp > 1)
      collective(l, "grad_allreduce", StepPhase::kBackward, grad_reduction_kind(), CommAxis::kData,
                 layer_dense_bytes(l), false);
    if (m_.is_moe_layer(l) && s_.dp / s_.ep > 1)
      collective(l, "expert_grad_allreduce", StepPhase::kBackward, grad_reduction_kind(), CommAxis::kExpertData,
                 layer_expert_bytes(l), false);
  }
  // Sharded weights or optimizer: each rank updates only its shard, and needs only that shard of the
  // summed gradients.
  bool updates_a_shard() const { return s_.shard_weights || s_.shard_optimizer; }
  CollectiveKind grad_reduction_kind() const {
    return updates_a_shard() ? CollectiveKind::kReduceScatter : CollectiveKind::kAllReduce;
  }
  // The distributed optimizer's all-gather of the weights each rank updated (ZeRO-1), in the
  // precision the products read: over dp ranks, experts over their replicas.
  bool gathers_updated_weights() const { return s_.shard_optimizer && !s_.shard_weights; }
  double read_weight_bytes() const { return s_.narrow_weight_copy && e_ < w_ ? e_ : w_; }

  // One blocking all-reduce of every replicated gradient of the stage after the backward pass: the
  // non-expert weights over dp, and the experts over their replicas when dp > ep.
  void all_gradients_at_once() {
    double bytes = end_gradient_bytes();
    double expert_bytes = 0, sp_bytes = 0;
    for (int64_t block : stage_blocks()) {
      const int l = static_cast<int>(block);
      bytes += layer_dense_bytes(l);
      expert_bytes += layer_expert_bytes(l);
      sp_bytes += layer_sequence_parallel_bytes(l);
    }
    if (sp_)
      collective(-1, "sp_grad_allreduce", StepPhase::kBackward, CollectiveKind::kAllReduce, CommAxis::kTensor, sp_bytes);
    if (s_.dp > 1) collective(-1, "grad_allreduce", StepPhase::kBackward, grad_reduction_kind(), CommAxis::kData, bytes);
    if (expert_bytes > 0 && s_.dp / s_.ep > 1)
      collective(-1, "expert_grad_allreduce", StepPhase::kBackward, grad_reduction_kind(), CommAxis::kExpertData,
                 expert_bytes);
  }

  // Bytes of one MoE block's expert weights on this rank (E / ep experts, split over tp).
  double layer_expert_bytes(int l) const {
    if (!m_.is_moe_layer(l)) return 0;
    const double He = static_cast<double>(m_.expert_hidden_size());
    const double per_expert = (m_.expert_kind == "gated" ? 3 : 2) * M_ * He;
    const double local_experts = static_cast<double>(m_.experts) / static_cast<double>(std::min(s_.ep, m_.experts));
    return per_expert * local_experts / tp_ * w_;
  }

  // With sequence parallelism each tp rank's gradients of the weights that are whole on every tp rank
  // (the norms' scales, the router) come from its own tokens: they are summed over tp (Megatron-LM).
  double layer_sequence_parallel_bytes(int l) const { return sp_ ? layer_whole_params(l) * w_ : 0; }

  // A block's weights that are whole on every tp rank: its two norms' scales and, in an MoE block, the
  // router.
  double layer_whole_params(int l) const {
    return 2 * M_ + (m_.is_moe_layer(l) ? M_ * static_cast<double>(m_.experts) : 0);
  }

  // Exact bytes of one block's non-expert gradients on this rank (the relative position bias is sliced
  // over tp with the heads).
  double layer_dense_bytes(int l) const {
    const double H = static_cast<double>(m_.ffn_hidden);
    double params = 4 * M_ * A_ / tp_ + layer_whole_params(l);
    if (m_.position_encoding == "relative_bias")
      params += static_cast<double>(m_.relative_buckets * m_.heads) / tp_;
    if (!m_.is_moe_layer(l)) params += (m_.ffn_kind == "gated" ? 3 : 2) * M_ * H / tp_;
    return params * w_;
  }

  StepGraph build(const std::vector<MoeLayerLoad>& loads) {
    const int64_t K = blocks_run(m_, s_);
    const int64_t micro = std::max<int64_t>(1, s_.microbatches);
    const int64_t stages = std::max<int64_t>(1, s_.pp);
    // Loads are given for the rank's whole batch; a micro-batch carries its share.
    per_micro_loads_ = loads;
    for (auto& l : per_micro_loads_) {
      l.expert_tokens /= static_cast<double>(micro);
      l.a2a_send_tokens /= static_cast<double>(micro);
    }
    uniform_ = uniform_moe_load(m_, s_);
    uniform_.expert_tokens /= static_cast<double>(micro);
    uniform_.a2a_send_tokens /= static_cast<double>(micro);
    g_.stages = stages;
    // Gradient accumulation: each micro-batch runs forward and backward on its share of the tokens;
    // gradients are reduced once, during (or after) the last micro-batch's backward pass of each
    // block (with sharded weights, in every pass: a rank keeps only its shard). With one stage the passes run in turn; with several, each stage follows its 1F1B
    // program, and the stages' passes are merged in an order where each comes after the one it waits
    // for (the previous chunk's forward pass, the next chunk's backward pass, with their sends).
    layout_ = PipelineLayout{K, stages, std::max<int64_t>(1, s_.virtual_stages), micro};
    const int64_t chunks = layout_.chunks();
    std::vector<std::vector<PipelineLayout::Pass>> programs;
    for (int64_t st = 0; st < stages; ++st) programs.push_back(layout_.program(st));
    std::vector<size_t> next(static_cast<size_t>(stages), 0);
    for (bool progress = true; progress;) {
      progress = false;
      for (int64_t st = 0; st < stages; ++st) {
        auto& prog = programs[static_cast<size_t>(st)];
        for (size_t& k = next[static_cast<size_t>(st)]; k < prog.size(); ++k) {
          const auto [forward, chunk, mb] = prog[k];
          const int64_t from = forward ? chunk - 1 : chunk + 1;  // the chunk this pass receives from
          const bool receives = from >= 0 && from < chunks;
          if (receives && !sends_.count({from, mb, forward})) break;
          stage_ = static_cast<int>(st);
          id_prefix_ = mb > 0 ? "mb" + std::to_string(mb) + "." : "";
          const size_t begin = g_.ops.size();
          if (receives) gather_received_slices(forward ? StepPhase::kForward : StepPhase::kBackward, chunk);
          if (forward) forward_pass(chunk, mb);
          // Sharded weights keep only their shard of the gradients: each pass reduce-scatters its own.
          else backward_pass(chunk, mb, mb == micro - 1 || sharded_embedding());
          if (receives) wait_for_receive(begin, sends_.at({from, mb, forward}));
          progress = true;
        }
      }
    }
    for (int64_t st = 0; st < stages; ++st)
      if (next[static_cast<size_t>(st)] != programs[static_cast<size_t>(st)].size())
        throw std::logic_error("build_step_graph: the pipeline programs wait for each other (stage " +
                               std::to_string(st) + ")");
    id_prefix_.clear();
    for (int64_t st = 0; st < stages; ++st) {
      stage_ = static_cast<int>(st);
      const bool holds_embedding = st == 0 || st == stages - 1;
      // (Sharded weights reduce-scatter the embedding's gradient after each pass that uses it.)
      if (s_.dp > 1 && s_.overlap_grad_reduction && holds_embedding && !sharded_embedding())
        collective(-1, "embed_grad_allreduce", StepPhase::kBackward, grad_reduction_kind(), CommAxis::kData,
                   end_gradient_bytes(), false);
      if (!s_.overlap_grad_reduction) all_gradients_at_once();
    }
    // The tied embedding's two copies (first and last stage) add their gradients once each end has its
    // data-parallel sum (Megatron-LM's order): one all-reduce, which both ends' streams run.
    if (stages > 1 && m_.tied_embeddings) {
      std::vector<int> ends_ready;  // each end's last op so far: its embedding gradient is complete
      for (int64_t end : {int64_t{0}, stages - 1})
        for (size_t i = g_.ops.size(); i-- > 0;)
          if (g_.ops[i].stage == end) {
            ends_ready.push_back(static_cast<int>(i));
            break;
          }
      for (int64_t end : {int64_t{0}, stages - 1}) {
        stage_ = static_cast<int>(end);
        // With sharded weights each end sums only its shard, the dp reduce-scatter having left it that.
        collective(-1, "embed_tie_allreduce", StepPhase::kBackward, CollectiveKind::kAllReduce,
                   CommAxis::kPipelineEnds, V_ * M_ * w_ / tp_ / (sharded_embedding() ? static_cast<double>(s_.dp) : 1.0));
        g_.ops.back().deps = ends_ready;
      }
    }
    for (int64_t st = 0; st < stages; ++st) {
      stage_ = static_cast<int>(st);
      optimizer(K);
      // The optimizer waits for every overlapped gradient reduction of its stage.
      for (size_t i = 0; i + 1 < g_.ops.size(); ++i)
        if (g_.ops[i].stage == stage_ && g_.ops[i].kind == OpKind::kCollective && !g_.ops[i].blocking &&
            g_.ops[i].phase == StepPhase::kBackward)
          g_.ops.back().deps.push_back(static_cast<int>(i));
    }
    // Useful FLOPs: the model's training FLOPs for this rank's tokens (tp ranks share them, and
    // pipeline stages the layers: a stage's average).
    ModelConfig partial = m_;
    partial.layers = K;
    g_.model_flops =
        flops_per_token(partial).train() * T_ * static_cast<double>(micro) / tp_ / static_cast<double>(stages);
    return std::move(g_);
  }

  // The blocks of the current stage (with pp = 1: the first K).
  std::vector<int64_t> stage_blocks() const { return layout_.blocks_of_stage(stage_); }
  bool input_end() const { return stage_ == 0; }
  bool output_end() const { return stage_ == layout_.stages - 1; }
  // The embedding matrices the current stage holds: the tied one at either end, or each end's own.
  double embedding_matrices() const {
    const int ends = (input_end() ? 1 : 0) + (output_end() ? 1 : 0);
    return m_.tied_embeddings ? (ends > 0 ? 1 : 0) : ends;
  }
  // Gradient bytes of the stage's weights outside the blocks: its embedding matrices (vocabulary
  // sliced over tp), at the input end absolute position embeddings, and at the output end the final
  // norm's scales (both whole on every tp rank).
  double end_gradient_bytes() const {
    const double positions = input_end() && m_.position_encoding == "absolute" ? static_cast<double>(m_.seq_len) * M_ : 0;
    return embedding_matrices() * V_ * M_ * w_ / tp_ + positions * w_ + (output_end() ? M_ * w_ : 0);
  }

  // One micro-batch's forward pass through one chunk of blocks; a chunk before the last ends by
  // sending its output activations on to the next chunk's stage (the sender's stream carries the
  // transfer, as blocking p2p does).
  void forward_pass(int64_t chunk, int64_t mb) {
    const int64_t per_chunk = layout_.blocks_per_chunk();
    // The first micro-batch waits for the weights the optimizer updated: the embedding's at the start
    // of a pass that uses it, each block's one block ahead. Sharded weights gather the embedding in every
    // pass that uses it, as they do the blocks.
    const bool gathers = mb == 0 && gathers_updated_weights() && s_.dp > 1;
    std::optional<size_t> embedding_gather;
    if (chunk == 0 || chunk == layout_.chunks() - 1) {
      if (gathers)
        embedding_gather = gather_embedding("embed_param_allgather", StepPhase::kForward, read_weight_bytes());
      else if (sharded_embedding())
        embedding_gather = gather_embedding("embed_weight_allgather", StepPhase::kForward, e_);
    }
    if (chunk == 0) {
      elementwise(-1, op_name::kEmbed, StepPhase::kForward, T_ * M_, 2);
      last_op_waits_for(embedding_gather);
      // vocabulary-parallel embedding: each slice looks up the tokens it holds, zeros for the rest; the
      // slices' sums, or with sequence parallelism each rank's tokens of them
      if (s_.tp > 1)
        collective(-1, sp_ ? "embed_tp_reducescatter" : "embed_tp_allreduce", StepPhase::kForward,
                   sp_ ? CollectiveKind::kReduceScatter : CollectiveKind::kAllReduce, CommAxis::kTensor, T_ * M_ * e_);
    }
    for (int l = static_cast<int>(chunk * per_chunk); l < (chunk + 1) * per_chunk; ++l) {
      auto block_gathers = weight_gather(l, StepPhase::kForward);
      if (gathers) {
        const auto updated = updated_weight_gather(l);
        block_gathers.insert(block_gathers.end(), updated.begin(), updated.end());
      }
      block_forward(l, load_of(l));
      wait_for_gather(block_gathers);
    }
    if (chunk == layout_.chunks() - 1) {
      elementwise(-1, op_name::kFinalNorm, StepPhase::kForward, Tsp_ * M_, 2);
      if (sp_)
        collective(-1, "logits_tp_allgather", StepPhase::kForward, CollectiveKind::kAllGather, CommAxis::kTensor,
                   T_ * M_ * e_);
      matmul(-1, op_name::kLogits, StepPhase::kForward, T_, M_, V_, tp_);
      last_op_waits_for(embedding_gather);
      elementwise(-1, op_name::kLoss, StepPhase::kForward, T_ * V_ / tp_, 3);
    } else {
      send_pass_output(StepPhase::kForward, chunk, mb);
    }
  }

  // One micro-batch's backward pass through one chunk; a chunk after the first ends by sending the
  // gradient of its input back. `reduce`: the pass reduces its blocks' gradients (the step's final
  // pass of these blocks, or every pass with sharded weights).
  void backward_pass(int64_t chunk, int64_t mb, bool reduce) {
    const int64_t per_chunk = layout_.blocks_per_chunk();
    if (chunk == layout_.chunks() - 1) {
      // The input gradient of the logits reads the embedding: gathered again with sharded weights.
      std::optional<size_t> gather;
      if (sharded_embedding()) gather = gather_embedding("embed_weight_allgather", StepPhase::kBackward, e_);
      matmul(-1, op_name::kLogits, StepPhase::kBackward, T_, M_, V_, tp_);
      last_op_waits_for(gather);
      // each vocabulary slice's share of the final norm's output gradient
      if (s_.tp > 1)
        collective(-1, sp_ ? "logits_tp_reducescatter" : "logits_tp_allreduce", StepPhase::kBackward,
                   sp_ ? CollectiveKind::kReduceScatter : CollectiveKind::kAllReduce, CommAxis::kTensor, T_ * M_ * e_);
      elementwise(-1, op_name::kFinalNorm, StepPhase::kBackward, Tsp_ * M_, 2);
    }
    for (int l = static_cast<int>((chunk + 1) * per_chunk) - 1; l >= chunk * per_chunk; --l) {
      auto gathers = weight_gather(l, StepPhase::kBackward);
      if (s_.recompute) block_forward(l, load_of(l), "recompute.");
      wait_for_gather(gathers);
      if (m_.is_moe_layer(l)) moe_ffn(l, StepPhase::kBackward, load_of(l));
      else dense_ffn(l, StepPhase::kBackward);
      attention(l, StepPhase::kBackward);
      if (reduce) grad_reduction(l);
    }
    if (chunk == 0) {
      // the reduce-scatter's gradient: every token's, for each vocabulary slice's rows
      if (sp_)
        collective(-1, "embed_tp_allgather", StepPhase::kBackward, CollectiveKind::kAllGather, CommAxis::kTensor,
                   T_ * M_ * e_);
      elementwise(-1, op_name::kEmbed, StepPhase::kBackward, T_ * M_, 2);
    } else {
      send_pass_output(StepPhase::kBackward, chunk, mb);
    }
    if (sharded_embedding() && s_.overlap_grad_reduction && (chunk == 0 || chunk == layout_.chunks() - 1))
      collective(-1, "embed_grad_allreduce", StepPhase::kBackward, CollectiveKind::kReduceScatter, CommAxis::kData,
                 end_gradient_bytes(), false);
  }
  // The op just made waits for `op`, if there is one.
  void last_op_waits_for(const std::optional<size_t>& op) {
    if (op) g_.ops.back().deps.push_back(static_cast<int>(*op));
  }
  // With sharded weights the embedding is sharded over dp like the blocks (plan_memory).
  bool sharded_embedding() const { return s_.shard_weights && s_.dp > 1; }
  // A non-blocking gather of the embedding matrices a sharded stage needs; returns its index. The
  // forward pass needs those the stage holds, the backward pass only the output one (for the logits'
  // input gradient: the lookup's backward pass reads no weights).
  size_t gather_embedding(const std::string& name, StepPhase ph, double bytes_per_weight) {
    const double matrices = ph == StepPhase::kForward ? embedding_matrices() : 1.0;
    collective(-1, name, ph, CollectiveKind::kAllGather, CommAxis::kData, matrices * V_ * M_ / tp_ * bytes_per_weight,
               false);
    return g_.ops.size() - 1;
  }

  // Each tp rank sends its 1/tp slice of the activations, and the receiving tp group gathers them
  // over its own links (Megatron-LM's scatter-gather of p2p transfers, its default).
  // With interleaved stages the last stage sends on to the first (the next chunk), and back: the
  // sends go round a ring; each send's id names its chunk.
  void send_pass_output(StepPhase ph, int64_t chunk, int64_t mb) {
    collective(-1, "pp_send", ph, CollectiveKind::kSendRecv, CommAxis::kPipeline, T_ * M_ * e_ / tp_);
    StepOp& op = g_.ops.back();
    op.a2a_transposed = ph == StepPhase::kBackward;
    op.send_wraps = layout_.virtual_stages > 1;  // every stage sends: the schedule's sends go round a ring
    name_by_chunk(op, chunk);
    sends_[{chunk, mb, ph == StepPhase::kForward}] = g_.ops.size() - 1;
  }
  // The received slices, gathered into whole activations (or gradients) before the pass uses them.
  void gather_received_slices(StepPhase ph, int64_t chunk) {
    if (s_.tp <= 1 || sp_) return;  // with sequence parallelism each tp rank works on its slice
    collective(-1, "pp_recv_allgather", ph, CollectiveKind::kAllGather, CommAxis::kTensor, T_ * M_ * e_);
    name_by_chunk(g_.ops.back(), chunk);
  }
  // With interleaved stages a stage sends and receives for several chunks: their ids name the chunk.
  void name_by_chunk(StepOp& op, int64_t chunk) const {
    if (layout_.virtual_stages > 1)
      op.id = id_prefix_ + "s" + std::to_string(stage_) + ".c" + std::to_string(chunk) + "." + op.name + "." +
              phase_name(op.phase);
  }
  // The chunk's first op on the compute stream waits for the neighbour's send.
  void wait_for_receive(size_t begin, size_t send) {
    for (size_t i = begin; i < g_.ops.size(); ++i)
      if (g_.ops[i].kind != OpKind::kCollective || g_.ops[i].blocking) {
        g_.ops[i].deps.push_back(static_cast<int>(send));
        return;
      }
  }

  const MoeLayerLoad& load_of(int l) const {
    int moe_index = 0;
    for (int i = 0; i < l; ++i) moe_index += m_.is_moe_layer(i) ? 1 : 0;
    return static_cast<size_t>(moe_index) < per_micro_loads_.size() ? per_micro_loads_[static_cast<size_t>(moe_index)]
                                                                    : uniform_;
  }

  void block_forward(int l, const MoeLayerLoad& load, const std::string& prefix = "") {
    size_t begin = g_.ops.size();
    attention(l, StepPhase::kForward);
    if (m_.is_moe_layer(l)) moe_ffn(l, StepPhase::kForward, load);
    else dense_ffn(l, StepPhase::kForward);
    for (size_t i = begin; i < g_.ops.size(); ++i) {
      g_.ops[i].id = prefix + g_.ops[i].id;
      if (!prefix.empty()) g_.ops[i].phase = StepPhase::kBackward;
    }
  }

  // With sharded weights a block's weights are gathered (in the activation precision) before its
  // forward and again before its backward: non-expert weights over dp, expert weights over the
  // expert replicas. Gathers are issued one block ahead, so they overlap the previous block's
  // compute. Returns the indices of the gather ops.
  std::vector<size_t> weight_gather(int l, StepPhase ph) {
    if (!s_.shard_weights) return {};
    return block_gathers(l, ph, "weight_allgather", "expert_weight_allgather", e_);
  }
  // With the distributed optimizer, the block's updated weights, once per step.
  std::vector<size_t> updated_weight_gather(int l) {
    return block_gathers(l, StepPhase::kForward, "param_allgather", "expert_param_allgather", read_weight_bytes());
  }
  std::vector<size_t> block_gathers(int l, StepPhase ph, const std::string& dense_name, const std::string& expert_name,
                                    double bytes_per_weight) {
    std::vector<size_t> out;
    if (s_.dp > 1)
      out.push_back(insert_gather(l, ph, dense_name, CommAxis::kData, layer_dense_bytes(l) / w_ * bytes_per_weight));
    if (m_.is_moe_layer(l) && s_.dp / s_.ep > 1)
      out.push_back(insert_gather(l, ph, expert_name, CommAxis::kExpertData,
                                  layer_expert_bytes(l) / w_ * bytes_per_weight));
    // A later insertion shifts the earlier one by one.
    if (out.size() == 2 && out[1] <= out[0]) ++out[0];
    return out;
  }
  size_t insert_gather(int l, StepPhase ph, const std::string& name, CommAxis axis, double bytes) {
    StepOp op = make(l, name, ph, OpKind::kCollective, 0, 0);
    op.collective = CollectiveKind::kAllGather;
    op.axis = axis;
    op.comm_bytes = bytes;
    op.blocking = false;
    // Issue it before the previous block's ops: find where that block started (its collectives, the
    // all-to-alls and tp all-reduces inside it and the gradient reductions after it, included; its own
    // gathers, issued before it, not).
    size_t insert_at = g_.ops.size();
    for (size_t i = g_.ops.size(); i-- > 0;) {
      const StepOp& earlier = g_.ops[i];
      const bool gather =
          earlier.kind == OpKind::kCollective && earlier.collective == CollectiveKind::kAllGather && !earlier.blocking;
      if (earlier.layer == (ph == StepPhase::kForward ? l - 1 : l + 1) && earlier.stage == stage_ && !gather)
        insert_at = i;
      else
        break;
    }
    shift_deps(insert_at);
    g_.ops.insert(g_.ops.begin() + static_cast<std::ptrdiff_t>(insert_at), std::move(op));
    return insert_at;
  }
  void wait_for_gather(const std::vector<size_t>& gathers) {
    for (size_t gather : gathers)
      for (size_t i = gather + 1; i < g_.ops.size(); ++i)
        if (g_.ops[i].layer == g_.ops[gather].layer && g_.ops[i].kind != OpKind::kCollective) {
          g_.ops[i].deps.push_back(static_cast<int>(gather));
          break;
        }
  }
  // Deps point to earlier ops, so only the ops from the insertion point on can name an index it
  // shifts: visiting those alone keeps building linear in the ops (all ops each time made a step of
  // 256 micro-batches take minutes).
  void shift_deps(size_t inserted) {
    for (size_t i = inserted; i < g_.ops.size(); ++i)
      for (int& d : g_.ops[i].deps)
        if (static_cast<size_t>(d) >= inserted) ++d;
    for (auto& [key, send] : sends_)
      if (send >= inserted) ++send;
  }

  // Adafactor reads weights, gradients and factored moments and writes weights: memory bound.
  void optimizer(int64_t K) {
    ModelConfig partial = m_;
    partial.layers = K;
    // Each rank updates its shard: of tp (and ep) alone, or of dp as well when the weights or the
    // optimizer are sharded over it.
    const bool over_dp = updates_a_shard();
    ShardingForMemory sh;
    sh.dense_shards = s_.tp * (over_dp ? s_.dp : 1);
    sh.tp = s_.tp;  // the norms and the router are whole on each tp rank
    sh.expert_shards =
        std::min<int64_t>(s_.ep, std::max<int64_t>(m_.experts, 1)) * s_.tp * (over_dp ? s_.dp / s_.ep : 1);
    if (layout_.stages > 1) sh.blocks_held = stage_blocks();
    sh.input_end = input_end(), sh.output_end = output_end();
    MemoryFootprint fp = memory_per_chip(partial, sh);
    double bytes = 2 * fp.weights_bytes + fp.gradients_bytes + 2 * fp.optimizer_bytes;
    if (s_.narrow_weight_copy && e_ < w_) bytes += fp.weights_bytes / w_ * (w_ + e_);  // read again, write narrow
    add(-1, op_name::kOptimizer, StepPhase::kOptimizer, OpKind::kElementwise, fp.weights_bytes / w_ * 10, bytes);
  }

 private:
  void run(std::vector<std::function<void()>>& seq, StepPhase ph) {
    if (ph == StepPhase::kForward) {
      for (auto& f : seq) f();
    } else {
      for (auto it = seq.rbegin(); it != seq.rend(); ++it) (*it)();
    }
  }
  StepOp make(int layer, const std::string& name, StepPhase ph, OpKind kind, double flops, double bytes) const {
    StepOp op;
    op.name = name;
    op.layer = layer;
    op.phase = ph;
    op.kind = kind;
    op.stage = stage_;
    op.flops = flops;
    op.bytes = bytes;
    std::string suffix = ph == StepPhase::kOptimizer || name.find("grad_allreduce") != std::string::npos
                             ? ""
                             : std::string(".") + phase_name(ph);
    // Blocks belong to one stage; the ops outside them (embedding, head, sends, optimizer) carry theirs.
    std::string where = layer >= 0 ? "L" + std::to_string(layer) + "." : s_.pp > 1 ? "s" + std::to_string(stage_) + "." : "";
    op.id = id_prefix_ + where + name + suffix;
    return op;
  }
  void add(int layer, const std::string& name, StepPhase ph, OpKind kind, double flops, double bytes) {
    const auto phases = op_name::is_compute_op(name) ? op_name::phases_of(name) : std::span<const std::string_view>();
    if (std::find(phases.begin(), phases.end(), phase_name(ph)) == phases.end())
      throw std::logic_error("StepGraph: compute op " + name + "." + phase_name(ph) + " is not in op_names.h");
    g_.ops.push_back(make(layer, name, ph, kind, flops, bytes));
  }

  const ModelConfig& m_;
  const StepShape& s_;
  double e_, w_, T_, tp_, M_, A_, V_;
  bool sp_ = false;
  double Tsp_ = 0;  // tokens of one tp rank where sequence parallelism splits them (T_ without it)
  StepGraph g_;
  std::string id_prefix_;  // the micro-batch pass of the ops being made
  int stage_ = 0;          // the pipeline stage of the ops being made
  std::vector<MoeLayerLoad> per_micro_loads_;
  MoeLayerLoad uniform_;
  PipelineLayout layout_;
  // The index of each send: (sending chunk, micro-batch, forward) -> op.
  std::map<std::tuple<int64_t, int64_t, bool>, size_t> sends_;
};

}  // namespace

StepGraph build_step_graph(const ModelConfig& m, const StepShape& s, const std::vector<MoeLayerLoad>& loads) {
  if (s.tokens_per_rank <= 0 || s.tp <= 0 || s.dp <= 0 || s.ep <= 0 || s.pp <= 0)
    throw std::invalid_argument("build_step_graph: non-positive shape");
  if (s.virtual_stages <= 0 || blocks_run(m, s) % (s.pp * s.virtual_stages) != 0)
    throw std::invalid_argument("build_step_graph: pp x virtual_stages does not divide the blocks");
  return Builder(m, s).build(loads);
}

}  // namespace glam
