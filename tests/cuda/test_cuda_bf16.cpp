// The bf16 path on the GPU: every bf16 kernel against the CPU's bf16 kernel on the same fresh random
// inputs (both compute in float32 from the same bf16 values, so they may differ by one bf16 unit where
// a sum's order or expf tips a rounding), outputs poisoned first (0xffff is a bf16 NaN); then the bf16
// model's step against the CPU's bf16 step, and ten training steps against the float32 run.
// Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include "activation.h"
#include "attention.h"
#include "comm/communicator.h"
#include "cuda_test_support.h"
#include "elementwise.h"
#include "embedding.h"
#include "gemm.h"
#include "loss.h"
#include "model/transformer.h"
#include "moe.h"
#include "norm.h"
#include "optim/adafactor_optimizer.h"
#include "support/random_batch.h"
#include "ten_steps.h"

namespace glam::testing {
namespace {

namespace k = glam::kernels;
using k::bf16;

std::vector<bf16> to_bf16(const std::vector<float>& v) { return {v.begin(), v.end()}; }
std::vector<float> widen(const std::vector<bf16>& v) { return {v.begin(), v.end()}; }

// GPU against CPU, elementwise: one bf16 unit (2^-7 of the value) plus `floor` x the largest value.
void expect_bf16_close(const std::vector<bf16>& gpu, const std::vector<bf16>& cpu, const std::string& what,
                       double floor = 1.0 / 1024) {
  std::vector<float> want = widen(cpu);
  double scale = 0;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::abs(w)));
  std::vector<double> wd(want.begin(), want.end());
  std::vector<float> got = widen(gpu);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << ": element " << i << " not written";
    ASSERT_NEAR(got[i], want[i], std::abs(want[i]) / 128 + floor * scale) << what << ": element " << i;
  }
}

class CudaBf16 : public GpuKernelTest {
 protected:
  std::vector<bf16> normal(size_t n, double sd = 1.0) { return to_bf16(rnd_.normal(n, sd)); }
};

TEST_F(CudaBf16, ProductsWithBf16AndFloat32Outputs) {
  const int64_t m = 67, n = 45, kk = 300, batch = 3, pad = 3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t lda = (ta ? m : kk) + pad, ldb = (tb ? kk : n) + pad, ldc = n + pad;
      const int64_t sa = (ta ? kk : m) * lda, sb = (tb ? n : kk) * ldb, sc = m * ldc;
      auto a = normal(static_cast<size_t>(batch * sa)), b = normal(static_cast<size_t>(batch * sb));
      auto c0 = rnd_.normal(static_cast<size_t>(batch * sc));
      const std::string what = "ta=" + std::to_string(ta) + " tb=" + std::to_string(tb);
      DeviceVec<bf16> da(a), db(b);
      // float32 output (weight gradients, logits): only the order of the float32 sums differs
      std::vector<float> cf = c0;
      k::gemm_strided_batched<bf16>(cpu_, ta, tb, m, n, kk, 0.5f, a.data(), lda, sa, b.data(), ldb, sb, 0.25f,
                                    cf.data(), ldc, sc, batch);
      DeviceVec<float> dcf(c0);
      k::gemm_strided_batched<bf16>(gpu(), ta, tb, m, n, kk, 0.5f, da.get(), lda, sa, db.get(), ldb, sb, 0.25f,
                                    dcf.get(), ldc, sc, batch);
      expect_close(dcf.download(), to_double(cf), 1e-5, "float32 output " + what);
      // bf16 output; the padding between rows comes back untouched
      auto cb = to_bf16(c0);
      DeviceVec<bf16> dcb(cb);
      k::gemm_strided_batched<bf16>(cpu_, ta, tb, m, n, kk, 0.5f, a.data(), lda, sa, b.data(), ldb, sb, 0.25f,
                                    cb.data(), ldc, sc, batch);
      k::gemm_strided_batched<bf16>(gpu(), ta, tb, m, n, kk, 0.5f, da.get(), lda, sa, db.get(), ldb, sb, 0.25f,
                                    dcb.get(), ldc, sc, batch);
      expect_bf16_close(dcb.download(), cb, "bf16 output " + what, 1e-4);
      // the single-product entry point
      DeviceVec<bf16> d1(to_bf16(c0));
      k::gemm<bf16>(gpu(), ta, tb, m, n, kk, 0.5f, da.get(), lda, db.get(), ldb, 0.25f, d1.get(), ldc);
      auto one = d1.download();
      expect_bf16_close(std::vector<bf16>(one.begin(), one.begin() + sc), std::vector<bf16>(cb.begin(), cb.begin() + sc),
                        "single product " + what, 1e-4);
    }
}

