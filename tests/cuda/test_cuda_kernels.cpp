// Every CUDA kernel against the CPU reference (float64 where it matters) on fresh random inputs, with
// the outputs poisoned (NaN, or an impossible integer) before each run so that unwritten elements
// are caught. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <numeric>

#include "activation.h"
#include "adafactor.h"
#include "attention.h"
#include "cuda_test_support.h"
#include "elementwise.h"
#include "embedding.h"
#include "gemm.h"
#include "loss.h"
#include "moe.h"
#include "norm.h"
#include "router.h"

namespace glam::testing {
namespace {

namespace k = glam::kernels;

class CudaKernels : public GpuKernelTest {};

// ---- products ----

// Tight and padded leading dimensions (the model's attention products use padded ones); the
// padding columns of C must come back untouched.
void check_gemm(CudaKernels& t, const k::KernelContext& gpu, Random& rnd, k::GemmPrecision prec, double rtol) {
  const int64_t m = 67, n = 45, kk = 300;
  for (int64_t pad : {0, 3})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int64_t lda = (ta ? m : kk) + pad, ldb = (tb ? kk : n) + pad, ldc = n + pad;
        auto a = rnd.normal(static_cast<size_t>((ta ? kk : m) * lda)), b = rnd.normal(static_cast<size_t>((tb ? n : kk) * ldb));
        auto c0 = rnd.normal(static_cast<size_t>(m * ldc));
        std::vector<double> ref = to_double(c0);
        auto ad = to_double(a), bd = to_double(b);
        k::gemm<double>(k::KernelContext{}, ta, tb, m, n, kk, 0.5, ad.data(), lda, bd.data(), ldb, 0.25, ref.data(), ldc);
        DeviceVec<float> da(a), db(b), dc(c0);
        k::KernelContext ctx = gpu;
        ctx.gemm_precision = prec;
        k::gemm<float>(ctx, ta, tb, m, n, kk, 0.5f, da.get(), lda, db.get(), ldb, 0.25f, dc.get(), ldc);
        expect_close(dc.download(), ref, rtol,
                     "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " pad=" + std::to_string(pad));
      }
  (void)t;
}

TEST_F(CudaKernels, GemmFp32MatchesFloat64) { check_gemm(*this, gpu(), rnd_, k::GemmPrecision::kFp32, 2e-6); }
TEST_F(CudaKernels, GemmTf32WithinItsPrecision) { check_gemm(*this, gpu(), rnd_, k::GemmPrecision::kTf32, 5e-3); }
TEST_F(CudaKernels, GemmBf16InputsFp32AccumulationWithinItsPrecision) {
  check_gemm(*this, gpu(), rnd_, k::GemmPrecision::kBf16, 3e-2);
}

TEST_F(CudaKernels, GemmStridedBatchedAndDouble) {
  const int64_t m = 33, n = 29, kk = 70, batch = 5;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      auto a = rnd_.normal(static_cast<size_t>(m * kk * batch)), b = rnd_.normal(static_cast<size_t>(kk * n * batch));
      const int64_t lda = ta ? m : kk, ldb = tb ? kk : n;
      auto ad = to_double(a), bd = to_double(b);
      std::vector<double> ref(static_cast<size_t>(m * n * batch));
      k::gemm_strided_batched<double>(cpu_, ta, tb, m, n, kk, 1.0, ad.data(), lda, m * kk, bd.data(), ldb, kk * n, 0.0,
                                      ref.data(), n, m * n, batch);
      DeviceVec<float> da(a), db(b), dc(ref.size());
      dc.poison();
      k::gemm_strided_batched<float>(gpu(), ta, tb, m, n, kk, 1.0f, da.get(), lda, m * kk, db.get(), ldb, kk * n, 0.0f,
                                     dc.get(), n, m * n, batch);
      expect_close(dc.download(), ref, 2e-6, "strided batched");
      // float64 on the GPU
      DeviceVec<double> ga(ad), gb(bd), gc(ref.size());
      gc.poison();
      k::gemm_strided_batched<double>(gpu(), ta, tb, m, n, kk, 1.0, ga.get(), lda, m * kk, gb.get(), ldb, kk * n, 0.0,
                                      gc.get(), n, m * n, batch);
      auto got = gc.download();
      for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(got[i], ref[i], 1e-12 * (1 + std::abs(ref[i])));
    }
}

// ---- elementwise ----

TEST_F(CudaKernels, Elementwise) {
  const int64_t n = 100003;
  auto x = rnd_.normal(n), y = rnd_.normal(n);
  DeviceVec<float> dx(x), dy(y), out(static_cast<size_t>(n));
  out.poison();
  k::add<float>(gpu(), dx.get(), dy.get(), out.get(), n);
  std::vector<double> want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) want[i] = static_cast<double>(x[i]) + y[i];
  expect_close(out.download(), want, 1e-7, "add");
  k::axpy<float>(gpu(), 0.5f, dx.get(), dy.get(), n);
  for (int64_t i = 0; i < n; ++i) want[i] = y[i] + 0.5 * x[i];
  expect_close(dy.download(), want, 1e-7, "axpy");
  out.poison();
  k::copy<float>(gpu(), dx.get(), out.get(), n);
  EXPECT_EQ(out.download(), x);
  k::fill<float>(gpu(), out.get(), 2.5f, n);
  EXPECT_EQ(out.download(), std::vector<float>(static_cast<size_t>(n), 2.5f));
  DeviceVec<double> dd(static_cast<size_t>(n));
  dd.poison();
  k::convert<float, double>(gpu(), dx.get(), dd.get(), n);
  EXPECT_EQ(dd.download(), to_double(x));
  DeviceVec<int32_t> di(static_cast<size_t>(n));
  k::fill<int32_t>(gpu(), di.get(), 7, n);
  EXPECT_EQ(di.download(), std::vector<int32_t>(static_cast<size_t>(n), 7));
}

