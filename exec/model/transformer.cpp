// Construction, the top of the step (embedding, final norm, logits, loss) and the gradient
// reduction. The blocks are in attention_block.cpp, ffn_block.cpp and moe_block.cpp.
#include "model/transformer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
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

namespace glam::exec {

namespace k = glam::kernels;

const char* layer_op_name(LayerOp op) {
  static const char* names[] = {"attn_norm",       "attn_qkv",     "attn_scores",      "attn_softmax",
                                "attn_context",    "attn_out",     "ffn_norm",         "ffn_in",
                                "ffn_act",         "ffn_out",      "moe_router",       "moe_dispatch_a2a",
                                "moe_expert_in",   "moe_expert_act", "moe_expert_out", "moe_combine_a2a",
                                "moe_permute",     "moe_unpermute"};
  return names[static_cast<int>(op)];
}

std::string layer_op_id(int64_t layer, LayerOp op, bool backward) {
  return "L" + std::to_string(layer) + "." + layer_op_name(op) + (backward ? ".bwd" : ".fwd");
}

void check_runnable(const ModelConfig& m, const ExecShape& s) {
  auto n = [](int64_t v) { return std::to_string(v); };
  if (m.position_encoding != "relative_bias" && m.position_encoding != "none")
    throw UsageError("model " + m.id + ": position_encoding \"" + m.position_encoding +
                     "\" is not supported by the executor (expected relative_bias or none)");
  if (m.optimizer != "adafactor")
    throw UsageError("model " + m.id + ": training.optimizer = \"" + m.optimizer +
                     "\": the executor implements Adafactor only (glamsim counts the other's memory)");
  if (s.seq_len != m.seq_len) throw UsageError("sequence length " + n(s.seq_len) + " differs from the model's " + n(m.seq_len));
  if (s.ranks < 1 || s.seqs < 1) throw UsageError("each rank needs at least one sequence");
  if (m.is_moe()) {
    if (m.experts % s.ranks != 0)
      throw UsageError(n(s.ranks) + " ranks do not divide the " + n(m.experts) + " experts of " + m.id +
                       " (expert parallelism puts experts/ranks experts on each rank)");
    if (s.tokens() % m.group_tokens != 0)
      throw UsageError("tokens per rank (" + n(s.tokens()) + ") must be a multiple of the routing group size moe.group_tokens = " +
                       n(m.group_tokens) + " of " + m.id);
  }
}

bool runnable(const ModelConfig& m, const ExecShape& s) {
  try {
    check_runnable(m, s);
    return true;
  } catch (const UsageError&) {
    return false;
  }
}

template <class T>
Transformer<T>::Transformer(const ModelConfig& m, const ExecShape& shape, Communicator& comm,
                            const kernels::KernelContext& ctx)
    : m_(m), s_(shape), comm_(comm), ctx_(ctx) {
  check_runnable(m_, s_);
  kernels::MemoryBackendScope memory(ctx.backend);  // every buffer below lives on the context's device
  layout_ = make_layout(m_, s_.ranks, s_.rank);
  ffn_act_ = k::parse_activation(m_.ffn_activation);
  expert_act_ = k::parse_activation(m_.expert_activation);
  op_ids_.resize(static_cast<size_t>(m_.layers));
  for (int64_t l = 0; l < m_.layers; ++l)
    for (int op = 0; op < static_cast<int>(LayerOp::kCount); ++op)
      for (int b = 0; b < 2; ++b)
        op_ids_[static_cast<size_t>(l)][static_cast<size_t>(op)][static_cast<size_t>(b)] =
            layer_op_id(l, static_cast<LayerOp>(op), b == 1);

  const int64_t n = s_.tokens(), d = m_.d_model, hd = m_.attention_width(), t = s_.seq_len;
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
  }
  const int64_t attn_elems = s_.seqs * m_.heads * t * t;
  int64_t max_hidden = 0;
  resid_.resize(static_cast<size_t>(m_.layers + 1));
  for (auto& r : resid_) r.resize(n * d);
  acts_.resize(static_cast<size_t>(m_.layers));
  for (int64_t l = 0; l < m_.layers; ++l) {
    LayerActs& a = acts_[static_cast<size_t>(l)];
    a.xn1.resize(n * d), a.inv1.resize(n), a.q.resize(n * hd), a.k.resize(n * hd), a.v.resize(n * hd);
    a.probs.resize(attn_elems), a.ctx.resize(n * hd), a.mid.resize(n * d), a.xn2.resize(n * d), a.inv2.resize(n);
    if (m_.is_moe_layer(l)) {
      const int64_t he = m_.expert_hidden_size(), kk = m_.top_k;
      a.rprobs.resize(n * m_.experts), a.gate.resize(n * kk), a.expert.resize(n * kk), a.loc.resize(n * kk);
      a.slot_token.resize(slots_);
      a.ein.resize(slots_ * d), a.eh0.resize(slots_ * he), a.ea.resize(slots_ * he), a.eout.resize(slots_ * d);
      if (m_.expert_kind == "gated") a.eh1.resize(slots_ * he);
      if (s_.ranks > 1) a.cbuf.resize(slots_ * d);
      max_hidden = std::max(max_hidden, he);
    } else {
      a.h0.resize(n * m_.ffn_hidden), a.a.resize(n * m_.ffn_hidden);
      if (m_.ffn_kind == "gated") a.h1.resize(n * m_.ffn_hidden);
      max_hidden = std::max(max_hidden, m_.ffn_hidden);
    }
  }
  hn_.resize(n * d), inv_final_.resize(n), ce_.resize(n), lse_.resize(n);
  set_logit_chunk_rows(0);
  dres_.resize(n * d), dxn_.resize(n * d), dq_.resize(n * hd), dk_.resize(n * hd), dv_.resize(n * hd);
  dctx_.resize(n * hd), dscores_.resize(attn_elems);
  dh0_.resize(n * m_.ffn_hidden), dh1_.resize(n * m_.ffn_hidden), da_.resize(n * m_.ffn_hidden);
  if (m_.is_moe()) {
    const int64_t he = m_.expert_hidden_size();
    sendbuf_.resize(slots_ * d), recvbuf_.resize(slots_ * d);
    deh0_.resize(slots_ * he), deh1_.resize(slots_ * he), dea_.resize(slots_ * he);
    dgate_.resize(n * m_.top_k), drl_.resize(n * m_.experts), aux_.resize(groups_);
    if (converted) drl_t_.resize(n * m_.experts);
  }
  if (converted) dlogits_t_.resize(n * m_.vocab_size);
  (void)max_hidden;
}