TEST_F(CudaBf16, RmsNormActivationsAndConvert) {
  const int64_t rows = 300, dim = 1000, n = rows * dim;
  auto x = normal(n, 3.0), scale = normal(dim), dy = normal(n), dx0 = normal(n), h1 = normal(n);
  DeviceVec<bf16> dxg(x), dsc(scale), ddy(dy), ddx(dx0), dh1(h1), y(n), act(n), dh0g(n), dh1g(n);
  DeviceVec<float> dscale(std::vector<float>(dim, 0.f)), inv(rows);
  y.poison(), inv.poison(), act.poison(), dh0g.poison(), dh1g.poison();
  std::vector<bf16> yc(n), dxc = dx0, actc(n), dh0c(n), dh1c(n);
  std::vector<float> dscale_c(dim, 0.f), invc(rows);
  k::rmsnorm_forward<bf16>(cpu_, x.data(), scale.data(), yc.data(), invc.data(), rows, dim);
  k::rmsnorm_forward<bf16>(gpu(), dxg.get(), dsc.get(), y.get(), inv.get(), rows, dim);
  expect_bf16_close(y.download(), yc, "rmsnorm y");
  expect_close(inv.download(), to_double(invc), 1e-6, "rmsnorm inv_rms (float32)");
  // backward from the CPU's inverse RMS on both sides
  inv.upload(invc);
  k::rmsnorm_backward<bf16>(cpu_, dy.data(), x.data(), scale.data(), invc.data(), dxc.data(), dscale_c.data(), rows, dim);
  k::rmsnorm_backward<bf16>(gpu(), ddy.get(), dxg.get(), dsc.get(), inv.get(), ddx.get(), dscale.get(), rows, dim);
  expect_bf16_close(ddx.download(), dxc, "rmsnorm dx");
  expect_close(dscale.download(), to_double(dscale_c), 1e-5, "rmsnorm dscale (float32)");
  for (k::Activation a : {k::Activation::kGelu, k::Activation::kSilu}) {
    k::activation_forward<bf16>(cpu_, a, x.data(), h1.data(), actc.data(), n);
    k::activation_forward<bf16>(gpu(), a, dxg.get(), dh1.get(), act.get(), n);
    expect_bf16_close(act.download(), actc, "gated activation");
    k::activation_backward<bf16>(cpu_, a, dy.data(), x.data(), h1.data(), dh0c.data(), dh1c.data(), n);
    k::activation_backward<bf16>(gpu(), a, ddy.get(), dxg.get(), dh1.get(), dh0g.get(), dh1g.get(), n);
    expect_bf16_close(dh0g.download(), dh0c, "activation dh0");
    expect_bf16_close(dh1g.download(), dh1c, "activation dh1");
  }
  // float32 <-> bf16 conversion rounds the same way on both sides, bit for bit
  auto f = rnd_.normal(static_cast<size_t>(n), 10.0);
  DeviceVec<float> df(f), back(static_cast<size_t>(n));
  DeviceVec<bf16> narrow(static_cast<size_t>(n));
  narrow.poison(), back.poison();
  k::convert<float, bf16>(gpu(), df.get(), narrow.get(), n);
  k::convert<bf16, float>(gpu(), narrow.get(), back.get(), n);
  auto nb = narrow.download();
  auto bb = back.download();
  for (size_t i = 0; i < f.size(); ++i) {
    ASSERT_EQ(nb[i].bits, bf16(f[i]).bits) << i;
    ASSERT_EQ(bb[i], float(bf16(f[i]))) << i;
  }
}

// t = 300 is no multiple of a bf16 pack (8): the three-pass kernels; 1,024 (GLaM's sequence): the
// row held in registers, 4 packs per lane.
class CudaBf16Attention : public CudaBf16, public ::testing::WithParamInterface<int64_t> {};
INSTANTIATE_TEST_SUITE_P(RowLengths, CudaBf16Attention, ::testing::Values(300, 1024));

