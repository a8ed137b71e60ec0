// The mixture-of-experts half of a block (GShard, expert parallel):
//   ffn_norm -> moe_router (gate logits, softmax, top-k, capacity) -> moe_permute (index gather into
//   expert-major slots [E, G, C, M]; with several ranks also the reorder after the all-to-all) ->
//   moe_dispatch_a2a -> experts (moe_expert_in / act / out: every local expert has the same slots, so
//   all of them are one strided-batched product, each over all ranks' slots) -> moe_unpermute (reorder before the all-to-all) -> moe_combine_a2a ->
//   moe_unpermute (weighted scatter back to tokens, plus the residual).
// With R ranks, rank r holds experts [r*E/R, (r+1)*E/R); the slots sent to rank r are contiguous.
#include <cmath>
#include <numeric>

#include "activation.h"
#include "elementwise.h"
#include "gemm.h"
#include "model/transformer.h"
#include "moe.h"
#include "norm.h"
#include "router.h"

namespace glam::exec {

namespace k = glam::kernels;

namespace {
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  return z ^ (z >> 31);
}
}  // namespace

template <class T>
void Transformer<T>::moe_forward(int64_t l, int64_t step, OpTimer* t) {
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = act(l);
  const int64_t n = s_.tokens(), d = m_.d_model, he = expert_hidden_, e_count = m_.experts;  // he: this slice's
  const int64_t kk = m_.top_k, ranks = s_.ranks, el = layout_.local_experts;
  const int64_t rows = slots_ / el;  // slots per local expert, from all ranks
  const int64_t block = groups_ * capacity_ * d;  // one expert's slots of one rank
  const bool gated = p.ewi1 >= 0;
  const double es = sizeof(T), nd = static_cast<double>(n), sd = static_cast<double>(slots_),
               mats = gated ? 2 : 1, a2a_bytes = es * sd * d * static_cast<double>(ranks - 1) / static_cast<double>(ranks);
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnNorm, false), 4 * nd * d, 2 * es * nd * d);
    k::rmsnorm_forward<T>(ctx_, a.mid.data(), weight(p.ffn_norm), a.xn2.data(), a.inv2.data(), n, d);
  }
  k::RouterShape rs = router_shape();
  const int64_t index = moe_index(l);
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeRouter, false), 2 * nd * d * e_count + 10 * nd * e_count,
                            es * (nd * d + d * e_count) + 2 * sizeof(W) * nd * e_count);
    linear_forward(a.xn2.data(), weight(p.router), a.rprobs.data(), n, d, e_count);
    k::SecondExpertPolicy pol;
    pol.random = m_.second_expert_policy == "random";
    pol.threshold = m_.second_expert_threshold;
    pol.seed = mix(mix(routing_seed, static_cast<uint64_t>(step)), static_cast<uint64_t>(l));
    // The step's global token index: rank r's micro-batch k holds its k-th share of the rank's tokens.
    pol.first_token = (static_cast<int64_t>(s_.rank) * s_.microbatches + microbatch_) * n;
    k::router_forward<W>(ctx_, a.rprobs.data(), rs, pol, a.rprobs.data(), a.expert.data(), a.gate.data(),
                         a.loc.data(), a.slot_token.data());
    // The layer's auxiliary losses and routing statistics stay on the device until the pass ends
    // (read_pass_routing).
    k::router_aux_loss<W>(ctx_, a.rprobs.data(), a.expert.data(), rs, aux_.data() + index * groups_);
    k::router_counts(ctx_, a.expert.data(), a.loc.data(), rs, route_counts_.data() + index * k::router_count_bins(e_count));
  }
  // dispatch
  T* ein = a.ein.data();
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoePermute, false), 0, 2 * es * sd * d);
    k::moe_dispatch_forward<T>(ctx_, a.xn2.data(), a.slot_token.data(), ranks > 1 ? sendbuf_.data() : ein, slots_, d);
  }
  if (ranks > 1) {
    {
      auto sc = OpTimer::time(t, id(l, LayerOp::kMoeDispatchA2a, false), 0, a2a_bytes);
      comm_.alltoall(sendbuf_.data(), recvbuf_.data(), el * block * static_cast<int64_t>(sizeof(T)));
    }
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoePermute, false), 0, 2 * es * sd * d);
    k::swap_leading_axes<T>(ctx_, recvbuf_.data(), ein, ranks, el, block);  // [R, El, ...] -> [El, R, ...]
  }
  // experts
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeExpertIn, false), mats * 2 * sd * d * he,
                            es * (sd * d + mats * (static_cast<double>(el) * d * he + sd * he)));
    linear_forward(ein, weight(p.ewi0), a.eh0.data(), rows, d, he, el);
    if (gated) linear_forward(ein, weight(p.ewi1), a.eh1.data(), rows, d, he, el);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeExpertAct, false), 10 * sd * he, es * (mats + 1) * sd * he);
    k::activation_forward<T>(ctx_, expert_act_, a.eh0.data(), gated ? a.eh1.data() : nullptr, a.ea.data(), slots_ * he);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeExpertOut, false), 2 * sd * he * d,
                            es * (sd * he + static_cast<double>(el) * he * d + sd * d));
    linear_forward(a.ea.data(), weight(p.ewo), a.eout.data(), rows, he, d, el);
  }
  // The slices' shares of the experts' outputs, added up (the StepGraph's ffn_tp_allreduce over copies).
  if (s_.tp > 1) tensor_allreduce(a.eout.data(), slots_ * d, id(l, LayerOp::kFfnTpAllreduce, false), t);
  // combine
  const T* cbuf = a.eout.data();
  if (ranks > 1) {
    {
      auto sc = OpTimer::time(t, id(l, LayerOp::kMoeUnpermute, false), 0, 2 * es * sd * d);
      k::swap_leading_axes<T>(ctx_, a.eout.data(), sendbuf_.data(), el, ranks, block);  // [El, R] -> [R, El]
    }
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeCombineA2a, false), 0, a2a_bytes);
    comm_.alltoall(sendbuf_.data(), a.cbuf.data(), el * block * static_cast<int64_t>(sizeof(T)));
    cbuf = a.cbuf.data();
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeUnpermute, false), 2 * nd * kk * d, es * (3 * nd * d + nd * kk * d));
    T* out = resid(l + 1).data();
    k::copy<T>(ctx_, a.mid.data(), out, n * d);
    k::moe_combine_forward<T>(ctx_, cbuf, a.loc.data(), a.gate.data(), out, n, kk, d);
  }
}

