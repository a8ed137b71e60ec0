// The attention half of a block: pre-norm, Q/K/V, scores with the relative position bias,
// causal softmax, context, output projection plus residual; and its backward pass.
#include <cmath>

#include "attention.h"
#include "elementwise.h"
#include "gemm.h"
#include "model/transformer.h"
#include "norm.h"

namespace glam::exec {

namespace k = glam::kernels;

template <class T>
void Transformer<T>::attention_forward(int64_t l, OpTimer* t) {
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = acts_[static_cast<size_t>(l)];
  const int64_t n = s_.tokens(), d = m_.d_model, hd = m_.attention_width(), h = m_.heads, dh = m_.head_dim;
  const int64_t b_count = s_.seqs, sl = s_.seq_len, tt = sl * sl;
  const double es = sizeof(T), nd = static_cast<double>(n), attn = static_cast<double>(b_count * h * tt);
  const W scale = static_cast<W>(1.0 / std::sqrt(static_cast<double>(dh)));
  const T* x = resid_[static_cast<size_t>(l)].data();
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnNorm, false), 4 * nd * d, 2 * es * nd * d);
    k::rmsnorm_forward<T>(ctx_, x, weight(p.attn_norm), a.xn1.data(), a.inv1.data(), n, d);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnQkv, false), 6 * nd * d * hd, es * (nd * d + 3 * d * hd + 3 * nd * hd));
    linear_forward(a.xn1.data(), weight(p.q), a.q.data(), n, d, hd);
    linear_forward(a.xn1.data(), weight(p.k), a.k.data(), n, d, hd);
    linear_forward(a.xn1.data(), weight(p.v), a.v.data(), n, d, hd);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnScores, false), 2 * attn * dh, es * (2 * nd * hd + attn));
    for (int64_t b = 0; b < b_count; ++b)
      k::gemm_strided_batched<T>(ctx_, false, true, sl, sl, dh, scale, a.q.data() + b * sl * hd, hd, dh,
                                 a.k.data() + b * sl * hd, hd, dh, T(0), a.probs.data() + b * h * tt, sl, tt, h);
  }
  {
    // The relative position bias is added inside the softmax, as it reads the scores.
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnSoftmax, false), 5 * attn / 2, 2 * es * attn);
    k::RelativeBias<T> bias;
    if (p.rel_bias >= 0) bias = {weight(p.rel_bias), bucket_.data(), h};
    k::causal_softmax_forward<T>(ctx_, a.probs.data(), b_count * h * sl, sl, bias);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnContext, false), 2 * attn * dh, es * (attn + 2 * nd * hd));
    for (int64_t b = 0; b < b_count; ++b)
      k::gemm_strided_batched<T>(ctx_, false, false, sl, dh, sl, T(1), a.probs.data() + b * h * tt, sl, tt,
                                 a.v.data() + b * sl * hd, hd, dh, T(0), a.ctx.data() + b * sl * hd, hd, dh, h);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnOut, false), 2 * nd * hd * d + nd * d, es * (nd * hd + hd * d + 3 * nd * d));
    k::copy<T>(ctx_, x, a.mid.data(), n * d);
    k::gemm<T>(ctx_, false, false, n, d, hd, T(1), a.ctx.data(), hd, weight(p.o), d, T(1), a.mid.data(), d);
  }
}

template <class T>
void Transformer<T>::attention_backward(int64_t l, OpTimer* t) {
  // On entry dres_ holds the gradient of this block's attention output (mid); on exit, of its input.
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = acts_[static_cast<size_t>(l)];
  const int64_t n = s_.tokens(), d = m_.d_model, hd = m_.attention_width(), h = m_.heads, dh = m_.head_dim;
  const int64_t b_count = s_.seqs, sl = s_.seq_len, tt = sl * sl;
  const double es = sizeof(T), nd = static_cast<double>(n), attn = static_cast<double>(b_count * h * tt);
  const double ws = sizeof(T) + sizeof(W);  // a weight read, its gradient written
  const W scale = static_cast<W>(1.0 / std::sqrt(static_cast<double>(dh)));
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnOut, true), 4 * nd * hd * d, es * (2 * nd * hd + nd * d) + ws * hd * d);
    linear_backward(a.ctx.data(), weight(p.o), dres_.data(), dctx_.data(), grad(p.o), n, hd, d, false);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnContext, true), 4 * attn * dh, es * (2 * attn + 4 * nd * hd));
    for (int64_t b = 0; b < b_count; ++b) {
      k::gemm_strided_batched<T>(ctx_, false, true, sl, sl, dh, T(1), dctx_.data() + b * sl * hd, hd, dh,
                                 a.v.data() + b * sl * hd, hd, dh, T(0), dscores_.data() + b * h * tt, sl, tt, h);
      k::gemm_strided_batched<T>(ctx_, true, false, sl, dh, sl, T(1), a.probs.data() + b * h * tt, sl, tt,
                                 dctx_.data() + b * sl * hd, hd, dh, T(0), dv_.data() + b * sl * hd, hd, dh, h);
    }
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnSoftmax, true), 4 * attn / 2, 3 * es * attn);
    k::causal_softmax_backward<T>(ctx_, a.probs.data(), dscores_.data(), b_count * h * sl, sl);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnScores, true), 4 * attn * dh, es * (2 * attn + 4 * nd * hd));
    if (p.rel_bias >= 0)
      k::attention_bias_backward<T>(ctx_, dscores_.data(), bucket_.data(), grad(p.rel_bias), b_count, h, sl);
    for (int64_t b = 0; b < b_count; ++b) {
      k::gemm_strided_batched<T>(ctx_, false, false, sl, dh, sl, scale, dscores_.data() + b * h * tt, sl, tt,
                                 a.k.data() + b * sl * hd, hd, dh, T(0), dq_.data() + b * sl * hd, hd, dh, h);
      k::gemm_strided_batched<T>(ctx_, true, false, sl, dh, sl, scale, dscores_.data() + b * h * tt, sl, tt,
                                 a.q.data() + b * sl * hd, hd, dh, T(0), dk_.data() + b * sl * hd, hd, dh, h);
    }
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnQkv, true), 12 * nd * d * hd, es * (2 * nd * d + 3 * nd * hd) + 3 * ws * d * hd);
    linear_backward(a.xn1.data(), weight(p.q), dq_.data(), dxn_.data(), grad(p.q), n, d, hd, false);
    linear_backward(a.xn1.data(), weight(p.k), dk_.data(), dxn_.data(), grad(p.k), n, d, hd, true);
    linear_backward(a.xn1.data(), weight(p.v), dv_.data(), dxn_.data(), grad(p.v), n, d, hd, true);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnNorm, true), 8 * nd * d, 4 * es * nd * d);
    k::rmsnorm_backward<T>(ctx_, dxn_.data(), resid_[static_cast<size_t>(l)].data(), weight(p.attn_norm),
                           a.inv1.data(), dres_.data(), grad(p.attn_norm), n, d);
  }
}

template void Transformer<float>::attention_forward(int64_t, OpTimer*);
template void Transformer<float>::attention_backward(int64_t, OpTimer*);
template void Transformer<double>::attention_forward(int64_t, OpTimer*);
template void Transformer<double>::attention_backward(int64_t, OpTimer*);
template void Transformer<kernels::bf16>::attention_forward(int64_t, OpTimer*);
template void Transformer<kernels::bf16>::attention_backward(int64_t, OpTimer*);

}  // namespace glam::exec