TEST_P(CudaBf16Attention, AttentionSoftmaxAndBias) {
  const int64_t t = GetParam(), batch = t > 512 ? 1 : 2, heads = t > 512 ? 2 : 4, buckets = 32, rows = batch * heads * t;
  std::vector<int32_t> bucket(static_cast<size_t>(t));
  k::relative_bucket_by_distance(bucket.data(), t, buckets, 128);
  auto scores = normal(rows * t, 2.0), bias = normal(buckets * heads), dprobs = normal(rows * t);
  DeviceVec<int32_t> dbucket(bucket);
  DeviceVec<bf16> ds(scores), dbias(bias), dd(dprobs);
  auto sc = scores, dc = dprobs;
  k::causal_softmax_forward<bf16>(cpu_, sc.data(), rows, t, {bias.data(), bucket.data(), heads});
  k::causal_softmax_forward<bf16>(gpu(), ds.get(), rows, t, {dbias.get(), dbucket.get(), heads});
  expect_bf16_close(ds.download(), sc, "softmax forward with the relative bias", 1e-4);
  ds.upload(sc);
  k::causal_softmax_backward<bf16>(cpu_, sc.data(), dc.data(), rows, t);
  k::causal_softmax_backward<bf16>(gpu(), ds.get(), dd.get(), rows, t);
  expect_bf16_close(dd.download(), dc, "softmax backward", 1e-4);
  dd.upload(dc);
  std::vector<float> gb_c(static_cast<size_t>(buckets * heads), 0.f);
  DeviceVec<float> gb(gb_c);
  k::attention_bias_backward<bf16>(cpu_, dc.data(), bucket.data(), gb_c.data(), batch, heads, t);
  k::attention_bias_backward<bf16>(gpu(), dd.get(), dbucket.get(), gb.get(), batch, heads, t);
  // Float32 sums of up to 500,000 terms in different orders: judged against float64 sums of the terms.
  const std::vector<float> zeros(gb_c.size(), 0.f);
  const auto [want, magnitude] = bias_gradient_sums(dc, bucket, zeros, heads, t);
  expect_sum_close(gb_c, want, magnitude, "bias gradient (float32, CPU)");
  expect_sum_close(gb.download(), want, magnitude, "bias gradient (float32)");
  // Both at once, as the executor calls them (at 1,024 the bias gradient is summed in the held rows):
  // the sum of the values the kernel wrote, which may differ from the CPU's in the last bf16 bit.
  DeviceVec<bf16> d_fused(dprobs);
  DeviceVec<float> gb_fused(zeros);
  k::causal_softmax_backward<bf16>(gpu(), ds.get(), d_fused.get(), rows, t, {gb_fused.get(), dbucket.get(), heads});
  const auto written = d_fused.download();
  expect_bf16_close(written, dc, "softmax backward summing the bias gradient", 1e-4);
  const auto [want_fused, magnitude_fused] = bias_gradient_sums(written, bucket, zeros, heads, t);
  expect_sum_close(gb_fused.download(), want_fused, magnitude_fused, "bias gradient summed by the softmax backward");
}

