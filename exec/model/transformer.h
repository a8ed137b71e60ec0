#pragma once
// The GLaM training step on one rank (Du et al., GLaM, ICML 2022): tied embedding, pre-norm RMSNorm,
// causal multi-head attention with a learned T5 relative position bias, gated-GELU dense FFN,
// MoE FFN every other block (GShard top-2 router, capacity, index dispatch/combine, experts split
// over ranks with all-to-alls), final norm, logits, cross-entropy + z-loss + load-balancing loss,
// and the hand-written backward pass of all of it. T is the activation type: float (the model),
// bf16 (as GLaM trained: bf16 activations and products with float32 accumulation, float32 master
// weights, gradients and optimizer state; the router and the loss in float32) or double (the
// reference path of the gradient checks). Every kernel call goes through kernels/*.h.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "comm/communicator.h"
#include "core/device_buffer.h"
#include "core/op_timer.h"
#include "activation.h"
#include "elementwise.h"
#include "embedding.h"
#include "gemm.h"
#include "kernel_context.h"
#include "model/layout.h"
#include "model_config.h"
#include "router.h"
#include "step_graph.h"

namespace glam::exec {

// What one rank runs: `seqs` sequences of seq_len tokens per micro-batch, `microbatches` of them
// per step (gradient accumulation); the `ranks` ranks of a stage split the experts (expert
// parallelism) and replicate everything else (data parallelism). With tensor parallelism each of
// those is a group of `tp` ranks that share its tokens and split its matrices (Megatron-LM's slices,
// layout.h), adding up their partial products. With pipeline stages each stage is such a group of
// ranks and holds its chunks of consecutive blocks (StepShape's layout: pp x virtual_stages chunks,
// chunk c on stage c % pp), and the stages run the StepGraph's 1F1B programs.
// World rank = (stage x ranks + rank) x tp + tp_rank: the tensor-parallel ranks are neighbours.
struct ExecShape {
  int64_t seqs = 1;
  int64_t seq_len = 0;
  int ranks = 1;  // data- and expert-parallel ranks of one stage
  int rank = 0;   // within the stage
  int64_t microbatches = 1;
  int stages = 1;
  int stage = 0;
  int virtual_stages = 1;
  int tp = 1;       // tensor-parallel ranks per data-parallel rank
  int tp_rank = 0;  // this rank's slice
  int world_rank() const { return (stage * ranks + rank) * tp + tp_rank; }
  // This shape with the stage, rank and slice of world rank `world` (the inverse of world_rank()).
  ExecShape at_world_rank(int world) const {
    ExecShape s = *this;
    s.tp_rank = world % tp, s.rank = world / tp % ranks, s.stage = world / (tp * ranks);
    return s;
  }
  int world_size() const { return stages * ranks * tp; }
  int64_t tokens() const { return seqs * seq_len; }  // one micro-batch on this rank: the buffers' size
  int64_t global_tokens() const { return tokens() * ranks * microbatches; }  // the step's global batch
};

// Checks that the executor implements the model's settings (position encoding, optimizer, MoE
// dispatch, weight precision): ConfigError naming `file` (the model's file) and the key otherwise.
void check_executor_settings(const ModelConfig& m, const std::string& file);
// The MoE experts split evenly over the expert-parallel ranks of a stage (data- and expert-parallel
// ranks, tensor-parallel slices apart); checked before the batch, whose error would otherwise come first.
void check_experts_divide(const ModelConfig& m, int64_t ranks, int64_t stages);
// Checks that the model and shape can run here (the settings, as check_executor_settings, naming the
// model's id); throws UsageError or ConfigError with a clear message.
void check_runnable(const ModelConfig& m, const ExecShape& s);
// The same check as a yes or no.
bool runnable(const ModelConfig& m, const ExecShape& s);

// The chunks of blocks, the stages' programs and their activations in flight (the StepGraph's).
PipelineLayout pipeline_layout(const ModelConfig& m, const ExecShape& s);

// The communicators a rank talks to the others through besides its stage's data-parallel ranks:
// `world` holds every rank (ExecShape::world_rank) and carries the sends between stages; `ends` holds
// the first and last stage's ranks of one data-parallel index and slice (null elsewhere), which both
// keep the tied embedding; `tensor` holds the tp ranks that share this rank's tokens (null when tp is 1).
struct PipelineLinks {
  Communicator* world = nullptr;
  Communicator* ends = nullptr;
  Communicator* tensor = nullptr;
};

// The communicators of one rank of `world`, made (collectively) for its shape: its stage's ranks that
// hold the same tensor slice (the world itself without stages and tensor parallelism), with tied
// embeddings the end stages' ranks of its data-parallel index and slice, and its tensor-parallel group.
struct PipelineComms {
  Communicator* world = nullptr;
  std::unique_ptr<Communicator> stage_owned, ends, tensor;
  Communicator& stage() { return stage_owned ? *stage_owned : *world; }
  PipelineLinks links() { return {world, ends.get(), tensor.get()}; }
};
PipelineComms make_pipeline_comms(Communicator& world, const ExecShape& shape, bool tied_embeddings);

// The id of an op outside the blocks ("loss.fwd"): with pipeline stages it names the stage
// ("s1.loss.fwd"), as the StepGraph's do.
std::string stage_op_id(const ExecShape& s, const std::string& name);

// One micro-batch's tokens on this rank (device pointers, tokens() each).
struct MicroBatchTokens {
  const int32_t* inputs = nullptr;
  const int32_t* targets = nullptr;
};

struct StepLoss {
  double total = 0;  // ce + z_weight * z + aux_weight * aux (what the gradients are of)
  double ce = 0;     // mean cross-entropy over the global batch
  double z = 0;      // mean logsumexp^2
  double aux = 0;    // sum over MoE layers of the mean per-group balancing loss (1 = uniform)
  // Pipeline stages: the share of `aux` from MoE layers outside the last chunk, this rank's alone (its
  // sum over the ranks of every stage completes `aux`; see reduce_pipeline_loss). 0 without stages.
  double aux_unreduced = 0;
  void add(const StepLoss& o) {
    total += o.total, ce += o.ce, z += o.z, aux += o.aux, aux_unreduced += o.aux_unreduced;
  }
};

struct MoeLayerStats {
  int64_t layer = 0;
  std::vector<int64_t> expert_load;     // copies kept per (global) expert, this rank's tokens
  std::vector<int64_t> expert_dropped;  // copies routed to each expert beyond its capacity
  int64_t routed = 0;                   // copies routed (tokens x top_k)
  int64_t skipped = 0;                  // second copies not taken by random routing
  // Copies dropped for capacity.
  int64_t dropped() const { return std::accumulate(expert_dropped.begin(), expert_dropped.end(), int64_t{0}); }
  void clear() {
    std::fill(expert_load.begin(), expert_load.end(), 0);
    std::fill(expert_dropped.begin(), expert_dropped.end(), 0);
    routed = skipped = 0;
  }
  void add(const MoeLayerStats& o) {  // of the same layer
    for (size_t e = 0; e < o.expert_load.size(); ++e) expert_load[e] += o.expert_load[e];
    for (size_t e = 0; e < o.expert_dropped.size(); ++e) expert_dropped[e] += o.expert_dropped[e];
    routed += o.routed, skipped += o.skipped;
  }
};

// The ops of the StepGraph a layer holds (op ids "L{l}.{name}.{fwd|bwd}").
enum class LayerOp {
  kAttnNorm, kAttnQkv, kAttnScores, kAttnSoftmax, kAttnContext, kAttnOut,
  kFfnNorm, kFfnIn, kFfnAct, kFfnOut,
  kMoeRouter, kMoeDispatchA2a, kMoeExpertIn, kMoeExpertAct, kMoeExpertOut, kMoeCombineA2a, kMoePermute,
  kMoeUnpermute, kAttnTpAllreduce, kFfnTpAllreduce, kCount
};
const char* layer_op_name(LayerOp op);
std::string layer_op_id(int64_t layer, LayerOp op, bool backward);

template <class T>
class Transformer {
 public:
  using Master = kernels::master_t<T>;  // weights, gradients, router and loss: T, or float32 for bf16