template <class T>
void Transformer<T>::init_params(uint64_t seed) {
  // One task per matrix (each has its own generator, so the values do not depend on the threads);
  // threads matter for the GPU-sized configs (billions of Box-Muller draws on the host).
  std::vector<std::pair<size_t, int64_t>> tasks;
  for (size_t i = 0; i < layout_.params.size(); ++i)
    for (int64_t e = 0; e < layout_.params[i].count; ++e) tasks.emplace_back(i, e);
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    try {
      if (ctx_.backend == kernels::Backend::kCuda && ctx_.device >= 0) kernels::cuda_set_device(ctx_.device);
      std::vector<double> tmp;
      std::vector<W> host;
      for (size_t t = next++; t < tasks.size(); t = next++) {
        const ParamInfo& p = layout_.params[tasks[t].first];
        const int64_t e = tasks[t].second;
        tmp.resize(static_cast<size_t>(p.matrix_elements()));
        host.resize(tmp.size());
        init_matrix(p, p.expert() ? p.first_expert + e : -1, seed, tmp.data());
        for (size_t i = 0; i < tmp.size(); ++i) host[i] = static_cast<W>(tmp[i]);
        copy_to_device(host.data(), params_.data() + p.offset + e * p.matrix_elements(), p.matrix_elements());
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
  kernels::MemoryBackendScope memory(ctx_.backend);
  const int64_t n = s_.tokens(), v = m_.vocab_size;
  if constexpr (std::is_same_v<T, W>) {
    logit_chunk_rows_ = n;
  } else {
    // 2^28 float32 logits (1 GiB) by default: 1,024 rows of a 256K vocabulary, a product still large
    // enough to run at the GPU's full rate.
    const int64_t fit = std::max<int64_t>(1, (int64_t{1} << 28) / v);
    logit_chunk_rows_ = std::clamp<int64_t>(rows > 0 ? rows : fit, 1, n);
  }
  logits_.resize(logit_chunk_rows_ * v);
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
StepLoss Transformer<T>::run(const int32_t* inputs, const int32_t* targets, int64_t step, bool backward, OpTimer* t,
                             int64_t microbatch) {
  if (microbatch < 0 || microbatch >= s_.microbatches)
    throw std::logic_error("Transformer::run: micro-batch " + std::to_string(microbatch) + " of " +
                           std::to_string(s_.microbatches));
  microbatch_ = microbatch;
  inputs_ = inputs;
  targets_ = targets;
  const int64_t n = s_.tokens(), d = m_.d_model, v = m_.vocab_size, L = m_.layers;
  const double es = sizeof(T);
  const int out_emb = layout_.unembedding >= 0 ? layout_.unembedding : layout_.embedding;
  // T5 convention: with tied embeddings the logits are scaled by d_model^-1/2
  const W logit_scale = layout_.unembedding >= 0 ? W(1) : static_cast<W>(1.0 / std::sqrt(static_cast<double>(d)));
  if constexpr (!std::is_same_v<T, W>) {
    // The bf16 copy of the updated master weights, once per step: part of the optimizer's work, timed
    // under its id.
    static const std::string id = "optimizer";
    if (microbatch == 0) {
      auto sc = OpTimer::time(t, id, 0, static_cast<double>(layout_.total_elements) * (sizeof(W) + sizeof(T)));
      k::convert<W, T>(ctx_, params_.data(), weights_.data(), layout_.total_elements);
    }
  }
  {
    static const std::string id = "embed.fwd";
    auto sc = OpTimer::time(t, id, 0, 2.0 * es * static_cast<double>(n * d));
    k::embedding_forward<T>(ctx_, inputs, weight(layout_.embedding), resid_[0].data(), n, d);
  }
  double aux_local = 0;
  for (int64_t l = 0; l < L; ++l) {
    attention_forward(l, t);
    if (layout_.layers[static_cast<size_t>(l)].moe)
      aux_local += moe_forward(l, step, t);
    else
      dense_forward(l, t);
  }
  {
    static const std::string id = "final_norm.fwd";
    auto sc = OpTimer::time(t, id, 4.0 * static_cast<double>(n * d), 2.0 * es * static_cast<double>(n * d));
    k::rmsnorm_forward<T>(ctx_, resid_[static_cast<size_t>(L)].data(), weight(layout_.final_norm), hn_.data(),
                          inv_final_.data(), n, d);
  }
  const double grad_scale = 1.0 / static_cast<double>(s_.global_tokens());
  // The loss gradient, in T for the products: over the float32 logits, or into their bf16 copy.
  T* dlogits = nullptr;
  if constexpr (std::is_same_v<T, W>) dlogits = logits_.data();
  else dlogits = dlogits_t_.data();
  // With bf16 activations the float32 logits live only a chunk of rows at a time: the loss leaves
  // their gradient in bf16, and the [tokens, vocab] float32 array (34 GB for glam-0.1b-64e at 32,768
  // tokens) would be the step's largest buffer. In float32 the gradient overwrites them in place (one
  // chunk of every row).
  for (int64_t r0 = 0; r0 < n; r0 += logit_chunk_rows_) {
    const int64_t rows = std::min(logit_chunk_rows_, n - r0);
    W* logits = std::is_same_v<T, W> ? logits_.data() + r0 * v : logits_.data();
    {
      static const std::string id = "logits.fwd";
      auto sc = OpTimer::time(t, id, 2.0 * static_cast<double>(rows * d * v),
                              es * static_cast<double>(rows * d + v * d) + sizeof(W) * static_cast<double>(rows * v));
      k::gemm<T>(ctx_, false, true, rows, v, d, logit_scale, hn_.data() + r0 * d, d, weight(out_emb), d, 0, logits, v);
    }
    static const std::string id = "loss.fwd";
    auto sc = OpTimer::time(t, id, 8.0 * static_cast<double>(rows * v), (sizeof(W) + es) * static_cast<double>(rows * v));
    k::softmax_xent_forward_backward<W>(ctx_, logits, targets + r0, rows, v, m_.z_loss_weight, grad_scale,
                                        ce_.data() + r0, lse_.data() + r0, dlogits + r0 * v);
  }
  double sums[3] = {0, 0, aux_local};
  {
    static const std::string id = "loss.fwd";
    auto sc = OpTimer::time(t, id);
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
  loss.aux = m_.is_moe() ? sums[2] / static_cast<double>(groups_ * s_.ranks * s_.microbatches) : 0.0;
  loss.total = loss.ce + m_.z_loss_weight * loss.z + m_.aux_loss_weight * loss.aux;
  if (!backward) return loss;

  if (microbatch == 0) k::fill<W>(ctx_, grads_.data(), W(0), layout_.total_elements);
  {
    static const std::string id = "logits.bwd";
    auto sc = OpTimer::time(t, id, 4.0 * static_cast<double>(n * d * v), es * static_cast<double>(2 * n * d + n * v) + (es + sizeof(W)) * static_cast<double>(v * d));
    k::gemm<T>(ctx_, false, false, n, d, v, logit_scale, dlogits, v, weight(out_emb), d, 0, dxn_.data(), d);
    k::gemm<T>(ctx_, true, false, v, d, n, logit_scale, dlogits, v, hn_.data(), d, 1, grad(out_emb), d);
  }
  {
    static const std::string id = "final_norm.bwd";
    auto sc = OpTimer::time(t, id, 8.0 * static_cast<double>(n * d), 4.0 * es * static_cast<double>(n * d));
    k::fill<T>(ctx_, dres_.data(), T(0), n * d);
    k::rmsnorm_backward<T>(ctx_, dxn_.data(), resid_[static_cast<size_t>(L)].data(), weight(layout_.final_norm),
                           inv_final_.data(), dres_.data(), grad(layout_.final_norm), n, d);
  }
  for (int64_t l = L - 1; l >= 0; --l) {
    if (layout_.layers[static_cast<size_t>(l)].moe)
      moe_backward(l, t);
    else
      dense_backward(l, t);
    attention_backward(l, t);
  }
  {
    static const std::string id = "embed.bwd";
    auto sc = OpTimer::time(t, id, static_cast<double>(n * d), (es + 2.0 * sizeof(W)) * static_cast<double>(n * d));
    k::embedding_backward<T>(ctx_, inputs, dres_.data(), grad(layout_.embedding), n, d);
  }
  return loss;
}

template <class T>
void Transformer<T>::allreduce_gradients(OpTimer* t) {
  if (s_.ranks == 1) return;
  static const std::string id = "grad_allreduce";
  const double bytes = static_cast<double>(layout_.replicated_elements) * sizeof(W);
  auto sc = OpTimer::time(t, id, 0, 2.0 * bytes * (s_.ranks - 1) / s_.ranks);
  comm_.allreduce_sum(grads_.data(), layout_.replicated_elements);
}

#define GLAM_INSTANTIATE(T)                                                                                 \
  template Transformer<T>::Transformer(const ModelConfig&, const ExecShape&, Communicator&,                  \
                                       const kernels::KernelContext&);                                       \
  template void Transformer<T>::init_params(uint64_t);                                                      \
  template kernels::RouterShape Transformer<T>::router_shape() const;                                       \
  template void Transformer<T>::set_logit_chunk_rows(int64_t);                                              \
  template void Transformer<T>::linear_backward(const T*, const T*, const T*, T*, Transformer<T>::Master*,   \
                                                int64_t, int64_t, int64_t, bool, int64_t);                  \
  template const T* Transformer<T>::weight(int) const;                                                      \
  template StepLoss Transformer<T>::run(const int32_t*, const int32_t*, int64_t, bool, OpTimer*, int64_t);  \
  template void Transformer<T>::allreduce_gradients(OpTimer*);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(double)
GLAM_INSTANTIATE(kernels::bf16)

}  // namespace glam::exec