TEST_F(CudaBf16, EmbeddingDispatchCombine) {
  const int64_t tokens = 512, vocab = 50, dim = 96, top_k = 2, slots = 700;
  auto ids = rnd_.ints(static_cast<size_t>(tokens), static_cast<int32_t>(vocab));
  auto table = normal(vocab * dim), dout = normal(tokens * dim);
  DeviceVec<int32_t> did(ids);
  DeviceVec<bf16> dtab(table), ddout(dout), out(tokens * dim);
  out.poison();
  std::vector<bf16> outc(static_cast<size_t>(tokens * dim));
  k::embedding_forward<bf16>(cpu_, ids.data(), table.data(), outc.data(), tokens, dim);
  k::embedding_forward<bf16>(gpu(), did.get(), dtab.get(), out.get(), tokens, dim);
  expect_bf16_close(out.download(), outc, "embedding forward", 0);
  std::vector<float> gt_c(static_cast<size_t>(vocab * dim), 0.f);
  DeviceVec<float> gt(gt_c);
  k::embedding_backward<bf16>(cpu_, ids.data(), dout.data(), gt_c.data(), tokens, dim);
  k::embedding_backward<bf16>(gpu(), did.get(), ddout.get(), gt.get(), tokens, dim);
  expect_close(gt.download(), to_double(gt_c), 1e-5, "embedding gradient (float32)");
  // slots: a random permutation of (token, choice) copies into `slots`, some dropped
  std::vector<int32_t> slot_token(static_cast<size_t>(slots), -1), loc(static_cast<size_t>(tokens * top_k), -1);
  std::vector<int64_t> order(static_cast<size_t>(slots));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rnd_.gen());
  for (int64_t c = 0; c < std::min(slots, tokens * top_k); ++c) {
    if (c % 7 == 3) continue;  // dropped
    loc[static_cast<size_t>(c)] = static_cast<int32_t>(order[static_cast<size_t>(c)]);
    slot_token[static_cast<size_t>(order[static_cast<size_t>(c)])] = static_cast<int32_t>(c / top_k);
  }
  auto x = normal(tokens * dim), buf = normal(slots * dim), y0 = normal(tokens * dim), dy = normal(tokens * dim);
  auto gate = rnd_.uniform(static_cast<size_t>(tokens * top_k), 0, 1);
  DeviceVec<int32_t> dst(slot_token), dloc(loc);
  DeviceVec<bf16> dx(x), dbuf(buf), dy0(y0), ddy(dy), gbuf(slots * dim), gdb(slots * dim), gdx(tokens * dim);
  DeviceVec<float> dgate(gate), gdg(tokens * top_k);
  gbuf.poison(), gdb.poison(), gdg.poison();
  std::vector<bf16> bufc(static_cast<size_t>(slots * dim)), y = y0, dbc(static_cast<size_t>(slots * dim));
  std::vector<float> dgc(static_cast<size_t>(tokens * top_k));
  k::moe_dispatch_forward<bf16>(cpu_, x.data(), slot_token.data(), bufc.data(), slots, dim);
  k::moe_dispatch_forward<bf16>(gpu(), dx.get(), dst.get(), gbuf.get(), slots, dim);
  expect_bf16_close(gbuf.download(), bufc, "dispatch", 0);
  k::moe_combine_forward<bf16>(cpu_, buf.data(), loc.data(), gate.data(), y.data(), tokens, top_k, dim);
  k::moe_combine_forward<bf16>(gpu(), dbuf.get(), dloc.get(), dgate.get(), dy0.get(), tokens, top_k, dim);
  expect_bf16_close(dy0.download(), y, "combine");
  k::moe_combine_backward<bf16>(cpu_, dy.data(), buf.data(), loc.data(), slot_token.data(), gate.data(), dbc.data(),
                                dgc.data(), tokens, top_k, slots, dim);
  k::moe_combine_backward<bf16>(gpu(), ddy.get(), dbuf.get(), dloc.get(), dst.get(), dgate.get(), gdb.get(), gdg.get(),
                                tokens, top_k, slots, dim);
  expect_bf16_close(gdb.download(), dbc, "combine dbuf");
  expect_close(gdg.download(), to_double(dgc), 1e-5, "combine dgate (float32)");
  auto dxc = std::vector<bf16>(static_cast<size_t>(tokens * dim), bf16(0.f));
  gdx.upload(dxc);
  k::moe_dispatch_backward<bf16>(cpu_, dbc.data(), loc.data(), dxc.data(), tokens, top_k, dim);
  gdb.upload(dbc);
  k::moe_dispatch_backward<bf16>(gpu(), gdb.get(), dloc.get(), gdx.get(), tokens, top_k, dim);
  expect_bf16_close(gdx.download(), dxc, "dispatch backward");
}