template <class T>
double Transformer<T>::read_pass_routing(int64_t b0, int64_t b1) {
  if (!m_.is_moe()) return 0;
  const int64_t e_count = m_.experts, bins = k::router_count_bins(e_count), moe_layers = m_.moe_layers();
  std::vector<int32_t> counts(static_cast<size_t>(moe_layers * bins));
  std::vector<W> aux(static_cast<size_t>(moe_layers * groups_));
  copy_to_host(route_counts_.data(), counts.data(), moe_layers * bins);
  copy_to_host(aux_.data(), aux.data(), moe_layers * groups_);
  if (moe_stats_.size() < static_cast<size_t>(moe_layers)) moe_stats_.resize(static_cast<size_t>(moe_layers));
  double aux_sum = 0;
  for (int64_t l = b0; l < b1; ++l) {
    if (!layout_.layers[static_cast<size_t>(l)].moe) continue;
    const int64_t index = moe_index(l);
    const int32_t* c = counts.data() + index * bins;
    MoeLayerStats st;
    st.layer = l;
    st.expert_load.assign(c, c + e_count);
    st.expert_dropped.assign(c + e_count, c + 2 * e_count);
    st.routed = s_.tokens() * m_.top_k;
    st.skipped = c[2 * e_count];
    step_moe_stats_[static_cast<size_t>(index)].add(st);
    moe_stats_[static_cast<size_t>(index)] = std::move(st);
    double layer_sum = 0;
    for (int64_t g = 0; g < groups_; ++g) layer_sum += static_cast<double>(aux[static_cast<size_t>(index * groups_ + g)]);
    aux_sum += layer_sum;
  }
  return aux_sum;
}