// ---- RMSNorm ----

// Widths that are multiples of 4 take the kernels' 16-byte packs, 1001 their scalar loops.
TEST_F(CudaKernels, RmsNormForwardBackward) {
  // 1,100 rows: 18 chunks of the scale gradient's partial sums, more than its 8 rows of threads take
  // in one turn.
  for (const auto& [rows, dim] : std::vector<std::pair<int64_t, int64_t>>{{301, 64}, {301, 768}, {301, 1000},
                                                                          {301, 1001}, {1100, 72}}) {
    auto x = rnd_.normal(static_cast<size_t>(rows * dim), 2.0), scale = rnd_.normal(static_cast<size_t>(dim), 0.3, 1.0);
    auto dy = rnd_.normal(static_cast<size_t>(rows * dim)), dx0 = rnd_.normal(static_cast<size_t>(rows * dim));
    auto ds0 = rnd_.normal(static_cast<size_t>(dim));
    auto xd = to_double(x), sd = to_double(scale), dyd = to_double(dy);
    std::vector<double> y(x.size()), inv(static_cast<size_t>(rows)), dx = to_double(dx0), ds = to_double(ds0);
    k::rmsnorm_forward<double>(cpu_, xd.data(), sd.data(), y.data(), inv.data(), rows, dim);
    k::rmsnorm_backward<double>(cpu_, dyd.data(), xd.data(), sd.data(), inv.data(), dx.data(), ds.data(), rows, dim);
    DeviceVec<float> gx(x), gs(scale), gy(x.size()), ginv(static_cast<size_t>(rows)), gdy(dy), gdx(dx0), gds(ds0);
    gy.poison();
    ginv.poison();
    k::rmsnorm_forward<float>(gpu(), gx.get(), gs.get(), gy.get(), ginv.get(), rows, dim);
    k::rmsnorm_backward<float>(gpu(), gdy.get(), gx.get(), gs.get(), ginv.get(), gdx.get(), gds.get(), rows, dim);
    expect_close(gy.download(), y, 1e-6, "rmsnorm y");
    expect_close(ginv.download(), inv, 1e-6, "rmsnorm inv_rms");
    expect_close(gdx.download(), dx, 1e-5, "rmsnorm dx (accumulated)");
    expect_close(gds.download(), ds, 1e-5, "rmsnorm dscale (accumulated)");
  }
}

// ---- activations ----

// 50,000 elements take the kernels' 16-byte packs, 50,001 their scalar loop.
TEST_F(CudaKernels, ActivationsPlainAndGated) {
  for (const int64_t n : {50001, 50000}) {
    for (auto act : {k::Activation::kGelu, k::Activation::kRelu, k::Activation::kSilu})
      for (bool gated : {false, true}) {
        auto h0 = rnd_.normal(n, 3.0), h1 = rnd_.normal(n), dy = rnd_.normal(n);
        auto h0d = to_double(h0), h1d = to_double(h1), dyd = to_double(dy);
        std::vector<double> y(static_cast<size_t>(n)), dh0(y.size()), dh1(y.size());
        k::activation_forward<double>(cpu_, act, h0d.data(), gated ? h1d.data() : nullptr, y.data(), n);
        k::activation_backward<double>(cpu_, act, dyd.data(), h0d.data(), gated ? h1d.data() : nullptr, dh0.data(),
                                       gated ? dh1.data() : nullptr, n);
        DeviceVec<float> g0(h0), g1(h1), gdy(dy), gy(static_cast<size_t>(n)), gd0(static_cast<size_t>(n)),
            gd1(static_cast<size_t>(n));
        gy.poison();
        gd0.poison();
        gd1.poison();
        k::activation_forward<float>(gpu(), act, g0.get(), gated ? g1.get() : nullptr, gy.get(), n);
        k::activation_backward<float>(gpu(), act, gdy.get(), g0.get(), gated ? g1.get() : nullptr, gd0.get(),
                                      gated ? gd1.get() : nullptr, n);
        const std::string what = "activation " + std::to_string(static_cast<int>(act)) + (gated ? " gated" : " plain") +
                                 ", " + std::to_string(n) + " elements";
        expect_close(gy.download(), y, 1e-6, what + " y", 1e-6);
        expect_close(gd0.download(), dh0, 1e-6, what + " dh0", 1e-6);
        if (gated) expect_close(gd1.download(), dh1, 1e-6, what + " dh1", 1e-6);
      }
  }
}

