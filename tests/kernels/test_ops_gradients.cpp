// Every op's backward against central finite differences in float64 on tiny shapes.
#include <gtest/gtest.h>

#include "activation.h"
#include "attention.h"
#include "embedding.h"
#include "fd.h"
#include "gemm.h"
#include "loss.h"
#include "moe.h"
#include "norm.h"
#include "router.h"

namespace glam::kernels {
namespace {

using glam::testing::dot;
using glam::testing::numeric_gradient;
using glam::testing::random_vector;
using glam::testing::relative_error;
using V = std::vector<double>;

const KernelContext ctx;

TEST(Gemm, MatchesNaiveProductForAllTransposes) {
  std::mt19937_64 gen(1);
  const int64_t m = 5, n = 7, k = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      V a = random_vector(m * k, gen), b = random_vector(k * n, gen), c = random_vector(m * n, gen);
      std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end()), cf(c.begin(), c.end());
      V ref(m * n);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t p = 0; p < k; ++p) s += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
          ref[i * n + j] = 2 * s + 0.5 * c[i * n + j];
        }
      gemm<double>(ctx, ta, tb, m, n, k, 2.0, a.data(), ta ? m : k, b.data(), tb ? k : n, 0.5, c.data(), n);
      gemm<float>(ctx, ta, tb, m, n, k, 2.0f, af.data(), ta ? m : k, bf.data(), tb ? k : n, 0.5f, cf.data(), n);
      EXPECT_LT(relative_error(c, ref), 1e-14);
      EXPECT_LT(relative_error(V(cf.begin(), cf.end()), ref), 1e-5);
    }
}

TEST(OpGradients, RmsNorm) {
  std::mt19937_64 gen(2);
  const int64_t rows = 3, dim = 6;
  V x = random_vector(rows * dim, gen), scale = random_vector(dim, gen), w = random_vector(rows * dim, gen);
  auto f = [&] {
    V y(rows * dim), inv(rows);
    rmsnorm_forward<double>(ctx, x.data(), scale.data(), y.data(), inv.data(), rows, dim);
    return dot(y, w);
  };
  V y(rows * dim), inv(rows), dx(rows * dim, 0.0), ds(dim, 0.0);
  rmsnorm_forward<double>(ctx, x.data(), scale.data(), y.data(), inv.data(), rows, dim);
  rmsnorm_backward<double>(ctx, w.data(), x.data(), scale.data(), inv.data(), dx.data(), ds.data(), rows, dim);
  EXPECT_LT(relative_error(dx, numeric_gradient(f, x)), 1e-7);
  EXPECT_LT(relative_error(ds, numeric_gradient(f, scale)), 1e-7);
}

TEST(OpGradients, ActivationsPlainAndGated) {
  std::mt19937_64 gen(3);
  const int64_t n = 17;
  for (Activation act : {Activation::kGelu, Activation::kRelu, Activation::kSilu})
    for (bool gated : {false, true}) {
      V h0 = random_vector(n, gen), h1 = random_vector(n, gen), w = random_vector(n, gen);
      auto f = [&] {
        V y(n);
        activation_forward<double>(ctx, act, h0.data(), gated ? h1.data() : nullptr, y.data(), n);
        return dot(y, w);
      };
      V d0(n), d1(n);
      activation_backward<double>(ctx, act, w.data(), h0.data(), gated ? h1.data() : nullptr, d0.data(),
                                  gated ? d1.data() : nullptr, n);
      EXPECT_LT(relative_error(d0, numeric_gradient(f, h0)), 1e-7) << static_cast<int>(act) << gated;
      if (gated) {
        EXPECT_LT(relative_error(d1, numeric_gradient(f, h1)), 1e-7);
      }
    }
}

