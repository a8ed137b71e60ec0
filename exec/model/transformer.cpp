// Construction, the top of the step (embedding, final norm, logits, loss) and the gradient
// reduction. The blocks are in attention_block.cpp, ffn_block.cpp and moe_block.cpp.
#include "model/transformer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>

#include "attention.h"
#include "common/errors.h"
#include "device.h"
#include "elementwise.h"
#include "embedding.h"
#include "gemm.h"
#include "loss.h"
#include "norm.h"
#include "op_names.h"

namespace glam::exec {

namespace k = glam::kernels;

const char* layer_op_name(LayerOp op) {
  namespace n = glam::op_name;
  static const char* names[] = {n::kAttnNorm,    n::kAttnQkv,       n::kAttnScores,      n::kAttnSoftmax,
                                n::kAttnContext, n::kAttnOut,       n::kFfnNorm,         n::kFfnIn,
                                n::kFfnAct,      n::kFfnOut,        n::kMoeRouter,       "moe_dispatch_a2a",
                                n::kMoeExpertIn, n::kMoeExpertAct,  n::kMoeExpertOut,    "moe_combine_a2a",
                                n::kMoePermute,  n::kMoeUnpermute,  "attn_tp_allreduce", "ffn_tp_allreduce"};
  static_assert(std::size(names) == static_cast<size_t>(LayerOp::kCount));
  return names[static_cast<int>(op)];
}

std::string layer_op_id(int64_t layer, LayerOp op, bool backward) {
  return "L" + std::to_string(layer) + "." + layer_op_name(op) + (backward ? ".bwd" : ".fwd");
}

void check_executor_settings(const ModelConfig& m, const std::string& file) {
  auto quoted = [](const std::string& v) { return "\"" + v + "\""; };
  if (m.position_encoding != "relative_bias" && m.position_encoding != "none")
    throw ConfigError(file, "architecture.position_encoding", quoted(m.position_encoding),
                      "relative_bias or none, which the executor implements");
  if (m.optimizer != "adafactor")
    throw ConfigError(file, "training.optimizer", quoted(m.optimizer),
                      "adafactor, which the executor implements (glamsim counts the other's memory)");
  if (m.is_moe() && !m.padded_dispatch())
    throw ConfigError(file, "moe.dispatch", quoted(m.moe_dispatch),
                      "padded, which the executor runs (GShard's fixed capacity slots; glamsim costs the other)");
  if (m.weight_precision != "float32")
    throw ConfigError(file, "training.weight_precision", quoted(m.weight_precision),
                      "float32: the executor keeps float32 master weights, as GLaM trained (glamsim counts the other)");
}

void check_experts_divide(const ModelConfig& m, int64_t ranks, int64_t stages) {
  if (m.is_moe() && m.experts % ranks != 0)
    throw UsageError(std::to_string(ranks) + (stages > 1 ? " ranks per pipeline stage" : " ranks") + " do not divide the " +
                     std::to_string(m.experts) + " experts of " + m.id +
                     " (expert parallelism puts experts/ranks experts on each rank of a stage)");
}

void check_runnable(const ModelConfig& m, const ExecShape& s) {
  auto n = [](int64_t v) { return std::to_string(v); };
  check_executor_settings(m, "model " + m.id);
  if (s.seq_len != m.seq_len) throw UsageError("sequence length " + n(s.seq_len) + " differs from the model's " + n(m.seq_len));
  if (s.ranks < 1 || s.seqs < 1) throw UsageError("each rank needs at least one sequence");
  check_experts_divide(m, s.ranks, s.stages);
  if (m.is_moe()) {
    if (s.tokens() % m.group_tokens != 0)
      throw UsageError("tokens per rank (" + n(s.tokens()) + ") must be a multiple of the routing group size moe.group_tokens = " +
                       n(m.group_tokens) + " of " + m.id);
  }
  if (s.tp < 1 || s.tp_rank < 0 || s.tp_rank >= s.tp)
    throw UsageError("tensor-parallel rank " + n(s.tp_rank) + " of " + n(s.tp) +
                     ": expected at least one slice, and a rank from 0 to slices - 1");
  if (s.tp > 1) {
    auto divides = [&](int64_t v, const std::string& what) {
      if (v % s.tp != 0)
        throw UsageError("--tensor-parallel " + n(s.tp) + " does not divide the " + n(v) + " " + what + " of " + m.id +
                         " (each tensor-parallel rank holds an equal slice)");
    };
    divides(m.heads, "attention heads");
    divides(m.vocab_size, "vocabulary entries");
    if (m.dense_layers() > 0) divides(m.ffn_hidden, "dense FFN hidden units");
    if (m.is_moe()) divides(m.expert_hidden_size(), "expert hidden units");
    if (s.stages > 1) divides(s.tokens() * m.d_model, "activations per pass (tokens x d_model) sent between stages");
  }
  if (s.stages < 1 || s.stage < 0 || s.stage >= s.stages || s.virtual_stages < 1)
    throw UsageError("pipeline stage " + n(s.stage) + " of " + n(s.stages) + " with " + n(s.virtual_stages) +
                     " chunks per stage: expected at least one stage and one chunk");
  if (s.virtual_stages > 1 && s.stages == 1)
    throw UsageError("--virtual-stages " + n(s.virtual_stages) + " needs pipeline stages (--stages 2 or more)");
  const int64_t chunks = static_cast<int64_t>(s.stages) * s.virtual_stages;
  if (m.layers % chunks != 0)
    throw UsageError(n(s.stages) + " pipeline stages x " + n(s.virtual_stages) + " chunks per stage do not divide the " +
                     n(m.layers) + " layers run of " + m.id + " (each chunk holds layers / chunks consecutive blocks)");
  // The interleaved schedule runs the micro-batches in groups of one per stage (Megatron-LM's).
  if (s.virtual_stages > 1 && s.microbatches % s.stages != 0)
    throw UsageError("--microbatches " + n(s.microbatches) + ": the interleaved schedule (--virtual-stages " +
                     n(s.virtual_stages) + ") needs a multiple of the " + n(s.stages) + " stages");
  if (2 * chunks > Communicator::kMaxTag) throw UsageError(n(chunks) + " pipeline chunks: at most " + n(Communicator::kMaxTag / 2));
}

bool runnable(const ModelConfig& m, const ExecShape& s) {
  try {
    check_runnable(m, s);
    return true;
  } catch (const UsageError&) {
    return false;
  } catch (const ConfigError&) {
    return false;
  }
}

PipelineLayout pipeline_layout(const ModelConfig& m, const ExecShape& s) {
  return PipelineLayout{m.layers, s.stages, s.virtual_stages, s.microbatches};
}

std::string stage_op_id(const ExecShape& s, const std::string& name) {
  return (s.stages > 1 ? "s" + std::to_string(s.stage) + "." : std::string()) + name;
}

PipelineComms make_pipeline_comms(Communicator& world, const ExecShape& shape, bool tied_embeddings) {
  PipelineComms c;
  c.world = &world;
  if (shape.tp > 1) c.tensor = world.split(shape.stage * shape.ranks + shape.rank);
  if (shape.stages == 1 && shape.tp == 1) return c;
  c.stage_owned = world.split(shape.stage * shape.tp + shape.tp_rank);
  const bool end = shape.stage == 0 || shape.stage == shape.stages - 1;
  if (tied_embeddings && shape.stages > 1) c.ends = world.split(end ? shape.rank * shape.tp + shape.tp_rank : -1);
  return c;
}

namespace {
// A message's tag: the chunk that receives it and its direction.
int pipeline_tag(int64_t receiving_chunk, bool backward) { return static_cast<int>(2 * receiving_chunk + (backward ? 1 : 0)); }
}  // namespace

template <class T>
Transformer<T>::Transformer(const ModelConfig& m, const ExecShape& shape, Communicator& comm,
                            const kernels::KernelContext& ctx, PipelineLinks links)
    : m_(m), s_(shape), comm_(comm), ctx_(ctx), links_(links) {
  check_runnable(m_, s_);
  kernels::MemoryBackendScope memory(ctx.backend);  // every buffer below lives on the context's device
  pipeline_ = pipeline_layout(m_, s_);
  StageHolding holding;
  if (s_.stages > 1) {
    holding.blocks.assign(static_cast<size_t>(m_.layers), false);
    for (int64_t b : pipeline_.blocks_of_stage(s_.stage)) holding.blocks[static_cast<size_t>(b)] = true;
    holding.input_end = s_.stage == 0;
    holding.output_end = pipeline_.stage_of_chunk(last_chunk()) == s_.stage;
  }
  if (s_.tp > 1 && links_.tensor) {  // (without it, a model that only counts its buffers)
    if (links_.tensor->size() != s_.tp)
      throw std::logic_error("Transformer: links.tensor holds " + std::to_string(links_.tensor->size()) + " ranks, not tp");
    Communicator* tensor = links_.tensor;
    slice_reduce_.sum = [tensor](double* v, int64_t count) { tensor->allreduce_sum(v, count); };
    slice_reduce_.max = [tensor](double* v, int64_t count) { tensor->allreduce_max(v, count); };
  }
  heads_ = m_.heads / s_.tp, attn_width_ = m_.attention_width() / s_.tp, ffn_hidden_ = m_.ffn_hidden / s_.tp;
  expert_hidden_ = m_.expert_hidden_size() / s_.tp, vocab_ = m_.vocab_size / s_.tp;
  layout_ = make_layout(m_, s_.ranks, s_.rank, holding, TensorSlice{s_.tp, s_.tp_rank});
  ffn_act_ = k::parse_activation(m_.ffn_activation);
  expert_act_ = k::parse_activation(m_.expert_activation);
  op_ids_.resize(static_cast<size_t>(m_.layers));
  for (int64_t l = 0; l < m_.layers; ++l)
    for (int op = 0; op < static_cast<int>(LayerOp::kCount); ++op)
      for (int b = 0; b < 2; ++b)
        op_ids_[static_cast<size_t>(l)][static_cast<size_t>(op)][static_cast<size_t>(b)] =
            layer_op_id(l, static_cast<LayerOp>(op), b == 1);
  {
    namespace n = glam::op_name;
    const std::string fwd = ".fwd", bwd = ".bwd";
    const std::string names[] = {n::kEmbed + fwd,  n::kEmbed + bwd, n::kFinalNorm + fwd, n::kFinalNorm + bwd,
                                 n::kLogits + fwd, n::kLogits + bwd, n::kLoss + fwd,      n::kOptimizer,
                                 "grad_allreduce", "embed_tie_allreduce.bwd", "embed_tp_allreduce.fwd",
                                 "logits_tp_allreduce.bwd"};
    static_assert(std::size(names) == static_cast<size_t>(StageOp::kCount));
    for (size_t op = 0; op < std::size(names); ++op) stage_ids_[op] = stage_op_id(s_, names[op]);
  }
  // Sends: with interleaved stages their ids name the sending chunk, as the StepGraph's do.
  // Receives' gathers name the receiving chunk.
  for (int64_t c = 0; c < pipeline_.chunks(); ++c)
    for (const char* ph : {"fwd", "bwd"}) {
      const std::string chunk = s_.virtual_stages > 1 ? "c" + std::to_string(c) + "." : std::string();
      send_ids_.push_back(stage_op_id(s_, chunk + "pp_send." + ph));
      recv_ids_.push_back(stage_op_id(s_, chunk + "pp_recv_allgather." + ph));
    }

  // Activations in flight per chunk held: the most micro-batches between their forward and backward
  // pass in this stage's program. Both run in micro-batch order, so micro-batch k takes slot k % count.
  chunk_slots_.assign(static_cast<size_t>(s_.virtual_stages), 0);
  {
    std::vector<int64_t> open(chunk_slots_.size(), 0);
    for (const auto& pass : pipeline_.program(s_.stage)) {
      const size_t c = static_cast<size_t>(pass.chunk / s_.stages);
      open[c] += pass.forward ? 1 : -1;
      chunk_slots_[c] = std::max(chunk_slots_[c], open[c]);
    }
  }

  const int64_t n = s_.tokens(), d = m_.d_model, hd = attn_width_, t = s_.seq_len;
  params_.resize(layout_.total_elements);
  grads_.resize(layout_.total_elements);
  constexpr bool converted = !std::is_same_v<T, W>;
  if (converted) weights_.resize(layout_.total_elements);
  std::vector<int32_t> bucket(static_cast<size_t>(t), 0);
  if (m_.position_encoding == "relative_bias")
    k::relative_bucket_by_distance(bucket.data(), t, m_.relative_buckets, m_.relative_max_distance);
  bucket_.resize(t);
  copy_to_device(bucket.data(), bucket_.data(), t);

  if (m_.is_moe()) {
    capacity_ = m_.capacity_per_group();
    groups_ = n / m_.group_tokens;
    slots_ = m_.experts * groups_ * capacity_;
    aux_scale_ = m_.aux_loss_weight / static_cast<double>(groups_ * s_.ranks * s_.microbatches);
    for (int64_t l = 0; l < m_.layers; ++l)
      if (m_.is_moe_layer(l)) {
        MoeLayerStats st;
        st.layer = l;
        st.expert_load.assign(static_cast<size_t>(m_.experts), 0);
        st.expert_dropped.assign(static_cast<size_t>(m_.experts), 0);
        step_moe_stats_.push_back(std::move(st));
      }
  }
  const int64_t attn_elems = s_.seqs * heads_ * t * t;
  resid_.resize(static_cast<size_t>(m_.layers + 1));
  acts_.resize(static_cast<size_t>(m_.layers));
  const int64_t per_chunk = pipeline_.blocks_per_chunk();
  for (int64_t c = s_.stage; c < pipeline_.chunks(); c += s_.stages) {
    const size_t slots = static_cast<size_t>(chunk_slots_[static_cast<size_t>(c / s_.stages)]);
    for (int64_t l = c * per_chunk; l <= (c + 1) * per_chunk; ++l) {  // the chunk's inputs and its output
      resid_[static_cast<size_t>(l)].resize(slots);
      for (auto& r : resid_[static_cast<size_t>(l)]) r.resize(n * d);
    }
    for (int64_t l = c * per_chunk; l < (c + 1) * per_chunk; ++l) {
      acts_[static_cast<size_t>(l)].resize(slots);
      for (LayerActs& a : acts_[static_cast<size_t>(l)]) {
        a.xn1.resize(n * d), a.inv1.resize(n), a.q.resize(n * hd), a.k.resize(n * hd), a.v.resize(n * hd);
        a.probs.resize(attn_elems), a.ctx.resize(n * hd), a.mid.resize(n * d), a.xn2.resize(n * d), a.inv2.resize(n);
        if (m_.is_moe_layer(l)) {
          const int64_t he = expert_hidden_, kk = m_.top_k;
          a.rprobs.resize(n * m_.experts), a.gate.resize(n * kk), a.expert.resize(n * kk), a.loc.resize(n * kk);
          a.slot_token.resize(slots_);
          a.ein.resize(slots_ * d), a.eh0.resize(slots_ * he), a.ea.resize(slots_ * he), a.eout.resize(slots_ * d);
          if (m_.expert_kind == "gated") a.eh1.resize(slots_ * he);
          if (s_.ranks > 1) a.cbuf.resize(slots_ * d);
        } else {
          a.h0.resize(n * ffn_hidden_), a.a.resize(n * ffn_hidden_);
          if (m_.ffn_kind == "gated") a.h1.resize(n * ffn_hidden_);
        }
      }
    }
  }
  if (layout_.final_norm >= 0) {  // the output end
    const size_t slots = static_cast<size_t>(chunk_slots_.back());
    hn_.resize(slots), inv_final_.resize(slots);
    for (auto& h : hn_) h.resize(n * d);
    for (auto& v : inv_final_) v.resize(n);
    ce_.resize(n), lse_.resize(n);
    if (converted) {
      dlogits_t_.resize(slots);
      for (auto& g : dlogits_t_) g.resize(n * vocab_);
    }
    set_logit_chunk_rows(0);
  }
  dres_.resize(n * d), dxn_.resize(n * d), dq_.resize(n * hd), dk_.resize(n * hd), dv_.resize(n * hd);
  dctx_.resize(n * hd), dscores_.resize(attn_elems);
  if (s_.stages > 1 && s_.tp > 1) received_slice_.resize(n * d / s_.tp);
  dh0_.resize(n * ffn_hidden_), dh1_.resize(n * ffn_hidden_), da_.resize(n * ffn_hidden_);
  if (m_.is_moe()) {
    const int64_t he = expert_hidden_;
    sendbuf_.resize(slots_ * d), recvbuf_.resize(slots_ * d);
    deh0_.resize(slots_ * he), deh1_.resize(slots_ * he), dea_.resize(slots_ * he);
    dgate_.resize(n * m_.top_k), drl_.resize(n * m_.experts);
    aux_.resize(m_.moe_layers() * groups_), route_counts_.resize(m_.moe_layers() * kernels::router_count_bins(m_.experts));
    if (converted) drl_t_.resize(n * m_.experts);
  }
}

template <class T>
void Transformer<T>::init_params(uint64_t seed) {
  // One task per block of a matrix (each block has its own generator, so the values do not depend on
  // the threads); threads matter for the GPU-sized configs (billions of Box-Muller draws on the host).
  struct InitTask {
    size_t param;
    int64_t expert, block;
  };
  std::vector<InitTask> tasks;
  for (size_t i = 0; i < layout_.params.size(); ++i)
    for (int64_t e = 0; e < layout_.params[i].count; ++e)
      for (int64_t b = 0; b < init_blocks(layout_.params[i]); ++b) tasks.push_back({i, e, b});
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    try {
      if (ctx_.backend == kernels::Backend::kCuda && ctx_.device >= 0) kernels::cuda_set_device(ctx_.device);
      std::vector<double> tmp;
      std::vector<W> host;
      for (size_t t = next++; t < tasks.size(); t = next++) {
        const InitTask& task = tasks[t];
        const ParamInfo& p = layout_.params[task.param];
        const int64_t first = task.block * kInitBlockElements, n = init_block_elements(p, task.block);
        tmp.resize(static_cast<size_t>(n));
        host.resize(tmp.size());
        init_matrix_block(p, p.expert() ? p.first_expert + task.expert : -1, seed, task.block, tmp.data());
        for (size_t i = 0; i < tmp.size(); ++i) host[i] = static_cast<W>(tmp[i]);
        copy_to_device(host.data(), params_.data() + p.offset + task.expert * p.matrix_elements() + first, n);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = tasks.size();
    }
  };
  const int64_t big = layout_.total_elements >= (int64_t{1} << 24) ? 1 : 0;  // threads only for large models
  const size_t threads = big ? std::min<size_t>(tasks.size(), std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16)) : 1;
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (size_t i = 0; i < threads; ++i) pool.emplace_back(work);
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

template <class T>
void Transformer<T>::set_logit_chunk_rows(int64_t rows) {
  if (layout_.final_norm < 0) return;  // not the output end
  kernels::MemoryBackendScope memory(ctx_.backend);
  const int64_t n = s_.tokens(), v = vocab_;
  if constexpr (std::is_same_v<T, W>) {
    // float32: whole, one per activation slot (the loss gradient overwrites them for the backward pass)
    logit_chunk_rows_ = n;
    logits_.resize(hn_.size());
  } else {
    // 2^28 float32 logits (1 GiB) by default: 1,024 rows of a 256K vocabulary, a product still large
    // enough to run at the GPU's full rate. One buffer: the bf16 gradient is kept per slot instead.
    const int64_t fit = std::max<int64_t>(1, (int64_t{1} << 28) / v);
    logit_chunk_rows_ = std::clamp<int64_t>(rows > 0 ? rows : fit, 1, n);
    logits_.resize(1);
  }
  for (auto& l : logits_) l.resize(logit_chunk_rows_ * v);
}

template <class T>
kernels::RouterShape Transformer<T>::router_shape() const {
  kernels::RouterShape r;
  r.tokens = s_.tokens();
  r.experts = m_.experts;
  r.top_k = m_.top_k;
  r.group_tokens = m_.group_tokens;
  r.capacity = capacity_;
  return r;
}

template <class T>
const T* Transformer<T>::weight(int index) const {
  if constexpr (std::is_same_v<T, W>) return params_.data() + offset(index);
  else return weights_.data() + offset(index);
}

template <class T>
void Transformer<T>::linear_backward(const T* x, const T* w, const T* dy, T* dx, W* dw, int64_t rows, int64_t in,
                                     int64_t out, bool accumulate_dx, int64_t batch) {
  const W beta_dx = accumulate_dx ? 1 : 0;
  if (batch == 1) {
    if (dx) k::gemm<T>(ctx_, false, true, rows, in, out, 1, dy, out, w, out, beta_dx, dx, in);
    k::gemm<T>(ctx_, true, false, in, out, rows, 1, x, in, dy, out, 1, dw, out);
    return;
  }
  if (dx)
    k::gemm_strided_batched<T>(ctx_, false, true, rows, in, out, 1, dy, out, rows * out, w, out, in * out, beta_dx, dx,
                               in, rows * in, batch);
  k::gemm_strided_batched<T>(ctx_, true, false, in, out, rows, 1, x, in, rows * in, dy, out, rows * out, 1, dw, out,
                             in * out, batch);
}

template <class T>
void Transformer<T>::enter_pass(int64_t chunk, int64_t microbatch, const char* what) {
  if (chunk < 0 || chunk > last_chunk() || pipeline_.stage_of_chunk(chunk) != s_.stage || microbatch < 0 ||
      microbatch >= s_.microbatches)
    throw std::logic_error(std::string("Transformer::") + what + ": chunk " + std::to_string(chunk) + ", micro-batch " +
                           std::to_string(microbatch) + " on stage " + std::to_string(s_.stage) + " of " +
                           std::to_string(s_.stages) + " with " + std::to_string(s_.microbatches) + " micro-batches");
  if (pipeline_.chunks() > 1 && !links_.world) throw std::logic_error(std::string("Transformer::") + what + ": pipeline stages need links_.world");
  microbatch_ = microbatch;
  slot_ = microbatch % chunk_slots_[static_cast<size_t>(chunk / s_.stages)];
}

template <class T>
int Transformer<T>::world_rank_of_chunk(int64_t chunk) const {
  ExecShape there = s_;
  there.stage = static_cast<int>(pipeline_.stage_of_chunk(chunk));
  return there.world_rank();
}

template <class T>
void Transformer<T>::receive_pass_input(T* data, int64_t chunk, bool backward, OpTimer* t) {
  // The wait for the message is the pipeline's bubble, not an op.
  const int64_t n = s_.tokens() * m_.d_model, part = n / s_.tp;
  const int64_t part_bytes = part * static_cast<int64_t>(sizeof(T));
  const int64_t from = backward ? chunk + 1 : chunk - 1;
  links_.world->recv(data + s_.tp_rank * part, part_bytes, world_rank_of_chunk(from), pipeline_tag(chunk, backward));
  if (s_.tp == 1) return;
  auto sc = OpTimer::time(t, recv_ids_[static_cast<size_t>(2 * chunk + (backward ? 1 : 0))], 0,
                          static_cast<double>(part_bytes) * (s_.tp - 1));
  // (an all-gather's input may not overlap its output)
  k::copy<T>(ctx_, data + s_.tp_rank * part, received_slice_.data(), part);
  links_.tensor->allgather(received_slice_.data(), data, part_bytes);
}

template <class T>
void Transformer<T>::send_pass_output(const T* data, int64_t chunk, bool backward, OpTimer* t) {
  const int64_t part = s_.tokens() * m_.d_model / s_.tp;
  const int64_t part_bytes = part * static_cast<int64_t>(sizeof(T));
  const int64_t to = backward ? chunk - 1 : chunk + 1;
  auto sc = OpTimer::time(t, send_id(chunk, backward), 0, static_cast<double>(part_bytes));
  links_.world->send(data + s_.tp_rank * part, part_bytes, world_rank_of_chunk(to), pipeline_tag(to, backward));
}

template <class T>
void Transformer<T>::tensor_allreduce(T* data, int64_t n, const std::string& id, OpTimer* t) {
  if (!links_.tensor) throw std::logic_error("Transformer: tensor parallelism needs links.tensor");
  const double bytes = static_cast<double>(n) * sizeof(T);
  auto sc = OpTimer::time(t, id, 0, 2.0 * bytes * (s_.tp - 1) / s_.tp);
  links_.tensor->allreduce_sum(data, n);
}

template <class T>
StepLoss Transformer<T>::run(const int32_t* inputs, const int32_t* targets, int64_t step, bool backward, OpTimer* t,
                             int64_t microbatch) {
  if (s_.stages > 1) throw std::logic_error("Transformer::run: with pipeline stages, run the stage's passes");
  const MicroBatchTokens tokens{inputs, targets};
  StepLoss loss = forward_pass(0, microbatch, tokens, step, t);
  if (backward) backward_pass(0, microbatch, tokens, t);
  return loss;
}

template <class T>
StepLoss Transformer<T>::forward_pass(int64_t chunk, int64_t microbatch, MicroBatchTokens tokens, int64_t step,
                                      OpTimer* t) {
  enter_pass(chunk, microbatch, "forward_pass");
  const int64_t n = s_.tokens(), d = m_.d_model, v = vocab_;
  const int64_t b0 = first_block(chunk), b1 = b0 + pipeline_.blocks_per_chunk();
  const double es = sizeof(T);
  const bool first_pass = microbatch == 0 && chunk == s_.stage;  // the step's first pass on this stage
  if (first_pass)
    for (auto& st : step_moe_stats_) st.clear();
  if constexpr (!std::is_same_v<T, W>) {
    // The bf16 copy of the updated master weights, once per step: part of the optimizer's work, timed
    // under its id.
    if (first_pass) {
      auto sc = OpTimer::time(t, stage_id(StageOp::kOptimizer), 0,
                              static_cast<double>(layout_.total_elements) * (sizeof(W) + sizeof(T)));
      k::convert<W, T>(ctx_, params_.data(), weights_.data(), layout_.total_elements);
    }
  }
  const k::EmbeddingRows held = vocabulary_slice();
  if (chunk == 0) {
    {
      auto sc = OpTimer::time(t, stage_id(StageOp::kEmbedFwd), 0, 2.0 * es * static_cast<double>(n * d));
      k::embedding_forward<T>(ctx_, tokens.inputs, weight(layout_.embedding), resid(0).data(), n, d, held);
    }
    if (s_.tp > 1) tensor_allreduce(resid(0).data(), n * d, stage_id(StageOp::kEmbedTpAllreduce), t);
  } else {  // the previous chunk's output
    receive_pass_input(resid(b0).data(), chunk, false, t);
  }
  for (int64_t l = b0; l < b1; ++l) {
    attention_forward(l, t);
    if (layout_.layers[static_cast<size_t>(l)].moe)
      moe_forward(l, step, t);
    else
      dense_forward(l, t);
  }
  const double aux_local = read_pass_routing(b0, b1);
  const double aux_norm = m_.is_moe() ? 1.0 / static_cast<double>(groups_ * s_.ranks * s_.microbatches) : 0.0;
  if (chunk != last_chunk()) {
    send_pass_output(resid(b1).data(), chunk, false, t);
    StepLoss part;
    part.aux_unreduced = aux_local * aux_norm;
    return part;
  }
  T* hn = hn_[static_cast<size_t>(slot_)].data();
  {
    auto sc = OpTimer::time(t, stage_id(StageOp::kFinalNormFwd), 4.0 * static_cast<double>(n * d),
                            2.0 * es * static_cast<double>(n * d));
    k::rmsnorm_forward<T>(ctx_, resid(b1).data(), weight(layout_.final_norm), hn,
                          inv_final_[static_cast<size_t>(slot_)].data(), n, d);
  }
  const double grad_scale = 1.0 / static_cast<double>(s_.global_tokens());
  T* dlogits = loss_gradient();
  // With bf16 activations the float32 logits live only a chunk of rows at a time: the loss leaves
  // their gradient in bf16, and the [tokens, vocab] float32 array (34 GB for glam-0.1b-64e at 32,768
  // tokens) would be the step's largest buffer. In float32 the gradient overwrites them in place (one
  // chunk of every row).
  for (int64_t r0 = 0; r0 < n; r0 += logit_chunk_rows_) {
    const int64_t rows = std::min(logit_chunk_rows_, n - r0);
    W* logits = std::is_same_v<T, W> ? logits_[static_cast<size_t>(slot_)].data() + r0 * v : logits_[0].data();
    {
      auto sc = OpTimer::time(t, stage_id(StageOp::kLogitsFwd), 2.0 * static_cast<double>(rows * d * v),
                              es * static_cast<double>(rows * d + v * d) + sizeof(W) * static_cast<double>(rows * v));
      k::gemm<T>(ctx_, false, true, rows, v, d, logit_scale(), hn + r0 * d, d, weight(output_embedding()), d, 0,
                 logits, v);
    }
    // With tensor parallelism the loss includes its two small all-reduces over the slices (the row
    // maxima, then the sums and target logits: 24 bytes per token).
    auto sc = OpTimer::time(t, stage_id(StageOp::kLossFwd), 8.0 * static_cast<double>(rows * v),
                            (sizeof(W) + es) * static_cast<double>(rows * v));
    if (s_.tp > 1)
      k::softmax_xent_forward_backward_sliced<W>(ctx_, logits, tokens.targets + r0, rows, v, held.first,
                                                 m_.z_loss_weight, grad_scale, ce_.data() + r0, lse_.data() + r0,
                                                 dlogits + r0 * v, slice_reduce_);
    else
      k::softmax_xent_forward_backward<W>(ctx_, logits, tokens.targets + r0, rows, v, m_.z_loss_weight, grad_scale,
                                          ce_.data() + r0, lse_.data() + r0, dlogits + r0 * v);
  }
  double sums[3] = {0, 0, aux_local};
  {
    auto sc = OpTimer::time(t, stage_id(StageOp::kLossFwd));
    std::vector<W> ce(static_cast<size_t>(n)), lse(static_cast<size_t>(n));
    copy_to_host(ce_.data(), ce.data(), n);
    copy_to_host(lse_.data(), lse.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      sums[0] += static_cast<double>(ce[static_cast<size_t>(i)]);
      sums[1] += static_cast<double>(lse[static_cast<size_t>(i)]) * static_cast<double>(lse[static_cast<size_t>(i)]);
    }
    comm_.allreduce_sum(sums, 3);
  }
  StepLoss loss;
  loss.ce = sums[0] * grad_scale;
  loss.z = sums[1] * grad_scale;
  loss.aux = sums[2] * aux_norm;
  return with_total(loss);
}

template <class T>
void Transformer<T>::backward_pass(int64_t chunk, int64_t microbatch, MicroBatchTokens tokens, OpTimer* t) {
  enter_pass(chunk, microbatch, "backward_pass");
  const int64_t n = s_.tokens(), d = m_.d_model, v = vocab_;
  const int64_t b0 = first_block(chunk), b1 = b0 + pipeline_.blocks_per_chunk();
  const double es = sizeof(T);
  // The stage's first backward pass of the step: its last chunk's, on micro-batch 0.
  if (microbatch == 0 && chunk == s_.stage + (s_.virtual_stages - 1) * static_cast<int64_t>(s_.stages))
    k::fill<W>(ctx_, grads_.data(), W(0), layout_.total_elements);
  if (chunk == last_chunk()) {
    const int out_emb = output_embedding();
    const T* hn = hn_[static_cast<size_t>(slot_)].data();
    const T* dlogits = loss_gradient();
    {
      auto sc = OpTimer::time(t, stage_id(StageOp::kLogitsBwd), 4.0 * static_cast<double>(n * d * v),
                              es * static_cast<double>(2 * n * d + n * v) + (es + sizeof(W)) * static_cast<double>(v * d));
      // In blocks of rows of at most 2^30 gradient elements: glam-0.1b-64e's 65,536 x 262,144 gradient
      // (1.7e10 elements) as one operand would be a product larger than any the libraries are known
      // to run; the weight gradient adds up over the blocks.
      const int64_t block = std::max<int64_t>(1, (int64_t{1} << 30) / v);
      for (int64_t r0 = 0; r0 < n; r0 += block) {
        const int64_t rows = std::min(block, n - r0);
        k::gemm<T>(ctx_, false, false, rows, d, v, logit_scale(), dlogits + r0 * v, v, weight(out_emb), d, 0,
                   dxn_.data() + r0 * d, d);
        k::gemm<T>(ctx_, true, false, v, d, rows, logit_scale(), dlogits + r0 * v, v, hn + r0 * d, d, 1,
                   grad(out_emb), d);
      }
    }
    if (s_.tp > 1) tensor_allreduce(dxn_.data(), n * d, stage_id(StageOp::kLogitsTpAllreduce), t);
    auto sc = OpTimer::time(t, stage_id(StageOp::kFinalNormBwd), 8.0 * static_cast<double>(n * d),
                            4.0 * es * static_cast<double>(n * d));
    k::fill<T>(ctx_, dres_.data(), T(0), n * d);
    k::rmsnorm_backward<T>(ctx_, dxn_.data(), resid(b1).data(), weight(layout_.final_norm),
                           inv_final_[static_cast<size_t>(slot_)].data(), dres_.data(), grad(layout_.final_norm), n, d);
  } else {  // the gradient of this chunk's output, from the next chunk's stage
    receive_pass_input(dres_.data(), chunk, true, t);
  }
  for (int64_t l = b1 - 1; l >= b0; --l) {
    if (layout_.layers[static_cast<size_t>(l)].moe)
      moe_backward(l, t);
    else
      dense_backward(l, t);
    attention_backward(l, t);
  }
  if (chunk == 0) {
    auto sc = OpTimer::time(t, stage_id(StageOp::kEmbedBwd), static_cast<double>(n * d),
                            (es + 2.0 * sizeof(W)) * static_cast<double>(n * d));
    k::embedding_backward<T>(ctx_, tokens.inputs, dres_.data(), grad(layout_.embedding), n, d, vocabulary_slice());
  } else {
    send_pass_output(dres_.data(), chunk, true, t);
  }
}

template <class T>
void Transformer<T>::wait_sends() {
  if (links_.world) links_.world->wait_sends();
}

template <class T>
void Transformer<T>::allreduce_gradients(OpTimer* t) {
  if (s_.ranks > 1) {
    const double bytes = static_cast<double>(layout_.replicated_elements) * sizeof(W);
    auto sc = OpTimer::time(t, stage_id(StageOp::kGradAllreduce), 0, 2.0 * bytes * (s_.ranks - 1) / s_.ranks);
    comm_.allreduce_sum(grads_.data(), layout_.replicated_elements);
  }
  // The tied embedding's two copies (first and last stage) add their gradients, as the StepGraph's
  // embed_tie_allreduce does after the data-parallel sums.
  if (s_.stages > 1 && m_.tied_embeddings && layout_.embedding >= 0) {
    if (!links_.ends) throw std::logic_error("Transformer::allreduce_gradients: tied embeddings need links_.ends");
    const int64_t count = layout_.params[static_cast<size_t>(layout_.embedding)].elements();
    const double bytes = static_cast<double>(count) * sizeof(W);
    auto sc = OpTimer::time(t, stage_id(StageOp::kEmbedTieAllreduce), 0, bytes);
    links_.ends->allreduce_sum(grad(layout_.embedding), count);
  }
}

template <class T>
StepLoss Transformer<T>::reduce_pipeline_loss(const StepLoss& shares) {
  if (s_.stages == 1) return shares;
  // ce, z and the last chunk's aux arrive reduced over the last stage's ranks: counted once, from its
  // rank 0; the other chunks' aux shares are each rank's own. The tensor-parallel slices of a rank
  // compute the same losses: counted from slice 0.
  const bool reports = s_.stage == s_.stages - 1 && s_.rank == 0 && s_.tp_rank == 0;
  const double own_aux = s_.tp_rank == 0 ? shares.aux_unreduced : 0.0;
  double v[3] = {reports ? shares.ce : 0.0, reports ? shares.z : 0.0, (reports ? shares.aux : 0.0) + own_aux};
  links_.world->allreduce_sum(v, 3);
  StepLoss loss;
  loss.ce = v[0], loss.z = v[1], loss.aux = v[2];
  return with_total(loss);
}

#define GLAM_INSTANTIATE(T)                                                                                 \
  template Transformer<T>::Transformer(const ModelConfig&, const ExecShape&, Communicator&,                  \
                                       const kernels::KernelContext&, PipelineLinks);                        \
  template void Transformer<T>::init_params(uint64_t);                                                      \
  template kernels::RouterShape Transformer<T>::router_shape() const;                                       \
  template void Transformer<T>::set_logit_chunk_rows(int64_t);                                              \
  template void Transformer<T>::linear_backward(const T*, const T*, const T*, T*, Transformer<T>::Master*,   \
                                                int64_t, int64_t, int64_t, bool, int64_t);                  \
  template const T* Transformer<T>::weight(int) const;                                                      \
  template StepLoss Transformer<T>::run(const int32_t*, const int32_t*, int64_t, bool, OpTimer*, int64_t);  \
  template StepLoss Transformer<T>::forward_pass(int64_t, int64_t, MicroBatchTokens, int64_t, OpTimer*);      \
  template void Transformer<T>::backward_pass(int64_t, int64_t, MicroBatchTokens, OpTimer*);                 \
  template void Transformer<T>::wait_sends();                                                               \
  template StepLoss Transformer<T>::reduce_pipeline_loss(const StepLoss&);                                  \
  template void Transformer<T>::enter_pass(int64_t, int64_t, const char*);                                  \
  template int Transformer<T>::world_rank_of_chunk(int64_t) const;                                          \
  template void Transformer<T>::receive_pass_input(T*, int64_t, bool, OpTimer*);                            \
  template void Transformer<T>::send_pass_output(const T*, int64_t, bool, OpTimer*);                        \
  template void Transformer<T>::tensor_allreduce(T*, int64_t, const std::string&, OpTimer*);                \
  template void Transformer<T>::allreduce_gradients(OpTimer*);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)
GLAM_INSTANTIATE(kernels::bf16)

}  // namespace glam::exec