  // `comm`: the ranks of this stage that hold the same tensor slice (data and expert parallelism).
  // `links`: the other stages (needed when shape.stages > 1) and the tensor-parallel slices (when
  // shape.tp > 1; without them the model can only count its buffers, as step_memory does).
  Transformer(const ModelConfig& m, const ExecShape& shape, Communicator& comm, const kernels::KernelContext& ctx,
              PipelineLinks links = {});

  const ModelConfig& config() const { return m_; }
  const ExecShape& shape() const { return s_; }
  const ModelLayout& layout() const { return layout_; }
  Master* params() { return params_.data(); }
  int64_t param_elements() const { return params_.size(); }
  kernels::Backend memory_backend() const { return params_.backend(); }  // where params() and grads() live
  Master* grads() { return grads_.data(); }
  Master* param(int index) { return params_.data() + offset(index); }
  Master* grad(int index) { return grads_.data() + offset(index); }

  // Deterministic, rank-count-independent initial values.
  void init_params(uint64_t seed);

  // One forward pass (and the backward pass into grads() when `backward`) of micro-batch
  // `microbatch` of the step on this rank's tokens (device pointers, tokens() each). The first
  // micro-batch refreshes the bf16 weights and zeroes the gradients; later ones add to them.
  // Collective over the communicator; the losses returned are this micro-batch's shares of the means
  // over the step's global batch (they add up over its micro-batches). `step` seeds random routing.
  // Without pipeline stages only.
  StepLoss run(const int32_t* inputs, const int32_t* targets, int64_t step, bool backward, OpTimer* timer = nullptr,
               int64_t microbatch = 0);