// ---- embedding ----

TEST_F(CudaKernels, EmbeddingForwardBackward) {
  const int64_t vocab = 97, dim = 130, tokens = 1000;  // many repeated ids
  auto table = rnd_.normal(static_cast<size_t>(vocab * dim)), dout = rnd_.normal(static_cast<size_t>(tokens * dim));
  auto dt0 = rnd_.normal(table.size());
  auto ids = rnd_.ints(static_cast<size_t>(tokens), static_cast<int32_t>(vocab));
  auto td = to_double(table), dod = to_double(dout);
  std::vector<double> out(static_cast<size_t>(tokens * dim)), dt = to_double(dt0);
  k::embedding_forward<double>(cpu_, ids.data(), td.data(), out.data(), tokens, dim);
  k::embedding_backward<double>(cpu_, ids.data(), dod.data(), dt.data(), tokens, dim);
  DeviceVec<int32_t> gids(ids);
  DeviceVec<float> gt(table), gout(out.size()), gdo(dout), gdt(dt0);
  gout.poison();
  k::embedding_forward<float>(gpu(), gids.get(), gt.get(), gout.get(), tokens, dim);
  k::embedding_backward<float>(gpu(), gids.get(), gdo.get(), gdt.get(), tokens, dim);
  expect_close(gout.download(), out, 0, "embedding out");
  expect_close(gdt.download(), dt, 1e-5, "embedding dtable");
  // A vocabulary slice (tensor parallelism): rows 40..79 of the table; other ids give zeros and no gradient.
  const k::EmbeddingRows held{40, 40};
  std::vector<double> sout(out.size()), sdt = to_double(dt0);
  k::embedding_forward<double>(cpu_, ids.data(), td.data() + held.first * dim, sout.data(), tokens, dim, held);
  k::embedding_backward<double>(cpu_, ids.data(), dod.data(), sdt.data(), tokens, dim, held);
  DeviceVec<float> gsd(dt0);
  gout.poison();
  k::embedding_forward<float>(gpu(), gids.get(), gt.get() + held.first * dim, gout.get(), tokens, dim, held);
  k::embedding_backward<float>(gpu(), gids.get(), gdo.get(), gsd.get(), tokens, dim, held);
  expect_close(gout.download(), sout, 0, "embedding slice out");
  expect_close(gsd.download(), sdt, 1e-5, "embedding slice dtable");
}

// ---- attention ----

