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

namespace {

// How one operand of the per-(sequence, head) attention products is laid out: where the matrix of
// sequence b and head h starts is b * seq + h * head. Token-major tensors (Q, K, V, context, [tokens,
// heads x head_dim]): seq = seq_len x heads x head_dim, head = head_dim. Scores and probabilities
// ([sequences, heads, T, T]): seq = heads x T x T, head = T x T.
struct AttnOperand {
  int64_t seq, head;
};

// The products of every (sequence, head): a strided batch over the heads per sequence, or over the
// sequences per head, whichever makes fewer calls (both have constant strides). Small heads at a
// large batch (glam-0.1b: 12 heads, 32 sequences) are then 12 calls, not 32.
template <class T>
void attention_products(const k::KernelContext& ctx, int64_t seqs, int64_t heads, bool ta, bool tb, int64_t m,
                        int64_t n, int64_t kk, k::acc_t<T> alpha, const T* a, int64_t lda, AttnOperand la, const T* b,
                        int64_t ldb, AttnOperand lb, T* c, int64_t ldc, AttnOperand lc) {
  const bool per_head = heads < seqs;
  const int64_t calls = per_head ? heads : seqs, batch = per_head ? seqs : heads;
  auto start = [&](AttnOperand o, int64_t i) { return i * (per_head ? o.head : o.seq); };
  auto stride = [&](AttnOperand o) { return per_head ? o.seq : o.head; };
  for (int64_t i = 0; i < calls; ++i)
    k::gemm_strided_batched<T>(ctx, ta, tb, m, n, kk, alpha, a + start(la, i), lda, stride(la), b + start(lb, i), ldb,
                               stride(lb), k::acc_t<T>(0), c + start(lc, i), ldc, stride(lc), batch);
}

}  // namespace

template <class T>
void Transformer<T>::attention_forward(int64_t l, OpTimer* t) {
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = act(l);
  const int64_t n = s_.tokens(), d = m_.d_model, hd = attn_width_, h = heads_, dh = m_.head_dim;  // this slice's heads
  const int64_t b_count = s_.seqs, sl = s_.seq_len, tt = sl * sl;
  const AttnOperand tokens{sl * hd, dh}, scores{h * tt, tt};
  const double es = sizeof(T), nd = static_cast<double>(n), attn = static_cast<double>(b_count * h * tt);
  const W scale = static_cast<W>(1.0 / std::sqrt(static_cast<double>(dh)));
  const T* x = resid(l).data();
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
    attention_products<T>(ctx_, b_count, h, false, true, sl, sl, dh, scale, a.q.data(), hd, tokens, a.k.data(), hd,
                          tokens, a.probs.data(), sl, scores);
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
    attention_products<T>(ctx_, b_count, h, false, false, sl, dh, sl, W(1), a.probs.data(), sl, scores, a.v.data(), hd,
                          tokens, a.ctx.data(), hd, tokens);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnOut, false), 2 * nd * hd * d + nd * d, es * (nd * hd + hd * d + 3 * nd * d));
    if (s_.tp == 1) {
      k::copy<T>(ctx_, x, a.mid.data(), n * d);
      k::gemm<T>(ctx_, false, false, n, d, hd, T(1), a.ctx.data(), hd, weight(p.o), d, T(1), a.mid.data(), d);
    } else {  // this slice's heads' share, added up over the slices before the residual
      k::gemm<T>(ctx_, false, false, n, d, hd, T(1), a.ctx.data(), hd, weight(p.o), d, T(0), a.mid.data(), d);
    }
  }
  if (s_.tp > 1) {
    tensor_allreduce(a.mid.data(), n * d, id(l, LayerOp::kAttnTpAllreduce, false), t);
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnOut, false), nd * d, 3 * es * nd * d);
    k::add<T>(ctx_, x, a.mid.data(), a.mid.data(), n * d);
  }
}

template <class T>
void Transformer<T>::attention_backward(int64_t l, OpTimer* t) {
  // On entry dres_ holds the gradient of this block's attention output (mid); on exit, of its input.
  const LayerParams& p = layout_.layers[static_cast<size_t>(l)];
  LayerActs& a = act(l);
  const int64_t n = s_.tokens(), d = m_.d_model, hd = attn_width_, h = heads_, dh = m_.head_dim;  // this slice's heads
  const int64_t b_count = s_.seqs, sl = s_.seq_len, tt = sl * sl;
  const AttnOperand tokens{sl * hd, dh}, scores{h * tt, tt};
  const double es = sizeof(T), nd = static_cast<double>(n), attn = static_cast<double>(b_count * h * tt);
  const double ws = sizeof(T) + sizeof(W);  // a weight read, its gradient written
  const W scale = static_cast<W>(1.0 / std::sqrt(static_cast<double>(dh)));
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnOut, true), 4 * nd * hd * d, es * (2 * nd * hd + nd * d) + ws * hd * d);
    linear_backward(a.ctx.data(), weight(p.o), dres_.data(), dctx_.data(), grad(p.o), n, hd, d, false);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnContext, true), 4 * attn * dh, es * (2 * attn + 4 * nd * hd));
    attention_products<T>(ctx_, b_count, h, false, true, sl, sl, dh, W(1), dctx_.data(), hd, tokens, a.v.data(), hd,
                          tokens, dscores_.data(), sl, scores);
    attention_products<T>(ctx_, b_count, h, true, false, sl, dh, sl, W(1), a.probs.data(), sl, scores, dctx_.data(),
                          hd, tokens, dv_.data(), hd, tokens);
  }
  {
    // The relative position bias's gradient is summed as the scores' gradient is written.
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnSoftmax, true), 4 * attn / 2, 3 * es * attn);
    k::RelativeBiasGrad<W> bias_grad;
    if (p.rel_bias >= 0) bias_grad = {grad(p.rel_bias), bucket_.data(), h};
    k::causal_softmax_backward<T>(ctx_, a.probs.data(), dscores_.data(), b_count * h * sl, sl, bias_grad);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnScores, true), 4 * attn * dh, es * (2 * attn + 4 * nd * hd));
    attention_products<T>(ctx_, b_count, h, false, false, sl, dh, sl, scale, dscores_.data(), sl, scores, a.k.data(),
                          hd, tokens, dq_.data(), hd, tokens);
    attention_products<T>(ctx_, b_count, h, true, false, sl, dh, sl, scale, dscores_.data(), sl, scores, a.q.data(), hd,
                          tokens, dk_.data(), hd, tokens);
  }
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnQkv, true), 12 * nd * d * hd, es * (2 * nd * d + 3 * nd * hd) + 3 * ws * d * hd);
    linear_backward(a.xn1.data(), weight(p.q), dq_.data(), dxn_.data(), grad(p.q), n, d, hd, false);
    linear_backward(a.xn1.data(), weight(p.k), dk_.data(), dxn_.data(), grad(p.k), n, d, hd, true);
    linear_backward(a.xn1.data(), weight(p.v), dv_.data(), dxn_.data(), grad(p.v), n, d, hd, true);
  }
  if (s_.tp > 1) tensor_allreduce(dxn_.data(), n * d, id(l, LayerOp::kAttnTpAllreduce, true), t);
  {
    auto sc = OpTimer::time(t, id(l, LayerOp::kAttnNorm, true), 8 * nd * d, 4 * es * nd * d);
    k::rmsnorm_backward<T>(ctx_, dxn_.data(), resid(l).data(), weight(p.attn_norm),
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