  // The passes of a stage's program (pipeline_layout(...).program(stage)), run in its order. A forward
  // pass receives its input from the previous chunk's stage (or embeds the tokens) and sends its output
  // on (or computes the loss, whose shares it returns); a backward pass receives its output's gradient
  // (or starts from the loss) and sends its input's gradient back. The step's first forward pass on the
  // stage refreshes the bf16 weights, its first backward pass zeroes the gradients. Sends are buffered:
  // wait_sends() before the gradients are reduced.
  StepLoss forward_pass(int64_t chunk, int64_t microbatch, MicroBatchTokens tokens, int64_t step, OpTimer* timer = nullptr);
  void backward_pass(int64_t chunk, int64_t microbatch, MicroBatchTokens tokens, OpTimer* timer = nullptr);
  void wait_sends();

  // Sum the replicated weights' gradients over the stage's ranks that hold the same slice (data
  // parallelism), then the tied embedding's over the first and last stage. (The tensor-parallel slices
  // need no sum: a whole tensor's gradient is the same on each, from the same summed activations.)
  void allreduce_gradients(OpTimer* timer = nullptr);

  // The step's losses, from the shares each rank's forward passes returned (summed): collective over
  // every stage (links.world); the same as the shares' sum without stages.
  StepLoss reduce_pipeline_loss(const StepLoss& shares);

  // Each MoE layer's routing in its latest forward pass (layers this stage does not hold: empty).
  const std::vector<MoeLayerStats>& moe_stats() const { return moe_stats_; }
  // Each MoE layer's routing summed over the step's forward passes so far (every MoE layer of the
  // model has an entry, zeros for the layers of other stages, so that ranks can add them up).
  const std::vector<MoeLayerStats>& step_moe_stats() const { return step_moe_stats_; }
  // bf16: the float32 logits are computed this many token rows at a time (0: 1 GiB of them, the
  // default); float32 keeps them whole. Reallocates their buffer.
  void set_logit_chunk_rows(int64_t rows);
  int64_t logit_chunk_rows() const { return logit_chunk_rows_; }
  // The sums over the tensor-parallel slices that the sliced optimizer needs (null when tp is 1, or
  // when the model was built without links.tensor: then the optimizer refuses the sliced weights).
  const kernels::ShardReduce* slice_reduce() const { return s_.tp > 1 && links_.tensor ? &slice_reduce_ : nullptr; }
  uint64_t routing_seed = 0x5eed;