// GELU in float32 against float64 where 1 + tanh and 1 - tanh^2 cancel (negative and large inputs):
// relative accuracy of the value and the derivative, out to inputs far past saturation.
TEST(OpGradients, GeluFloat32IsAccurateInItsTails) {
  const std::vector<double> xs = {-1e13, -100, -20, -7, -5, -2, -1e-3, 0, 1e-3, 2, 5, 7, 20, 100, 1e13};
  const int64_t n = static_cast<int64_t>(xs.size());
  std::vector<float> xf(xs.begin(), xs.end()), ones(xs.size(), 1.f), yf(xs.size()), df(xs.size());
  V y(xs.size()), d(xs.size()), one(xs.size(), 1.0);
  activation_forward<float>(ctx, Activation::kGelu, xf.data(), nullptr, yf.data(), n);
  activation_backward<float>(ctx, Activation::kGelu, ones.data(), xf.data(), nullptr, df.data(), nullptr, n);
  activation_forward<double>(ctx, Activation::kGelu, xs.data(), nullptr, y.data(), n);
  activation_backward<double>(ctx, Activation::kGelu, one.data(), xs.data(), nullptr, d.data(), nullptr, n);
  for (size_t i = 0; i < xs.size(); ++i) {
    // exp(-2|u|) turns the float32 rounding of u into a relative error of about 2|u| x 2^-23: the
    // conditioning of the function, not of the kernel
    const double u = 0.7978845608028654 * (xs[i] + 0.044715 * xs[i] * xs[i] * xs[i]);
    const double rel = 2e-6 + 2.4e-7 * std::min(2 * std::abs(u), 1e3);
    EXPECT_NEAR(yf[i], y[i], rel * std::abs(y[i]) + 1e-30) << "GELU(" << xs[i] << ")";
    EXPECT_NEAR(df[i], d[i], rel * std::abs(d[i]) + 1e-30) << "GELU'(" << xs[i] << ")";
  }
  EXPECT_NEAR(d.front(), 0.0, 1e-30);  // saturated: GELU'(-inf) = 0, GELU'(inf) = 1
  EXPECT_NEAR(d.back(), 1.0, 1e-12);
}

TEST(OpGradients, CausalSoftmaxWithRelativeBias) {
  // t = 37: rows longer than the CPU kernels' 16-lane reductions, with a remainder.
  std::mt19937_64 gen(4);
  for (int64_t t : {5, 37}) {
    const int64_t b = 2, h = 2, buckets = 4;
    std::vector<int32_t> bucket(t);
    relative_bucket_by_distance(bucket.data(), t, buckets, 8);
    V s = random_vector(b * h * t * t, gen), bias = random_vector(buckets * h, gen), w = random_vector(b * h * t * t, gen);
    auto probs = [&] {
      V p = s;
      causal_softmax_forward<double>(ctx, p.data(), b * h * t, t, {bias.data(), bucket.data(), h});
      return p;
    };
    auto f = [&] { return dot(probs(), w); };
    V p = probs(), ds = w, dbias(buckets * h, 0.0);
    causal_softmax_backward<double>(ctx, p.data(), ds.data(), b * h * t, t);
    attention_bias_backward<double>(ctx, ds.data(), bucket.data(), dbias.data(), b, h, t);
    V num = numeric_gradient(f, s);
    EXPECT_LT(relative_error(ds, num), 1e-7) << t;
    EXPECT_LT(relative_error(dbias, numeric_gradient(f, bias)), 1e-7) << t;
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = i + 1; j < t; ++j) EXPECT_EQ(p[i * t + j], 0.0);  // causal
  }
}

TEST(OpGradients, RelativeBucketsFollowT5) {
  EXPECT_EQ(relative_position_bucket(0, 32, 128), 0);
  EXPECT_EQ(relative_position_bucket(-15, 32, 128), 15);
  EXPECT_EQ(relative_position_bucket(-16, 32, 128), 16);
  EXPECT_EQ(relative_position_bucket(-127, 32, 128), 31);
  EXPECT_EQ(relative_position_bucket(-1000, 32, 128), 31);
  EXPECT_EQ(relative_position_bucket(5, 32, 128), 0);  // future keys (masked anyway)
  std::vector<int32_t> by_distance(300);
  relative_bucket_by_distance(by_distance.data(), 300, 32, 128);
  for (int64_t d = 0; d < 300; ++d) EXPECT_EQ(by_distance[d], relative_position_bucket(-d, 32, 128)) << d;
}

TEST(OpGradients, CausalSoftmaxAddsTheBiasOfEachHeadAndDistance) {
  // Against the softmax of scores with the bias written in by hand: [b, h, i, j] += table[bucket[i-j], h].
  std::mt19937_64 gen(6);
  const int64_t b = 2, h = 3, t = 7, buckets = 4;
  std::vector<int32_t> bucket(t);
  relative_bucket_by_distance(bucket.data(), t, buckets, 6);
  V s = random_vector(b * h * t * t, gen), table = random_vector(buckets * h, gen, 3.0);
  V biased = s;
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < t; ++i)
        for (int64_t j = 0; j <= i; ++j) biased[((bb * h + hh) * t + i) * t + j] += table[bucket[i - j] * h + hh];
  V fused = s;
  causal_softmax_forward<double>(ctx, fused.data(), b * h * t, t, {table.data(), bucket.data(), h});
  causal_softmax_forward<double>(ctx, biased.data(), b * h * t, t);
  for (size_t k = 0; k < fused.size(); ++k) ASSERT_NEAR(fused[k], biased[k], 1e-15) << k;
  V plain = s;
  causal_softmax_forward<double>(ctx, plain.data(), b * h * t, t);
  EXPECT_GT(relative_error(plain, fused), 1e-2);  // the bias did change the probabilities
}