// Two shapes: the second has rows that are no multiple of the kernels' row blocks and more than 256
// buckets (the bias gradient's global-atomic branch).
void check_attention(const k::KernelContext& cpu_, const k::KernelContext& gpu_ctx, Random& rnd_, int64_t batch,
                     int64_t heads, int64_t t, int64_t buckets, int64_t max_distance) {
  auto gpu = [&]() -> const k::KernelContext& { return gpu_ctx; };
  std::vector<int32_t> bucket(static_cast<size_t>(t));
  k::relative_bucket_by_distance(bucket.data(), t, buckets, max_distance);
  const int64_t rows = batch * heads * t;
  const size_t n = static_cast<size_t>(rows * t);
  auto scores = rnd_.normal(n, 3.0), bias = rnd_.normal(static_cast<size_t>(buckets * heads)), dprobs = rnd_.normal(n);
  auto db0 = rnd_.normal(bias.size());
  auto sd = to_double(scores), bd = to_double(bias), dpd = to_double(dprobs);
  std::vector<double> dbias = to_double(db0), plain = sd;
  k::causal_softmax_forward<double>(cpu_, sd.data(), rows, t, {bd.data(), bucket.data(), heads});
  k::causal_softmax_forward<double>(cpu_, plain.data(), rows, t);
  k::causal_softmax_backward<double>(cpu_, sd.data(), dpd.data(), rows, t);
  k::attention_bias_backward<double>(cpu_, dpd.data(), bucket.data(), dbias.data(), batch, heads, t);

  // the masked half is poisoned: the softmax must write zeros there
  auto poisoned = scores;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = r % t + 1; j < t; ++j) poisoned[static_cast<size_t>(r * t + j)] = std::nanf("");
  DeviceVec<int32_t> gb(bucket);
  DeviceVec<float> gs(poisoned), gplain(poisoned), gbias(bias), gdp(dprobs), gdb(db0);
  k::causal_softmax_forward<float>(gpu(), gs.get(), rows, t, {gbias.get(), gb.get(), heads});
  expect_close(gs.download(), sd, 1e-6, "causal softmax with the relative bias");
  k::causal_softmax_forward<float>(gpu(), gplain.get(), rows, t);
  expect_close(gplain.download(), plain, 1e-6, "causal softmax without bias");
  k::causal_softmax_backward<float>(gpu(), gs.get(), gdp.get(), rows, t);
  expect_close(gdp.download(), dpd, 1e-5, "causal softmax backward");
  k::attention_bias_backward<float>(gpu(), gdp.get(), gb.get(), gdb.get(), batch, heads, t);
  expect_close(gdb.download(), dbias, 1e-5, "bias gradient (accumulated)");
  const auto [want, magnitude] = bias_gradient_sums(gdp.download(), bucket, db0, heads, t);
  expect_sum_close(gdb.download(), want, magnitude, "bias gradient (accumulated), of the GPU's own terms");
  // The bias gradient summed by the softmax backward itself, as the executor calls it; the incoming
  // gradient's masked half is poisoned: it must be neither read nor left unwritten.
  auto dprobs_poisoned = dprobs;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = r % t + 1; j < t; ++j) dprobs_poisoned[static_cast<size_t>(r * t + j)] = std::nanf("");
  DeviceVec<float> gdp_fused(dprobs_poisoned), gdb_fused(db0);
  k::causal_softmax_backward<float>(gpu(), gs.get(), gdp_fused.get(), rows, t, {gdb_fused.get(), gb.get(), heads});
  const auto written = gdp_fused.download();
  expect_close(written, dpd, 1e-5, "causal softmax backward summing the bias gradient");
  const auto [want_fused, magnitude_fused] = bias_gradient_sums(written, bucket, db0, heads, t);
  expect_sum_close(gdb_fused.download(), want_fused, magnitude_fused, "bias gradient summed by the softmax backward");
}

// The shapes: rows held in registers (200), rows that are no multiple of the kernels' row blocks and
// more than 256 buckets (the bias gradient's global-atomic branch), both at once (400: held rows whose
// buckets past 256 go to global memory), and held rows whose blocks span two heads (204: the bias
// gradient summed by its own kernel after them).
TEST_F(CudaKernels, AttentionBiasAndCausalSoftmax) {
  check_attention(cpu_, gpu(), rnd_, 3, 4, 200, 32, 128);
  check_attention(cpu_, gpu(), rnd_, 3, 5, 203, 300, 200);
  check_attention(cpu_, gpu(), rnd_, 2, 3, 400, 300, 300);
  check_attention(cpu_, gpu(), rnd_, 2, 3, 204, 32, 128);
}

// The softmax kernels hold a row of up to 1,024 float32 scores in registers (8 packs of 4 per lane at
// GLaM's 1,024): that length, and one pack longer, which takes the three-pass kernels.
TEST_F(CudaKernels, CausalSoftmaxAtAndPastTheHeldRowLength) {
  check_attention(cpu_, gpu(), rnd_, 1, 2, 1024, 32, 128);
  check_attention(cpu_, gpu(), rnd_, 1, 1, 1028, 32, 128);
}

// ---- loss ----