 private:
  using W = Master;
  struct LayerActs {
    DeviceBuffer<T> xn1, q, k, v, probs, ctx, mid, xn2;
    DeviceBuffer<W> inv1, inv2;                   // RMSNorm's inverse RMS per token (float32 for bf16)
    DeviceBuffer<T> h0, h1, a;                    // dense FFN
    DeviceBuffer<W> rprobs, gate;                 // MoE router (float32 with bf16 activations)
    DeviceBuffer<T> ein, eh0, eh1, ea, eout, cbuf;  // MoE experts
    DeviceBuffer<int32_t> expert, loc, slot_token;
  };
  int64_t offset(int index) const { return layout_.params[static_cast<size_t>(index)].offset; }
  // The buffers of the micro-batch the current pass runs (its slot of the chunk's activations in flight).
  DeviceBuffer<T>& resid(int64_t l) { return resid_[static_cast<size_t>(l)][static_cast<size_t>(slot_)]; }
  LayerActs& act(int64_t l) { return acts_[static_cast<size_t>(l)][static_cast<size_t>(slot_)]; }
  // The pass's blocks start here (and run blocks_per_chunk()).
  int64_t first_block(int64_t chunk) const { return chunk * pipeline_.blocks_per_chunk(); }
  // The output embedding and its logits' scale (T5 convention: d_model^-1/2 when tied).
  int output_embedding() const { return layout_.unembedding >= 0 ? layout_.unembedding : layout_.embedding; }
  W logit_scale() const {
    return layout_.unembedding >= 0 ? W(1) : static_cast<W>(1.0 / std::sqrt(static_cast<double>(m_.d_model)));
  }
  // The current slot's loss gradient, in T for the products: the float32 logits' buffer itself, or
  // their bf16 copy.
  T* loss_gradient() {
    if constexpr (std::is_same_v<T, W>) return logits_[static_cast<size_t>(slot_)].data();
    else return dlogits_t_[static_cast<size_t>(slot_)].data();
  }
  // The total the gradients are of, from the parts.
  StepLoss with_total(StepLoss l) const {
    l.total = l.ce + m_.z_loss_weight * l.z + m_.aux_loss_weight * l.aux;
    return l;
  }
  // Chooses the slot of (chunk, microbatch) and checks that this stage holds the chunk.
  void enter_pass(int64_t chunk, int64_t microbatch, const char* what);
  int64_t last_chunk() const { return pipeline_.chunks() - 1; }
  int world_rank_of_chunk(int64_t chunk) const;  // this data-parallel index's rank in the chunk's stage
  const std::string& send_id(int64_t chunk, bool backward) const {
    return send_ids_[static_cast<size_t>(2 * chunk + (backward ? 1 : 0))];
  }
  // With tensor parallelism each slice sends its 1/tp part of a pass's output, and the receiving
  // slices gather the parts (Megatron-LM's scatter-gather): `chunk` receives into `data`.
  void receive_pass_input(T* data, int64_t chunk, bool backward, OpTimer* t);
  void send_pass_output(const T* data, int64_t chunk, bool backward, OpTimer* t);
  // The vocabulary ids this slice's embedding rows and logits hold (all of them without slices).
  kernels::EmbeddingRows vocabulary_slice() const { return {s_.tp_rank * vocab_, s_.tp > 1 ? vocab_ : -1}; }
  // Adds this slice's partial sums (of a row-sliced product) over the tensor-parallel ranks.
  void tensor_allreduce(T* data, int64_t n, const std::string& id, OpTimer* t);
  // The ops outside the blocks (with pipeline stages their ids name the stage: "s1.loss.fwd").
  enum class StageOp {
    kEmbedFwd, kEmbedBwd, kFinalNormFwd, kFinalNormBwd, kLogitsFwd, kLogitsBwd, kLossFwd, kOptimizer,
    kGradAllreduce, kEmbedTieAllreduce, kEmbedTpAllreduce, kLogitsTpAllreduce, kCount
  };
  const std::string& stage_id(StageOp op) const { return stage_ids_[static_cast<size_t>(op)]; }
  // The weights as the step reads them: the master weights, or their bf16 copy.
  const T* weight(int index) const;
  const std::string& id(int64_t layer, LayerOp op, bool bwd) const {
    return op_ids_[static_cast<size_t>(layer)][static_cast<size_t>(op)][bwd ? 1 : 0];
  }
  void attention_forward(int64_t l, OpTimer* t);
  void attention_backward(int64_t l, OpTimer* t);
  void dense_forward(int64_t l, OpTimer* t);
  void dense_backward(int64_t l, OpTimer* t);
  void moe_forward(int64_t l, int64_t step, OpTimer* t);
  // The routing statistics of the pass's MoE layers (blocks [b0, b1)) into moe_stats_ and
  // step_moe_stats_, read from the device in one copy; returns this rank's sum of their per-group
  // auxiliary losses.
  double read_pass_routing(int64_t b0, int64_t b1);
  // The model's MoE layer that block l is (its row in aux_ and route_counts_).
  int64_t moe_index(int64_t l) const { return l / std::max<int64_t>(m_.moe_every, 1); }
  void moe_backward(int64_t l, OpTimer* t);
  // y = x W (x [rows,in], W [in,out]); backward: dx (+)= dy W^T, dW += x^T dy. With batch > 1, that many
  // independent products over consecutive blocks of x, W, y (the experts of a layer, which all have
  // `rows` slots): one batched product instead of one per expert.
  template <class Y>  // T, or the float32 router logits
  void linear_forward(const T* x, const T* w, Y* y, int64_t rows, int64_t in, int64_t out, int64_t batch = 1) {
    if (batch == 1) kernels::gemm<T>(ctx_, false, false, rows, out, in, 1, x, in, w, out, 0, y, out);
    else
      kernels::gemm_strided_batched<T>(ctx_, false, false, rows, out, in, 1, x, in, rows * in, w, out, in * out, 0, y,
                                       out, rows * out, batch);
  }
  void linear_backward(const T* x, const T* w, const T* dy, T* dx, W* dw, int64_t rows, int64_t in, int64_t out,
                       bool accumulate_dx, int64_t batch = 1);
  // `src` as type To: src itself when the types agree, else converted into `tmp`.
  template <class To, class From>
  const To* as_type(const From* src, DeviceBuffer<To>& tmp, int64_t n) {
    if constexpr (std::is_same_v<To, From>) {
      return src;
    } else {
      kernels::convert<From, To>(ctx_, src, tmp.data(), n);
      return tmp.data();
    }
  }
  kernels::RouterShape router_shape() const;