// A vocabulary of 5,000 takes the loss kernel's 16-byte loads and 8-byte bf16 stores, 5,003 its scalar loop.
TEST_F(CudaBf16, CrossEntropyGradientFromFloat32Logits) {
  for (const int64_t vocab : {5000, 5003}) {
    const int64_t tokens = 64;
    auto logits = rnd_.normal(static_cast<size_t>(tokens * vocab), 3.0);
    auto targets = rnd_.ints(static_cast<size_t>(tokens), static_cast<int32_t>(vocab));
    std::vector<float> ce(tokens), lse(tokens);
    std::vector<bf16> d(static_cast<size_t>(tokens * vocab));
    k::softmax_xent_forward_backward<float>(cpu_, logits.data(), targets.data(), tokens, vocab, 1e-4, 1e-3, ce.data(),
                                            lse.data(), d.data());
    DeviceVec<float> dl(logits), gce(tokens), glse(tokens);
    DeviceVec<int32_t> dt(targets);
    DeviceVec<bf16> gd(static_cast<size_t>(tokens * vocab));
    gd.poison(), gce.poison(), glse.poison();
    k::softmax_xent_forward_backward<float>(gpu(), dl.get(), dt.get(), tokens, vocab, 1e-4, 1e-3, gce.get(), glse.get(),
                                            gd.get());
    expect_close(gce.download(), to_double(ce), 1e-5, "cross-entropy");
    expect_close(glse.download(), to_double(lse), 1e-5, "logsumexp");
    expect_bf16_close(gd.download(), d, "logits gradient (bf16)", 1e-4);
  }
}

exec::ExecShape shape_of(const ModelConfig& m, int64_t seqs) {
  exec::ExecShape s;
  s.seqs = seqs;
  s.seq_len = m.seq_len;
  return s;
}

// The bf16 step on the GPU against the bf16 step on the CPU: the same roundings, up to the order of
// float32 sums, so far closer than bf16 is to float32. Routing is the exception. A token whose second
// and third experts score within a rounding of each other can go either way, and one copy sent
// elsewhere (or dropped instead) changes its layer's router, expert and norm gradients by several
// percent. So the moves are counted and bounded (1% of a layer's copies), a moved layer's own
// gradients are held to 50% (finite, of the right size), and every other gradient to 2%. The dense
// model has no routing: all of it is held to 2%.
TEST(CudaBf16Step, MatchesTheCpuBf16Step) {
  GLAM_REQUIRE_CUDA_DEVICE();
  for (const char* id : {"glam-tiny", "glam-tiny-8e"}) {
    ModelConfig m = load_model(id);
    exec::ExecShape s = shape_of(m, 4);
    auto comm = exec::make_single_communicator();
    kernels::KernelContext cpu;
    exec::Transformer<bf16> ref(m, s, *comm, cpu);
    CudaContext gpu;
    exec::Transformer<bf16> model(m, s, *comm, gpu.ctx);
    ref.init_params(11);
    model.init_params(11);
    auto b = random_batch(s.tokens(), m.vocab_size, 5);
    DeviceVec<int32_t> din(b.inputs), dtg(b.targets);
    exec::StepLoss lr = ref.run(b.inputs.data(), b.targets.data(), 1, true);
    exec::StepLoss lg = model.run(din.get(), dtg.get(), 1, true);
    EXPECT_NEAR(lg.ce, lr.ce, 1e-3 * lr.ce) << id;
    EXPECT_NEAR(lg.aux, lr.aux, 1e-2 * lr.aux) << id;
    const std::vector<int64_t> moved = layers_routed_differently(model.moe_stats(), ref.moe_stats(), 0.01, id);
    const int64_t total = model.layout().total_elements;
    std::vector<float> g(static_cast<size_t>(total));
    exec::copy_to_host(model.grads(), g.data(), total);
    for (const exec::ParamInfo& p : model.layout().params) {
      double diff = 0, norm = 0;
      for (int64_t i = p.offset; i < p.offset + p.elements(); ++i) {
        const double w = ref.grads()[i];
        diff += (g[static_cast<size_t>(i)] - w) * (g[static_cast<size_t>(i)] - w), norm += w * w;
      }
      EXPECT_LT(std::sqrt(diff / norm), routed_by(p.name, moved) ? 0.5 : 0.02) << id << " " << p.name;
    }
  }
}

// Ten Adafactor steps of the bf16 model on the GPU track the float32 model on the CPU.
TEST(CudaBf16Step, TenStepsTrackTheFloat32Run) {
  GLAM_REQUIRE_CUDA_DEVICE();
  const double worst = ten_steps_against_the_cpu<bf16>(&exec::StepLoss::ce, 1e-2);
  std::cout << "largest relative loss difference, bf16 GPU vs float32 CPU, over 10 steps: " << worst << "\n";
  RecordProperty("largest_relative_loss_difference", std::to_string(worst));
}

}  // namespace
}  // namespace glam::testing
