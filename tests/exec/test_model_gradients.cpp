// The full training step's gradients (every weight tensor, dense and MoE blocks, all three loss
// terms) against central finite differences of the float64 model, and one expert with ample
// capacity against a dense FFN with the same weights.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "../kernels/fd.h"
#include "comm/communicator.h"
#include "model/transformer.h"
#include "support/random_batch.h"
#include "tiny_models.h"

namespace glam::exec {
namespace {

using glam::testing::random_batch;

void check_gradients(const ModelConfig& m, int64_t* checked_drops, int64_t seqs = 2) {
  auto comm = make_single_communicator();
  kernels::KernelContext ctx;
  ExecShape s;
  s.seqs = seqs;
  s.seq_len = m.seq_len;
  Transformer<double> model(m, s, *comm, ctx);
  model.init_params(7);
  // perturb the norm scales and the bias away from their initial values so every path is generic
  std::mt19937_64 gen(3);
  std::normal_distribution<double> nd(0, 0.3);
  for (const ParamInfo& p : model.layout().params)
    if (p.init != InitKind::kNormal)
      for (int64_t i = 0; i < p.elements(); ++i) model.params()[p.offset + i] += nd(gen);
  auto b = random_batch(s.tokens(), m.vocab_size, 5);
  StepLoss loss = model.run(b.inputs.data(), b.targets.data(), 1, true);
  EXPECT_TRUE(std::isfinite(loss.total));
  if (m.is_moe()) {
    EXPECT_GT(loss.aux, 0.5);
    for (const auto& st : model.moe_stats()) *checked_drops += st.dropped;
  }
  std::vector<double> analytic(model.grads(), model.grads() + model.layout().total_elements);
  auto f = [&] { return model.run(b.inputs.data(), b.targets.data(), 1, false).total; };
  for (const ParamInfo& p : model.layout().params) {
    // every element of every tensor
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < p.elements(); ++i) idx.push_back(p.offset + i);
    for (int64_t i : idx) {
      double& w = model.params()[i];
      const double h = 1e-5, old = w;
      w = old + h;
      double fp = f();
      w = old - h;
      double fm = f();
      w = old;
      double num = (fp - fm) / (2 * h);
      EXPECT_NEAR(analytic[static_cast<size_t>(i)], num, 1e-7 + 1e-5 * std::abs(num)) << p.name << " element " << i - p.offset;
    }
  }
}

TEST(ModelGradients, DenseModelMatchesFiniteDifferences) {
  int64_t drops = 0;
  check_gradients(glam::testing::micro_dense(), &drops);
}

// More sequences than heads: the attention products then batch over the sequences, one call per
// head (with 2 sequences and 2 heads, over the heads, one call per sequence).
TEST(ModelGradients, MoreSequencesThanHeads) {
  int64_t drops = 0;
  ASSERT_LT(glam::testing::micro_dense().heads, 3);
  check_gradients(glam::testing::micro_dense(), &drops, 3);
}

TEST(ModelGradients, MoeModelMatchesFiniteDifferences) {
  int64_t drops = 0;
  check_gradients(glam::testing::micro_moe(), &drops);
  EXPECT_GT(drops, 0);  // the check covered dropped copies
}

TEST(ModelGradients, MoeModelWithRandomRoutingAndGatedExperts) {
  std::string moe = std::string(glam::testing::kMicroMoe) + "second_expert_policy = \"random\"\nexpert_kind = \"gated\"\n";
  int64_t drops = 0;
  check_gradients(parse_model(glam::testing::micro_toml(moe, "plain"), "micro-random.toml"), &drops);
}

TEST(MoeEquivalence, OneExpertWithAmpleCapacityEqualsDenseFfn) {
  const std::string plain_moe = R"([moe]
experts = 1
every = 1
offset = 0
top_k = 1
capacity_factor = 4.0
group_tokens = 6
aux_loss_weight = 0.0
expert_activation = "gelu"
)";
  ModelConfig dense = parse_model(glam::testing::micro_toml(glam::testing::kDenseMoeSection, "plain"), "dense.toml");
  ModelConfig moe = parse_model(glam::testing::micro_toml(plain_moe, "plain"), "moe.toml");
  auto comm = make_single_communicator();
  kernels::KernelContext ctx;
  ExecShape s;
  s.seqs = 2;
  s.seq_len = 6;
  Transformer<double> d(dense, s, *comm, ctx), e(moe, s, *comm, ctx);
  d.init_params(1);
  e.init_params(2);
  // copy the shared weights, and the dense FFN into the single expert
  for (size_t i = 0; i < d.layout().params.size(); ++i) {
    const ParamInfo& p = d.layout().params[i];
    for (size_t j = 0; j < e.layout().params.size(); ++j)
      if (e.layout().params[j].name == p.name) std::copy_n(d.params() + p.offset, p.elements(), e.params() + e.layout().params[j].offset);
  }
  for (size_t l = 0; l < d.layout().layers.size(); ++l) {
    const LayerParams& dl = d.layout().layers[l];
    const LayerParams& el = e.layout().layers[l];
    ASSERT_TRUE(el.moe);
    std::copy_n(d.param(dl.wi0), d.layout().params[dl.wi0].elements(), e.param(el.ewi0));
    std::copy_n(d.param(dl.wo), d.layout().params[dl.wo].elements(), e.param(el.ewo));
  }
  auto b = random_batch(s.tokens(), dense.vocab_size, 9);
  StepLoss ld = d.run(b.inputs.data(), b.targets.data(), 1, true);
  StepLoss le = e.run(b.inputs.data(), b.targets.data(), 1, true);
  EXPECT_NEAR(ld.total, le.total, 1e-12);
  EXPECT_NEAR(ld.ce, le.ce, 1e-12);
  for (const auto& st : e.moe_stats()) EXPECT_EQ(st.dropped, 0);
  for (size_t l = 0; l < d.layout().layers.size(); ++l) {
    const LayerParams& dl = d.layout().layers[l];
    const LayerParams& el = e.layout().layers[l];
    for (int64_t i = 0; i < d.layout().params[dl.wo].elements(); ++i)
      ASSERT_NEAR(d.grad(dl.wo)[i], e.grad(el.ewo)[i], 1e-12);
    for (int64_t i = 0; i < d.layout().params[dl.wi0].elements(); ++i)
      ASSERT_NEAR(d.grad(dl.wi0)[i], e.grad(el.ewi0)[i], 1e-12);
  }
  ASSERT_NEAR(d.grad(d.layout().embedding)[3], e.grad(e.layout().embedding)[3], 1e-12);
}

}  // namespace
}  // namespace glam::exec
