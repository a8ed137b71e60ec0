// bfloat16 storage: the conversion's rounding, and every bf16 kernel against its float32 version run
// on the same (bf16-representable) inputs. The bf16 kernels compute in float32, so the two may differ
// only by the rounding of the stored outputs: half a bf16 unit, at most 2^-8 of the value.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "activation.h"
#include "attention.h"
#include "bfloat16.h"
#include "elementwise.h"
#include "embedding.h"
#include "gemm.h"
#include "loss.h"
#include "moe.h"
#include "norm.h"

namespace glam::kernels {
namespace {

const KernelContext ctx;
// bf16 keeps 8 significant bits: rounding to nearest errs by at most half a unit, 2^-8 of the value
constexpr double kHalfUnit = 1.0 / 256;

uint16_t bits_of(float f) { return bf16(f).bits; }
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(bits_of(1.0f), 0x3f80);
  EXPECT_EQ(bits_of(-2.5f), 0xc020);
  EXPECT_EQ(bits_of(from_bits(0x3f808000u)), 0x3f80);  // halfway, 0x3f80 is even: down
  EXPECT_EQ(bits_of(from_bits(0x3f818000u)), 0x3f82);  // halfway, 0x3f81 is odd: up
  EXPECT_EQ(bits_of(from_bits(0x3f808001u)), 0x3f81);  // just past halfway: up
  EXPECT_EQ(bits_of(from_bits(0x3f807fffu)), 0x3f80);  // just below: down
  EXPECT_EQ(bits_of(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to infinity
  EXPECT_EQ(bits_of(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(float(bf16(from_bits(0x7f800001u)))));  // a NaN whose payload would round to infinity
  EXPECT_EQ(bits_of(from_bits(0x00010000u)), 0x0001);  // subnormals are kept
}

TEST(Bf16, EveryValueRoundTripsExactly) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const float f = bf16::from_bits(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(bits_of(f), b) << "bits " << b;
  }
}

// Values that bf16 holds exactly, so that the float32 and bf16 kernels see the same inputs.
std::vector<float> representable(int64_t n, std::mt19937_64& gen, double scale = 1.0) {
  std::normal_distribution<double> nd(0, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(bf16(static_cast<float>(nd(gen))));
  return v;
}
std::vector<bf16> to_bf16(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// |got - want| within half a bf16 unit of want (plus `floor`, for values that cancel).
void expect_rounded(const std::vector<bf16>& got, const std::vector<float>& want, double floor = 1e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(float(got[i]), want[i], kHalfUnit * std::abs(want[i]) + floor) << "element " << i;
}
double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

TEST(Bf16Kernels, ProductsAccumulateInFloat32) {
  std::mt19937_64 gen(11);
  const int64_t m = 13, n = 9, k = 300, batch = 3, pad = 5;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      const int64_t sa = (ta ? k : m) * lda, sb = (tb ? n : k) * ldb, sc = m * ldc;
      auto a = representable(batch * sa, gen), b = representable(batch * sb, gen), c = representable(batch * sc, gen);
      // float64 reference of alpha op(A) op(B) + beta C
      std::vector<double> ref(c.begin(), c.end());
      for (int64_t q = 0; q < batch; ++q)
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t p = 0; p < k; ++p)
              s += static_cast<double>(a[q * sa + (ta ? p * lda + i : i * lda + p)]) *
                   static_cast<double>(b[q * sb + (tb ? j * ldb + p : p * ldb + j)]);
            ref[q * sc + i * ldc + j] = 0.5 * s + 2.0 * c[q * sc + i * ldc + j];
          }
      auto ab = to_bf16(a), bb = to_bf16(b);
      // float32 output: only the float32 accumulation differs from the reference
      std::vector<float> cf = c;
      gemm_strided_batched<bf16>(ctx, ta, tb, m, n, k, 0.5f, ab.data(), lda, sa, bb.data(), ldb, sb, 2.0f, cf.data(),
                                 ldc, sc, batch);
      // bf16 output: one rounding more; the padding between rows is left as it was
      auto cb = to_bf16(c);
      gemm_strided_batched<bf16>(ctx, ta, tb, m, n, k, 0.5f, ab.data(), lda, sa, bb.data(), ldb, sb, 2.0f, cb.data(),
                                 ldc, sc, batch);
      for (int64_t idx = 0; idx < batch * sc; ++idx) {
        const bool in_matrix = idx % ldc < n;
        if (!in_matrix) {
          ASSERT_EQ(cb[idx].bits, bf16(c[idx]).bits) << "padding element " << idx << " was written";
          continue;
        }
        ASSERT_NEAR(cf[idx], ref[idx], 1e-5 * std::sqrt(static_cast<double>(k)) * (1 + std::abs(ref[idx])));
        ASSERT_NEAR(float(cb[idx]), ref[idx], kHalfUnit * std::abs(ref[idx]) + 1e-4);
      }
      // the single-product entry point agrees with the batched one on the first matrix
      std::vector<float> c1(c.begin(), c.begin() + sc);
      gemm<bf16>(ctx, ta, tb, m, n, k, 0.5f, ab.data(), lda, bb.data(), ldb, 2.0f, c1.data(), ldc);
      for (int64_t idx = 0; idx < sc; ++idx) ASSERT_EQ(c1[idx], cf[idx]);
    }
}

TEST(Bf16Kernels, RmsNormForwardAndBackward) {
  std::mt19937_64 gen(12);
  const int64_t rows = 7, dim = 96;
  auto x = representable(rows * dim, gen, 3.0), scale = representable(dim, gen), dy = representable(rows * dim, gen);
  auto dx0 = representable(rows * dim, gen);
  // float32 on the same inputs
  std::vector<float> y(x.size()), inv(rows), dxf = dx0, dsf(dim, 0.f);
  rmsnorm_forward<float>(ctx, x.data(), scale.data(), y.data(), inv.data(), rows, dim);
  // bf16
  auto xb = to_bf16(x), sb = to_bf16(scale), dyb = to_bf16(dy), dxb = to_bf16(dx0);
  std::vector<bf16> yb(x.size());
  std::vector<float> dsb(dim, 0.f), invb(rows);
  rmsnorm_forward<bf16>(ctx, xb.data(), sb.data(), yb.data(), invb.data(), rows, dim);
  expect_rounded(yb, y);
  EXPECT_EQ(invb, inv);  // kept in float32: the backward pass uses the forward's exact value
  rmsnorm_backward<float>(ctx, dy.data(), x.data(), scale.data(), inv.data(), dxf.data(), dsf.data(), rows, dim);
  rmsnorm_backward<bf16>(ctx, dyb.data(), xb.data(), sb.data(), invb.data(), dxb.data(), dsb.data(), rows, dim);
  expect_rounded(dxb, dxf, kHalfUnit * max_abs(dxf) * 0.01);
  for (int64_t i = 0; i < dim; ++i) ASSERT_NEAR(dsb[i], dsf[i], 1e-5 * (1 + std::abs(dsf[i])));  // float32 gradient
}

TEST(Bf16Kernels, GatedGeluForwardAndBackward) {
  std::mt19937_64 gen(13);
  const int64_t n = 1000;
  auto h0 = representable(n, gen, 2.0), h1 = representable(n, gen), dy = representable(n, gen);
  std::vector<float> y(n), dh0(n), dh1(n);
  activation_forward<float>(ctx, Activation::kGelu, h0.data(), h1.data(), y.data(), n);
  activation_backward<float>(ctx, Activation::kGelu, dy.data(), h0.data(), h1.data(), dh0.data(), dh1.data(), n);
  auto h0b = to_bf16(h0), h1b = to_bf16(h1), dyb = to_bf16(dy);
  std::vector<bf16> yb(n), dh0b(n), dh1b(n);
  activation_forward<bf16>(ctx, Activation::kGelu, h0b.data(), h1b.data(), yb.data(), n);
  activation_backward<bf16>(ctx, Activation::kGelu, dyb.data(), h0b.data(), h1b.data(), dh0b.data(), dh1b.data(), n);
  expect_rounded(yb, y);
  expect_rounded(dh0b, dh0);
  expect_rounded(dh1b, dh1);
}

TEST(Bf16Kernels, CausalSoftmaxAndRelativeBias) {
  std::mt19937_64 gen(14);
  const int64_t batch = 2, heads = 3, t = 40, buckets = 8;
  const int64_t rows = batch * heads * t;
  std::vector<int32_t> bucket(t);
  relative_bucket_by_distance(bucket.data(), t, buckets, 32);
  auto scores = representable(rows * t, gen, 2.0), bias = representable(buckets * heads, gen);
  auto dprobs = representable(rows * t, gen);
  // float32: the biased softmax of the same (representable) scores and bias, in float32 throughout;
  // bf16 rounds each probability once. The backward runs from the rounded probabilities the bf16 path keeps.
  std::vector<float> pf = scores;
  causal_softmax_forward<float>(ctx, pf.data(), rows, t, {bias.data(), bucket.data(), heads});
  auto sb = to_bf16(scores), biasb = to_bf16(bias);
  causal_softmax_forward<bf16>(ctx, sb.data(), rows, t, {biasb.data(), bucket.data(), heads});
  expect_rounded(sb, pf);
  std::vector<float> p_rounded(sb.begin(), sb.end()), df = dprobs;
  auto db = to_bf16(dprobs);
  causal_softmax_backward<float>(ctx, p_rounded.data(), df.data(), rows, t);
  causal_softmax_backward<bf16>(ctx, sb.data(), db.data(), rows, t);
  expect_rounded(db, df);
  // the bias gradient is summed in float32
  std::vector<float> dbias_f(buckets * heads, 0.f), dbias_b(buckets * heads, 0.f);
  std::vector<float> d_rounded(db.begin(), db.end());
  attention_bias_backward<float>(ctx, d_rounded.data(), bucket.data(), dbias_f.data(), batch, heads, t);
  attention_bias_backward<bf16>(ctx, db.data(), bucket.data(), dbias_b.data(), batch, heads, t);
  for (size_t i = 0; i < dbias_f.size(); ++i) ASSERT_FLOAT_EQ(dbias_b[i], dbias_f[i]);
}

TEST(Bf16Kernels, EmbeddingGradientSumsRepeatedTokensInFloat32) {
  // 4,096 copies of one token: summed in bf16 the gradient would stall once it is 2^8 times a row.
  const int64_t tokens = 4096, dim = 4;
  std::vector<int32_t> ids(tokens, 1);
  std::vector<bf16> dout(tokens * dim, bf16(0.01f));
  std::vector<float> dtable(3 * dim, 0.f);
  embedding_backward<bf16>(ctx, ids.data(), dout.data(), dtable.data(), tokens, dim);
  const double want = tokens * static_cast<double>(float(bf16(0.01f)));
  for (int64_t i = 0; i < dim; ++i) {
    EXPECT_NEAR(dtable[dim + i], want, 1e-4 * want);
    EXPECT_EQ(dtable[i], 0.f);
  }
  std::vector<bf16> table(3 * dim), out(2 * dim);
  for (int64_t i = 0; i < 3 * dim; ++i) table[i] = bf16(static_cast<float>(i));
  const int32_t lookup[2] = {2, 0};
  embedding_forward<bf16>(ctx, lookup, table.data(), out.data(), 2, dim);
  for (int64_t i = 0; i < dim; ++i) {
    EXPECT_EQ(float(out[i]), static_cast<float>(2 * dim + i));
    EXPECT_EQ(float(out[dim + i]), static_cast<float>(i));
  }
}

TEST(Bf16Kernels, DispatchAndCombine) {
  std::mt19937_64 gen(15);
  const int64_t tokens = 6, top_k = 2, dim = 16, slots = 8;
  const std::vector<int32_t> slot_token = {0, 3, -1, 5, 1, -1, 2, 0};
  // per (token, choice): a slot, -1 dropped, -2 skipped by random routing
  const std::vector<int32_t> loc = {0, 7, 4, -1, 6, -2, 1, -1, -1, -1, 3, -1};
  auto x = representable(tokens * dim, gen), buf = representable(slots * dim, gen), gate = representable(tokens * top_k, gen);
  auto y0 = representable(tokens * dim, gen), dy = representable(tokens * dim, gen);
  // float32
  std::vector<float> bf(slots * dim), yf = y0, dbf(slots * dim), dgf(tokens * top_k), dxf(tokens * dim, 0.f);
  moe_dispatch_forward<float>(ctx, x.data(), slot_token.data(), bf.data(), slots, dim);
  moe_combine_forward<float>(ctx, buf.data(), loc.data(), gate.data(), yf.data(), tokens, top_k, dim);
  moe_combine_backward<float>(ctx, dy.data(), buf.data(), loc.data(), slot_token.data(), gate.data(), dbf.data(),
                              dgf.data(), tokens, top_k, slots, dim);
  moe_dispatch_backward<float>(ctx, buf.data(), loc.data(), dxf.data(), tokens, top_k, dim);
  // bf16
  // the gates and their gradient stay in float32 (the router's type)
  auto xb = to_bf16(x), bufb = to_bf16(buf), yb = to_bf16(y0), dyb = to_bf16(dy);
  std::vector<bf16> bb(slots * dim), dbb(slots * dim), dxb(tokens * dim, bf16(0.f));
  std::vector<float> dgb(tokens * top_k);
  moe_dispatch_forward<bf16>(ctx, xb.data(), slot_token.data(), bb.data(), slots, dim);
  moe_combine_forward<bf16>(ctx, bufb.data(), loc.data(), gate.data(), yb.data(), tokens, top_k, dim);
  moe_combine_backward<bf16>(ctx, dyb.data(), bufb.data(), loc.data(), slot_token.data(), gate.data(), dbb.data(),
                             dgb.data(), tokens, top_k, slots, dim);
  moe_dispatch_backward<bf16>(ctx, bufb.data(), loc.data(), dxb.data(), tokens, top_k, dim);
  expect_rounded(bb, bf, 0);  // a copy: exact
  expect_rounded(yb, yf);
  expect_rounded(dbb, dbf);
  for (size_t i = 0; i < dgf.size(); ++i) ASSERT_NEAR(dgb[i], dgf[i], 1e-6 * (1 + std::abs(dgf[i])));
  expect_rounded(dxb, dxf);
}

TEST(Bf16Kernels, CrossEntropyGradientInBf16FromFloat32Logits) {
  std::mt19937_64 gen(16);
  const int64_t tokens = 5, vocab = 700;
  std::normal_distribution<double> nd(0, 2);
  std::vector<float> logits(tokens * vocab);
  for (auto& x : logits) x = static_cast<float>(nd(gen));
  const std::vector<int32_t> targets = {3, 699, 0, 350, 3};
  std::vector<float> ce_f(tokens), lse_f(tokens), d_f = logits, ce_b(tokens), lse_b(tokens);
  std::vector<bf16> d_b(tokens * vocab);
  softmax_xent_forward_backward<float>(ctx, logits.data(), targets.data(), tokens, vocab, 1e-3, 0.1, ce_f.data(),
                                       lse_f.data(), d_f.data());  // in place, as the float32 model
  softmax_xent_forward_backward<float>(ctx, logits.data(), targets.data(), tokens, vocab, 1e-3, 0.1, ce_b.data(),
                                       lse_b.data(), d_b.data());
  EXPECT_EQ(ce_b, ce_f);  // the losses do not depend on the gradient's type
  EXPECT_EQ(lse_b, lse_f);
  expect_rounded(d_b, d_f, 1e-9);
}

TEST(Bf16Kernels, ConvertRoundsAndWidens) {
  const std::vector<float> f = {1.0f, from_bits(0x3f818000u), -3.25f, 1e-3f};
  std::vector<bf16> b(f.size());
  std::vector<float> back(f.size());
  convert<float, bf16>(ctx, f.data(), b.data(), static_cast<int64_t>(f.size()));
  convert<bf16, float>(ctx, b.data(), back.data(), static_cast<int64_t>(f.size()));
  for (size_t i = 0; i < f.size(); ++i) {
    EXPECT_EQ(b[i].bits, bits_of(f[i]));
    EXPECT_EQ(back[i], float(bf16(f[i])));
  }
}

}  // namespace
}  // namespace glam::kernels