  ModelConfig m_;
  ExecShape s_;
  Communicator& comm_;
  const kernels::KernelContext& ctx_;
  ModelLayout layout_;
  std::vector<std::array<std::array<std::string, 2>, static_cast<size_t>(LayerOp::kCount)>> op_ids_;
  kernels::Activation ffn_act_, expert_act_;
  kernels::ShardReduce slice_reduce_;  // over links_.tensor
  // This slice's share of the sliced dimensions: heads, their width, hidden units, vocabulary rows.
  int64_t heads_ = 0, attn_width_ = 0, ffn_hidden_ = 0, expert_hidden_ = 0, vocab_ = 0;
  int64_t capacity_ = 0, groups_ = 0, slots_ = 0, logit_chunk_rows_ = 0;
  int64_t microbatch_ = 0;  // the one the current pass is on
  int64_t slot_ = 0;        // its buffers
  double aux_scale_ = 0;
  PipelineLinks links_;
  PipelineLayout pipeline_;
  std::vector<int64_t> chunk_slots_;  // per chunk this stage holds (by chunk / stages): activations in flight
  std::vector<std::string> send_ids_, recv_ids_;  // [chunk][fwd, bwd]
  std::array<std::string, static_cast<size_t>(StageOp::kCount)> stage_ids_;

  DeviceBuffer<W> params_, grads_;
  DeviceBuffer<T> weights_;  // bf16 copy of params_, refreshed at the start of every step (empty when T is W)
  DeviceBuffer<int32_t> bucket_;  // relative position buckets by query-key distance [T]
  // Per block, one set per activation slot of its chunk (blocks of other stages: none).
  std::vector<std::vector<DeviceBuffer<T>>> resid_;  // block inputs, layers + 1 (the last: the output)
  std::vector<std::vector<LayerActs>> acts_;
  // The output end, per slot of the last chunk: the final norm's output and inverse RMS, and the loss
  // gradient (float32: the logits' buffer itself, [tokens, vocab], overwritten in place)
  std::vector<DeviceBuffer<T>> hn_;
  std::vector<DeviceBuffer<W>> inv_final_;
  std::vector<DeviceBuffer<W>> logits_;  // [tokens, vocab] per slot, or one chunk of rows with bf16 activations
  DeviceBuffer<W> ce_, lse_;
  // backward scratch
  DeviceBuffer<T> dres_, dxn_, dq_, dk_, dv_, dctx_, dscores_, dh0_, dh1_, da_;
  DeviceBuffer<T> received_slice_;  // stages with slices: this slice's part of a received pass input
  DeviceBuffer<T> sendbuf_, recvbuf_, deh0_, deh1_, dea_;
  DeviceBuffer<W> dgate_, drl_;
  DeviceBuffer<W> aux_;                  // [MoE layers, groups]: each layer's per-group auxiliary loss
  DeviceBuffer<int32_t> route_counts_;   // [MoE layers, router_count_bins(experts)]: kernels::router_counts
  // bf16 loss gradient (per slot of the last chunk) and router gradient for the products, from the
  // float32 loss and router (empty when T is W)
  std::vector<DeviceBuffer<T>> dlogits_t_;
  DeviceBuffer<T> drl_t_;
  std::vector<MoeLayerStats> moe_stats_, step_moe_stats_;
};

}  // namespace glam::exec