TEST(OpGradients, CrossEntropyWithZLoss) {
  std::mt19937_64 gen(5);
  const int64_t n = 4, v = 9;
  const double zw = 0.1, scale = 0.25;
  V logits = random_vector(n * v, gen, 2.0);
  std::vector<int32_t> y = {0, 3, 8, 3};
  auto f = [&] {
    V ce(n), lse(n), d(n * v);
    softmax_xent_forward_backward<double>(ctx, logits.data(), y.data(), n, v, zw, scale, ce.data(), lse.data(), d.data());
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += scale * (ce[i] + zw * lse[i] * lse[i]);
    return s;
  };
  V ce(n), lse(n), d(n * v);
  softmax_xent_forward_backward<double>(ctx, logits.data(), y.data(), n, v, zw, scale, ce.data(), lse.data(), d.data());
  EXPECT_LT(relative_error(d, numeric_gradient(f, logits)), 1e-7);
}

TEST(OpGradients, EmbeddingIsAdjointOfLookup) {
  std::mt19937_64 gen(6);
  const int64_t vocab = 5, dim = 3, n = 6;
  std::vector<int32_t> ids = {1, 4, 1, 0, 2, 1};
  V table = random_vector(vocab * dim, gen), w = random_vector(n * dim, gen);
  auto f = [&] {
    V out(n * dim);
    embedding_forward<double>(ctx, ids.data(), table.data(), out.data(), n, dim);
    return dot(out, w);
  };
  V dt(vocab * dim, 0.0);
  embedding_backward<double>(ctx, ids.data(), w.data(), dt.data(), n, dim);
  EXPECT_LT(relative_error(dt, numeric_gradient(f, table)), 1e-8);
}

// The router's logits gradient (gate normalisation, drops, auxiliary loss), with the routing
// decisions fixed: the perturbation is far too small to flip an argmax.
TEST(OpGradients, RouterGatesAndAuxiliaryLoss) {
  std::mt19937_64 gen(7);
  for (int64_t top_k : {1, 2}) {
    RouterShape s;
    s.tokens = 12, s.experts = 4, s.top_k = top_k, s.group_tokens = 6, s.capacity = 2;  // capacity forces drops
    V logits = random_vector(s.tokens * s.experts, gen, 1.5), w = random_vector(s.tokens * top_k, gen);
    const double aux_scale = 0.3;
    SecondExpertPolicy pol;
    auto f = [&] {
      V probs(logits.size()), gate(s.tokens * top_k), aux(s.groups());
      std::vector<int32_t> ex(s.tokens * top_k), loc(s.tokens * top_k), st(s.slots());
      router_forward<double>(ctx, logits.data(), s, pol, probs.data(), ex.data(), gate.data(), loc.data(), st.data());
      router_aux_loss<double>(ctx, probs.data(), ex.data(), s, aux.data());
      double a = 0;
      for (double x : aux) a += x;
      return dot(gate, w) + aux_scale * a;
    };
    V probs(logits.size()), gate(s.tokens * top_k), dl(logits.size());
    std::vector<int32_t> ex(s.tokens * top_k), loc(s.tokens * top_k), st(s.slots());
    router_forward<double>(ctx, logits.data(), s, pol, probs.data(), ex.data(), gate.data(), loc.data(), st.data());
    int dropped = 0;
    for (int32_t l : loc) dropped += l < 0;
    EXPECT_GT(dropped, 0);
    router_backward<double>(ctx, probs.data(), ex.data(), loc.data(), w.data(), aux_scale, s, dl.data());
    EXPECT_LT(relative_error(dl, numeric_gradient(f, logits)), 1e-7) << "top_k " << top_k;
  }
}