// A vocabulary that is a multiple of 4 takes the kernel's 16-byte loads, another the scalar loop.
TEST_F(CudaKernels, CrossEntropyWithZLoss) {
  for (const auto& [in_place, vocab] : std::vector<std::pair<bool, int64_t>>{{false, 5003}, {true, 5003}, {false, 5004},
                                                                              {true, 5004}}) {
    const int64_t tokens = 37;
    auto logits = rnd_.normal(static_cast<size_t>(tokens * vocab), 4.0);
    auto targets = rnd_.ints(static_cast<size_t>(tokens), static_cast<int32_t>(vocab));
    // masked logits (-inf), the first of some rows among them: they add nothing and get no gradient
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t v = t % 3 == 0 ? 0 : 1 + t; v < vocab; v += 97)
        if (v != targets[static_cast<size_t>(t)]) logits[static_cast<size_t>(t * vocab + v)] = -INFINITY;
    auto ld = to_double(logits);
    std::vector<double> ce(static_cast<size_t>(tokens)), lse(ce.size()), dl(ld.size());
    k::softmax_xent_forward_backward<double>(cpu_, ld.data(), targets.data(), tokens, vocab, 1e-4, 1.0 / 256, ce.data(),
                                             lse.data(), dl.data());
    DeviceVec<int32_t> gt(targets);
    DeviceVec<float> gl(logits), gce(ce.size()), glse(ce.size()), gdl(dl.size());
    gce.poison();
    glse.poison();
    gdl.poison();
    k::softmax_xent_forward_backward<float>(gpu(), gl.get(), gt.get(), tokens, vocab, 1e-4, 1.0 / 256, gce.get(),
                                            glse.get(), in_place ? gl.get() : gdl.get());
    expect_close(gce.download(), ce, 1e-5, "ce");
    expect_close(glse.download(), lse, 1e-6, "lse");
    expect_close((in_place ? gl : gdl).download(), dl, 1e-5,
                 std::string(in_place ? "dlogits in place" : "dlogits") + ", vocabulary " + std::to_string(vocab));
  }
}

// ---- router ----

// Logits where the order of the probabilities is never in doubt (neighbours differ by a factor
// e^0.05), except in tokens whose logits are exactly equal (the lowest index must win on both).
std::vector<float> router_logits(Random& rnd, int64_t tokens, int64_t experts) {
  std::vector<float> v(static_cast<size_t>(tokens * experts));
  std::vector<int> perm(static_cast<size_t>(experts));
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rnd.gen());
    const bool tie = t % 7 == 3;
    for (int64_t e = 0; e < experts; ++e)
      v[static_cast<size_t>(t * experts + e)] = tie ? 0.5f : 0.05f * static_cast<float>(perm[static_cast<size_t>(e)]);
  }
  return v;
}

