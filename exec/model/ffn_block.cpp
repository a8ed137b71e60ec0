// The dense feed-forward half of a block: pre-norm, gated (or plain) FFN plus residual; and its
// backward pass.
#include "activation.h"
#include "elementwise.h"
#include "gemm.h"
#include "model/transformer.h"
#include "norm.h"

namespace glam::exec {

namespace k = glam::kernels;

template <class T>
void Transformer<T>::dense_forward(int64_t l, OpTimer* t) {
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = act(l);
  const int64_t n = s_.tokens(), d = m_.d_model, h = ffn_hidden_;  // this slice's hidden units
  const bool gated = p.wi1 >= 0;
  const double es = sizeof(T), nd = static_cast<double>(n), mats = gated ? 2 : 1;
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnNorm, false), 4 * nd * d, 2 * es * nd * d);
    k::rmsnorm_forward<T>(ctx_, a.mid.data(), weight(p.ffn_norm), a.xn2.data(), a.inv2.data(), n, d);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnIn, false), mats * 2 * nd * d * h, es * (nd * d + mats * (d * h + nd * h)));
    linear_forward(a.xn2.data(), weight(p.wi0), a.h0.data(), n, d, h);
    if (gated) linear_forward(a.xn2.data(), weight(p.wi1), a.h1.data(), n, d, h);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnAct, false), 10 * nd * h, es * (mats + 1) * nd * h);
    k::activation_forward<T>(ctx_, ffn_act_, a.h0.data(), gated ? a.h1.data() : nullptr, a.a.data(), n * h);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnOut, false), 2 * nd * h * d + nd * d, es * (nd * h + h * d + 3 * nd * d));
    T* out = resid(l + 1).data();
    if (s_.tp == 1) k::copy<T>(ctx_, a.mid.data(), out, n * d);
    k::gemm<T>(ctx_, false, false, n, d, h, T(1), a.a.data(), h, weight(p.wo), d, T(s_.tp == 1 ? 1 : 0), out, d);
  }
  if (s_.tp > 1) {  // the slices' shares added up before the residual
    T* out = resid(l + 1).data();
    tensor_allreduce(out, n * d, id(l, LayerOp::kFfnTpAllreduce, false), t);
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnOut, false), nd * d, 3 * es * nd * d);
    k::add<T>(ctx_, a.mid.data(), out, out, n * d);
  }
}

template <class T>
void Transformer<T>::dense_backward(int64_t l, OpTimer* t) {
  // On entry dres_ holds the gradient of the block output; on exit, of mid (the FFN input).
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = act(l);
  const int64_t n = s_.tokens(), d = m_.d_model, h = ffn_hidden_;  // this slice's hidden units
  const bool gated = p.wi1 >= 0;
  const double es = sizeof(T), nd = static_cast<double>(n), mats = gated ? 2 : 1;
  const double ws = sizeof(T) + sizeof(W);  // a weight read, its gradient written
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnOut, true), 4 * nd * h * d, es * (2 * nd * h + nd * d) + ws * h * d);
    linear_backward(a.a.data(), weight(p.wo), dres_.data(), da_.data(), grad(p.wo), n, h, d, false);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnAct, true), 16 * nd * h, es * (2 * mats + 1) * nd * h);
    k::activation_backward<T>(ctx_, ffn_act_, da_.data(), a.h0.data(), gated ? a.h1.data() : nullptr, dh0_.data(),
                              gated ? dh1_.data() : nullptr, n * h);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnIn, true), mats * 4 * nd * d * h, es * (2 * nd * d + mats * nd * h) + mats * ws * d * h);
    linear_backward(a.xn2.data(), weight(p.wi0), dh0_.data(), dxn_.data(), grad(p.wi0), n, d, h, false);
    if (gated) linear_backward(a.xn2.data(), weight(p.wi1), dh1_.data(), dxn_.data(), grad(p.wi1), n, d, h, true);
  }
  if (s_.tp > 1) tensor_allreduce(dxn_.data(), n * d, id(l, LayerOp::kFfnTpAllreduce, true), t);
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kFfnNorm, true), 8 * nd * d, 4 * es * nd * d);
    k::rmsnorm_backward<T>(ctx_, dxn_.data(), a.mid.data(), weight(p.ffn_norm), a.inv2.data(), dres_.data(),
                           grad(p.ffn_norm), n, d);
  }
}

template void Transformer<float>::dense_forward(int64_t, OpTimer*);
template void Transformer<float>::dense_backward(int64_t, OpTimer*);
template void Transformer<double>::dense_forward(int64_t, OpTimer*);
template void Transformer<double>::dense_backward(int64_t, OpTimer*);
template void Transformer<kernels::bf16>::dense_forward(int64_t, OpTimer*);
template void Transformer<kernels::bf16>::dense_backward(int64_t, OpTimer*);

}  // namespace glam::exec