TEST(OpGradients, DispatchAndCombine) {
  std::mt19937_64 gen(8);
  const int64_t n = 6, k = 2, dim = 3, slots = 10;
  std::vector<int32_t> loc = {0, 5, 1, -1, 2, 6, 3, -2, 4, 7, -1, 8};
  std::vector<int32_t> st(slots, -1);
  for (int64_t i = 0; i < n * k; ++i)
    if (loc[i] >= 0) st[loc[i]] = static_cast<int32_t>(i / k);
  V x = random_vector(n * dim, gen), buf = random_vector(slots * dim, gen), gate = random_vector(n * k, gen);
  for (int64_t i = 0; i < n * k; ++i)
    if (loc[i] < 0) gate[i] = 0;
  V w = random_vector(n * dim, gen), wb = random_vector(slots * dim, gen);
  // combine: y = sum_k gate * buf[loc]
  auto fc = [&] {
    V y(n * dim, 0.0);
    moe_combine_forward<double>(ctx, buf.data(), loc.data(), gate.data(), y.data(), n, k, dim);
    return dot(y, w);
  };
  V dbuf(slots * dim), dgate(n * k);
  moe_combine_backward<double>(ctx, w.data(), buf.data(), loc.data(), st.data(), gate.data(), dbuf.data(), dgate.data(),
                               n, k, slots, dim);
  EXPECT_LT(relative_error(dbuf, numeric_gradient(fc, buf)), 1e-8);
  V ng = numeric_gradient(fc, gate);
  for (int64_t i = 0; i < n * k; ++i)
    if (loc[i] >= 0) {
      EXPECT_NEAR(dgate[i], ng[i], 1e-7);
    }
  // dispatch: buf = x[slot_token]
  auto fd = [&] {
    V b(slots * dim);
    moe_dispatch_forward<double>(ctx, x.data(), st.data(), b.data(), slots, dim);
    return dot(b, wb);
  };
  V dx(n * dim, 0.0);
  moe_dispatch_backward<double>(ctx, wb.data(), loc.data(), dx.data(), n, k, dim);
  EXPECT_LT(relative_error(dx, numeric_gradient(fd, x)), 1e-8);
}

TEST(MoePermute, SwapLeadingAxesIsATransposeOfBlocks) {
  const int64_t a = 3, b = 2, blk = 4;
  std::vector<float> in(a * b * blk), out(a * b * blk), back(a * b * blk);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
  swap_leading_axes<float>(ctx, in.data(), out.data(), a, b, blk);
  EXPECT_EQ(out[(1 * a + 2) * blk + 3], in[(2 * b + 1) * blk + 3]);
  swap_leading_axes<float>(ctx, out.data(), back.data(), b, a, blk);
  EXPECT_EQ(back, in);
}

}  // namespace
}  // namespace glam::kernels

namespace glam::kernels {
namespace {

// The float32 kernels (vectorized exp) agree with the float64 reference path.
TEST(FloatPath, ActivationsAndLossMatchFloat64) {
  std::mt19937_64 gen(31);
  const int64_t n = 4096;
  V h0 = glam::testing::random_vector(n, gen, 4.0), h1 = glam::testing::random_vector(n, gen);
  h0[0] = 60, h0[1] = -60, h0[2] = 0;  // saturation and zero
  std::vector<float> f0(h0.begin(), h0.end()), f1(h1.begin(), h1.end()), fy(n), fd0(n), fd1(n);
  for (Activation act : {Activation::kGelu, Activation::kSilu}) {
    V y(n), d0(n), d1(n);
    activation_forward<double>(ctx, act, h0.data(), h1.data(), y.data(), n);
    activation_forward<float>(ctx, act, f0.data(), f1.data(), fy.data(), n);
    activation_backward<double>(ctx, act, h1.data(), h0.data(), h1.data(), d0.data(), d1.data(), n);
    activation_backward<float>(ctx, act, f1.data(), f0.data(), f1.data(), fd0.data(), fd1.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(fy[i], y[i], 1e-5 * (1 + std::abs(y[i]))) << i;
      ASSERT_NEAR(fd0[i], d0[i], 1e-5 * (1 + std::abs(d0[i]))) << i;
    }
  }
  const int64_t tokens = 3, vocab = 1000;
  V logits = glam::testing::random_vector(tokens * vocab, gen, 3.0), ce(tokens), lse(tokens), d(tokens * vocab);
  std::vector<float> lf(logits.begin(), logits.end()), cf(tokens), sf(tokens), df(tokens * vocab);
  std::vector<int32_t> y = {5, 999, 0};
  softmax_xent_forward_backward<double>(ctx, logits.data(), y.data(), tokens, vocab, 1e-4, 0.5, ce.data(), lse.data(), d.data());
  softmax_xent_forward_backward<float>(ctx, lf.data(), y.data(), tokens, vocab, 1e-4, 0.5, cf.data(), sf.data(), df.data());
  for (int64_t t = 0; t < tokens; ++t) {
    EXPECT_NEAR(cf[t], ce[t], 1e-5 * ce[t]);
    EXPECT_NEAR(sf[t], lse[t], 1e-5 * lse[t]);
  }
  for (int64_t i = 0; i < tokens * vocab; ++i) ASSERT_NEAR(df[i], d[i], 1e-6);
}

}  // namespace
}  // namespace glam::kernels