void check_router(CudaKernels& f, const k::KernelContext& cpu, const k::KernelContext& gpu, Random& rnd, int64_t top_k,
                  bool random_routing, int64_t experts, int64_t capacity, int64_t tokens = 1536,
                  int64_t group_tokens = 512) {
  k::RouterShape s;
  s.tokens = tokens;
  s.experts = experts;
  s.top_k = top_k;
  s.group_tokens = group_tokens;
  s.capacity = capacity;
  k::SecondExpertPolicy pol;
  pol.random = random_routing;
  // These logits give nearly equal top-2 probabilities (normalised second gates of 0.45-0.5): with the
  // default threshold of 0.2 every second copy would be kept, and random routing would go untested.
  pol.threshold = 0.8;
  pol.seed = rnd.gen()();
  pol.first_token = 4096;
  const size_t nk = static_cast<size_t>(s.tokens * top_k), ne = static_cast<size_t>(s.tokens * experts);
  auto logits = router_logits(rnd, s.tokens, experts);
  // CPU float: the integer outputs must agree exactly
  std::vector<float> probs(ne), gate(nk), aux(static_cast<size_t>(s.groups())), dgate = rnd.normal(nk), dl(ne);
  std::vector<int32_t> expert(nk), loc(nk), slot_token(static_cast<size_t>(s.slots()));
  k::router_forward<float>(cpu, logits.data(), s, pol, probs.data(), expert.data(), gate.data(), loc.data(),
                           slot_token.data());
  k::router_aux_loss<float>(cpu, probs.data(), expert.data(), s, aux.data());
  // float64 reference of the real-valued outputs
  auto ld = to_double(logits), dgd = to_double(dgate);
  std::vector<double> pd(ne), gd(nk), auxd(aux.size()), dld(ne);
  std::vector<int32_t> ed(nk), locd(nk), std_(slot_token.size());
  k::router_forward<double>(cpu, ld.data(), s, pol, pd.data(), ed.data(), gd.data(), locd.data(), std_.data());
  k::router_aux_loss<double>(cpu, pd.data(), ed.data(), s, auxd.data());
  k::router_backward<double>(cpu, pd.data(), ed.data(), locd.data(), dgd.data(), 0.01, s, dld.data());

  DeviceVec<float> gl(logits), gprobs(ne), ggate(nk), gaux(aux.size()), gdg(dgate), gdl(ne);
  DeviceVec<int32_t> gexp(nk), gloc(nk), gslot(slot_token.size());
  gprobs.poison(), ggate.poison(), gaux.poison(), gdl.poison();
  gexp.poison_int(12345), gloc.poison_int(12345), gslot.poison_int(12345);
  k::router_forward<float>(gpu, gl.get(), s, pol, gprobs.get(), gexp.get(), ggate.get(), gloc.get(), gslot.get());
  k::router_aux_loss<float>(gpu, gprobs.get(), gexp.get(), s, gaux.get());
  k::router_backward<float>(gpu, gprobs.get(), gexp.get(), gloc.get(), gdg.get(), 0.01, s, gdl.get());
  const std::string what = "router k=" + std::to_string(top_k) + (random_routing ? " random" : "");
  EXPECT_EQ(gexp.download(), expert) << what << ": expert choices";
  EXPECT_EQ(gloc.download(), loc) << what << ": slots, drops and skips";
  EXPECT_EQ(gslot.download(), slot_token) << what << ": slot tokens";
  EXPECT_EQ(ed, expert) << what << ": float64 and float32 routes agree (test input)";
  expect_close(gprobs.download(), pd, 1e-6, what + " probs");
  expect_close(ggate.download(), gd, 1e-6, what + " gates");
  expect_close(gaux.download(), auxd, 1e-6, what + " aux");
  expect_close(gdl.download(), dld, 1e-5, what + " dlogits");
  int64_t dropped = 0, skipped = 0;
  std::vector<int32_t> kept(static_cast<size_t>(experts)), dropped_per_expert(static_cast<size_t>(experts));
  for (size_t c = 0; c < loc.size(); ++c) {
    const int32_t l = loc[c];
    dropped += l == -1, skipped += l == -2;
    if (l >= 0) kept[static_cast<size_t>(l / (s.groups() * capacity))]++;
    if (l == -1) dropped_per_expert[static_cast<size_t>(expert[c])]++;
  }
  // The routing statistics counted where the copies are, on both backends.
  std::vector<int32_t> counts(static_cast<size_t>(k::router_count_bins(experts)), 777);
  k::router_counts(cpu, expert.data(), loc.data(), s, counts.data());
  DeviceVec<int32_t> gcounts(counts.size());
  gcounts.poison_int(12345);
  k::router_counts(gpu, gexp.get(), gloc.get(), s, gcounts.get());
  EXPECT_EQ(std::vector<int32_t>(counts.begin(), counts.begin() + experts), kept) << what << ": copies kept per expert";
  EXPECT_EQ(std::vector<int32_t>(counts.begin() + experts, counts.begin() + 2 * experts), dropped_per_expert)
      << what << ": copies dropped per expert";
  EXPECT_EQ(std::accumulate(dropped_per_expert.begin(), dropped_per_expert.end(), int64_t{0}), dropped) << what;
  EXPECT_EQ(counts[static_cast<size_t>(2 * experts)], skipped) << what << ": copies skipped";
  EXPECT_EQ(gcounts.download(), counts) << what << ": routing counts on the device";
  if (capacity < s.group_tokens * top_k / experts) {
    EXPECT_GT(dropped, 0) << what;
  }
  if (random_routing) {
    EXPECT_GT(skipped, 0) << what;
  }
  (void)f;
}

TEST_F(CudaKernels, RouterTop2WithDropsMatchesCpuExactly) { check_router(*this, cpu_, gpu(), rnd_, 2, false, 64, 12); }
TEST_F(CudaKernels, RouterTop2RandomRouting) { check_router(*this, cpu_, gpu(), rnd_, 2, true, 8, 100); }
TEST_F(CudaKernels, RouterTop1) { check_router(*this, cpu_, gpu(), rnd_, 1, false, 16, 20); }
TEST_F(CudaKernels, RouterManyExperts) { check_router(*this, cpu_, gpu(), rnd_, 2, false, 300, 4); }
// Groups larger than the kernel's staging chunk (1,024 tokens): slot counts carry across chunks.
TEST_F(CudaKernels, RouterGroupsLargerThanTheStagingChunk) {
  check_router(*this, cpu_, gpu(), rnd_, 2, false, 16, 60, 3000, 1500);
}

// ---- MoE dispatch and combine ----