template <class T>
void Transformer<T>::moe_backward(int64_t l, OpTimer* t) {
  // On entry dres_ holds the gradient of the block output; on exit, of mid (the FFN input).
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = act(l);
  const int64_t n = s_.tokens(), d = m_.d_model, he = expert_hidden_, e_count = m_.experts;  // he: this slice's
  const int64_t kk = m_.top_k, ranks = s_.ranks, el = layout_.local_experts;
  const int64_t rows = slots_ / el;
  const int64_t block = groups_ * capacity_ * d;
  const int64_t block_bytes = el * block * static_cast<int64_t>(sizeof(T));
  const bool gated = p.ewi1 >= 0;
  const double es = sizeof(T), nd = static_cast<double>(n), sd = static_cast<double>(slots_),
               mats = gated ? 2 : 1, a2a_bytes = es * sd * d * static_cast<double>(ranks - 1) / static_cast<double>(ranks);
  const double ws = sizeof(T) + sizeof(W);  // a weight read, its gradient written
  T* bufa = sendbuf_.data();
  T* bufb = recvbuf_.data();
  const T* cbuf = ranks > 1 ? a.cbuf.data() : a.eout.data();
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeUnpermute, true), 4 * nd * kk * d, es * (sd * d + 2 * nd * kk * d));
    k::moe_combine_backward<T>(ctx_, dres_.data(), cbuf, a.loc.data(), a.slot_token.data(), a.gate.data(), bufa,
                               dgate_.data(), n, kk, slots_, d);
  }
  T* deout = bufa;
  if (ranks > 1) {
    {
      auto sc = OpTimer::time(t, id(l, LayerOp::kMoeCombineA2a, true), 0, a2a_bytes);
      comm_.alltoall(bufa, bufb, block_bytes);
    }
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeUnpermute, true), 0, 2 * es * sd * d);
    k::swap_leading_axes<T>(ctx_, bufb, bufa, ranks, el, block);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeExpertOut, true), 4 * sd * he * d,
                            es * (2 * sd * he + sd * d) + ws * static_cast<double>(el) * he * d);
    linear_backward(a.ea.data(), weight(p.ewo), deout, dea_.data(), grad(p.ewo), rows, he, d, false, el);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeExpertAct, true), 16 * sd * he, es * (2 * mats + 1) * sd * he);
    k::activation_backward<T>(ctx_, expert_act_, dea_.data(), a.eh0.data(), gated ? a.eh1.data() : nullptr,
                              deh0_.data(), gated ? deh1_.data() : nullptr, slots_ * he);
  }
  T* dein = bufb;
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeExpertIn, true), mats * 4 * sd * d * he,
                            es * (2 * sd * d + mats * sd * he) + mats * ws * static_cast<double>(el) * d * he);
    linear_backward(a.ein.data(), weight(p.ewi0), deh0_.data(), dein, grad(p.ewi0), rows, d, he, false, el);
    if (gated) linear_backward(a.ein.data(), weight(p.ewi1), deh1_.data(), dein, grad(p.ewi1), rows, d, he, true, el);
  }
  if (s_.tp > 1) tensor_allreduce(dein, slots_ * d, id(l, LayerOp::kFfnTpAllreduce, true), t);
  T* dlocal = dein;
  if (ranks > 1) {
    {
      auto sc = OpTimer::time(t, id(l, LayerOp::kMoePermute, true), 0, 2 * es * sd * d);
      k::swap_leading_axes<T>(ctx_, dein, bufa, el, ranks, block);  // [El, R] -> [R, El]
    }
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeDispatchA2a, true), 0, a2a_bytes);
    comm_.alltoall(bufa, bufb, block_bytes);
    dlocal = bufb;
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoePermute, true), nd * kk * d, es * (nd * d + nd * kk * d));
    k::fill<T>(ctx_, dxn_.data(), T(0), n * d);
    k::moe_dispatch_backward<T>(ctx_, dlocal, a.loc.data(), dxn_.data(), n, kk, d);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kMoeRouter, true), 4 * nd * d * e_count + 10 * nd * e_count,
                            es * (2 * nd * d + nd * e_count) + ws * d * e_count + 2 * sizeof(W) * nd * e_count);
    k::router_backward<W>(ctx_, a.rprobs.data(), a.expert.data(), a.loc.data(), dgate_.data(), aux_scale_,
                          router_shape(), drl_.data());
    linear_backward(a.xn2.data(), weight(p.router), as_type<T>(drl_.data(), drl_t_, n * e_count), dxn_.data(),
                    grad(p.router), n, d, e_count, true);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnNorm, true), 8 * nd * d, 4 * es * nd * d);
    k::rmsnorm_backward<T>(ctx_, dxn_.data(), a.mid.data(), weight(p.ffn_norm), a.inv2.data(), dres_.data(),
                           grad(p.ffn_norm), n, d);
  }
}

template void Transformer<float>::moe_forward(int64_t, int64_t, OpTimer*);
template double Transformer<float>::read_pass_routing(int64_t, int64_t);
template void Transformer<float>::moe_backward(int64_t, OpTimer*);
template void Transformer<double>::moe_forward(int64_t, int64_t, OpTimer*);
template double Transformer<double>::read_pass_routing(int64_t, int64_t);
template void Transformer<double>::moe_backward(int64_t, OpTimer*);
template void Transformer<kernels::bf16>::moe_forward(int64_t, int64_t, OpTimer*);
template double Transformer<kernels::bf16>::read_pass_routing(int64_t, int64_t);
template void Transformer<kernels::bf16>::moe_backward(int64_t, OpTimer*);

}  // namespace glam::exec