TEST_F(CudaKernels, DispatchCombineAndReorder) {
  k::RouterShape s;
  s.tokens = 1024, s.experts = 16, s.top_k = 2, s.group_tokens = 256, s.capacity = 24;
  const int64_t dim = 96, nk = s.tokens * 2, slots = s.slots();
  auto logits = router_logits(rnd_, s.tokens, s.experts);
  std::vector<float> probs(static_cast<size_t>(s.tokens * s.experts)), gate(static_cast<size_t>(nk));
  std::vector<int32_t> expert(static_cast<size_t>(nk)), loc(static_cast<size_t>(nk)), st(static_cast<size_t>(slots));
  k::router_forward<float>(cpu_, logits.data(), s, {}, probs.data(), expert.data(), gate.data(), loc.data(), st.data());
  auto x = rnd_.normal(static_cast<size_t>(s.tokens * dim)), buf = rnd_.normal(static_cast<size_t>(slots * dim));
  auto dy = rnd_.normal(x.size()), y0 = rnd_.normal(x.size()), dx0 = rnd_.normal(x.size());
  auto xd = to_double(x), bd = to_double(buf), dyd = to_double(dy), gd = to_double(gate);
  std::vector<double> disp(buf.size()), y = to_double(y0), dx = to_double(dx0), dbuf(buf.size()), dgate(gate.size());
  k::moe_dispatch_forward<double>(cpu_, xd.data(), st.data(), disp.data(), slots, dim);
  k::moe_combine_forward<double>(cpu_, bd.data(), loc.data(), gd.data(), y.data(), s.tokens, 2, dim);
  k::moe_combine_backward<double>(cpu_, dyd.data(), bd.data(), loc.data(), st.data(), gd.data(), dbuf.data(),
                                  dgate.data(), s.tokens, 2, slots, dim);
  k::moe_dispatch_backward<double>(cpu_, bd.data(), loc.data(), dx.data(), s.tokens, 2, dim);
  DeviceVec<int32_t> gloc(loc), gst(st);
  DeviceVec<float> gx(x), gbuf(buf), gdisp(buf.size()), gy(y0), gdy(dy), ggate(gate), gdbuf(buf.size()),
      gdgate(gate.size()), gdx(dx0);
  gdisp.poison(), gdbuf.poison(), gdgate.poison();
  k::moe_dispatch_forward<float>(gpu(), gx.get(), gst.get(), gdisp.get(), slots, dim);
  k::moe_combine_forward<float>(gpu(), gbuf.get(), gloc.get(), ggate.get(), gy.get(), s.tokens, 2, dim);
  k::moe_combine_backward<float>(gpu(), gdy.get(), gbuf.get(), gloc.get(), gst.get(), ggate.get(), gdbuf.get(),
                                 gdgate.get(), s.tokens, 2, slots, dim);
  k::moe_dispatch_backward<float>(gpu(), gbuf.get(), gloc.get(), gdx.get(), s.tokens, 2, dim);
  expect_close(gdisp.download(), disp, 0, "dispatch");
  expect_close(gy.download(), y, 1e-6, "combine (accumulated)");
  expect_close(gdbuf.download(), dbuf, 1e-6, "combine backward dbuf");
  expect_close(gdgate.download(), dgate, 1e-5, "combine backward dgate");
  expect_close(gdx.download(), dx, 1e-6, "dispatch backward (accumulated)");
  // block reorder [outer, inner, block] -> [inner, outer, block]
  const int64_t outer = 4, inner = 3, block = 1000;
  auto in = rnd_.normal(static_cast<size_t>(outer * inner * block));
  auto ind = to_double(in);
  std::vector<double> out(in.size());
  k::swap_leading_axes<double>(cpu_, ind.data(), out.data(), outer, inner, block);
  DeviceVec<float> gin(in), gout(in.size());
  gout.poison();
  k::swap_leading_axes<float>(gpu(), gin.get(), gout.get(), outer, inner, block);
  expect_close(gout.download(), out, 0, "swap_leading_axes");
}

// ---- Adafactor ----

TEST_F(CudaKernels, AdafactorFactoredAndFull) {
  k::AdafactorHyper h;
  // {700, 40}: 11 chunks of column sums, more than the 8 rows of threads that add them take in one turn.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{300, 77}, {1, 500}, {1000, 1}, {129, 1024}, {700, 40}};
  for (const auto& [rows, cols] : shapes) {
    const bool factored = rows > 1 && cols > 1;
    const size_t n = static_cast<size_t>(rows * cols);
    auto w = rnd_.normal(n, 0.05);
    auto wd = to_double(w);
    std::vector<double> rs(static_cast<size_t>(rows)), cs(static_cast<size_t>(cols)), fs(n);
    DeviceVec<float> gw(w), grs(rs.size()), gcs(cs.size()), gfs(n);  // states start at 0
    for (int64_t step = 1; step <= 4; ++step) {
      auto g = rnd_.normal(n, 0.01);
      auto gdd = to_double(g);
      k::adafactor_update<double>(cpu_, wd.data(), gdd.data(), factored ? rs.data() : nullptr,
                                  factored ? cs.data() : nullptr, factored ? nullptr : fs.data(), rows, cols, step, h);
      DeviceVec<float> gg(g);
      k::adafactor_update<float>(gpu(), gw.get(), gg.get(), factored ? grs.get() : nullptr, factored ? gcs.get() : nullptr,
                                 factored ? nullptr : gfs.get(), rows, cols, step, h);
    }
    const std::string what = "adafactor " + std::to_string(rows) + "x" + std::to_string(cols);
    expect_close(gw.download(), wd, 1e-5, what + " weights");
    expect_updates_close(gw.download(), w, wd, 0, n, what + " updates");
    if (factored) {
      expect_close(grs.download(), rs, 1e-5, what + " row state");
      expect_close(gcs.download(), cs, 1e-5, what + " column state");
    } else {
      expect_close(gfs.download(), fs, 1e-5, what + " state");
    }
  }
}

// A run of same-shape tensors in one call (a weight's local experts), against one CPU call per tensor:
// tensors at different scales (a shared sum or step size would show), more rows than a column chunk,
// and states spaced further apart than they need, with a sentinel in the gaps.
TEST_F(CudaKernels, AdafactorRunsOfTensors) {
  k::AdafactorHyper h;
  const float sentinel = 12345.f;
  for (const auto& [rows, cols, count] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{70, 45, 5}, {1, 300, 3}}) {
    const bool factored = rows > 1 && cols > 1;
    const int64_t n = rows * cols, state_size = factored ? rows + cols : n, stride = state_size + 3;
    std::vector<float> w;
    for (int64_t m = 0; m < count; ++m) {
      auto wm = rnd_.normal(static_cast<size_t>(n), 0.05 * std::pow(4.0, static_cast<double>(m)));
      w.insert(w.end(), wm.begin(), wm.end());
    }
    auto wd = to_double(w);
    std::vector<double> state(static_cast<size_t>(count * stride), 0.0);
    std::vector<float> gstate_init(state.size(), 0.f);
    for (int64_t m = 0; m < count; ++m)
      for (int64_t j = state_size; j < stride; ++j) gstate_init[static_cast<size_t>(m * stride + j)] = sentinel;
    DeviceVec<float> gw(w), gstate(gstate_init);
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<float> g;
      for (int64_t m = 0; m < count; ++m) {
        auto gm = rnd_.normal(static_cast<size_t>(n), 0.01 * std::pow(10.0, static_cast<double>(m)));
        g.insert(g.end(), gm.begin(), gm.end());
      }
      auto gdd = to_double(g);
      for (int64_t m = 0; m < count; ++m) {
        double* st = state.data() + m * stride;
        k::adafactor_update<double>(cpu_, wd.data() + m * n, gdd.data() + m * n, factored ? st : nullptr,
                                    factored ? st + rows : nullptr, factored ? nullptr : st, rows, cols, step, h);
      }
      DeviceVec<float> gg(g);
      float* gs = gstate.get();
      k::adafactor_update<float>(gpu(), gw.get(), gg.get(), factored ? gs : nullptr, factored ? gs + rows : nullptr,
                                 factored ? nullptr : gs, rows, cols, step, h, count, stride);
    }
    const std::string what = "adafactor run of " + std::to_string(count) + " x " + std::to_string(rows) + "x" +
                             std::to_string(cols);
    const auto got = gw.download();
    for (int64_t m = 0; m < count; ++m)
      expect_updates_close(got, w, wd, static_cast<size_t>(m * n), static_cast<size_t>((m + 1) * n),
                           what + ", tensor " + std::to_string(m) + " updates");
    // Each tensor's state on its own (their scales differ by 10^8), element by element (all positive).
    auto gst = gstate.download();
    for (int64_t m = 0; m < count; ++m) {
      std::vector<float> got_state;
      std::vector<double> want_state;
      for (int64_t j = 0; j < stride; ++j) {
        const auto i = static_cast<size_t>(m * stride + j);
        if (j >= state_size) {
          EXPECT_EQ(gst[i], sentinel) << what << ": tensor " << m << " wrote past its state";
          continue;
        }
        got_state.push_back(gst[i]);
        want_state.push_back(state[i]);
      }
      expect_close(got_state, want_state, 1e-5, what + ", tensor " + std::to_string(m) + " state", 0, true);
    }
  }
}

// ---- without a device ----

TEST(CudaBackend, ReportsWhetherItWasBuilt) {
  std::cout << "CUDA backend built: " << (k::cuda_built() ? "yes" : "no") << ", devices: " << k::cuda_device_count()
            << "\n";
  if (!k::cuda_built()) {
    EXPECT_EQ(k::cuda_device_count(), 0);
    k::KernelContext ctx;
    EXPECT_THROW(k::init_cuda_context(ctx), std::runtime_error);
    ctx.backend = k::Backend::kCuda;
    float x = 0;
    EXPECT_THROW(k::fill<float>(ctx, &x, 1.0f, 1), std::runtime_error);
  }
}

}  // namespace
}  // namespace glam::testing
