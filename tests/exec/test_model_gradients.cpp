// The full training step's gradients (every weight tensor, dense and MoE blocks, all three loss
// terms) against central finite differences of the float64 model, and one expert with ample
// capacity against a dense FFN with the same weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "../kernels/fd.h"
#include "comm/communicator.h"
#include "common/errors.h"
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
    for (const auto& st : model.moe_stats()) *checked_drops += st.dropped();
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

// Gradient accumulation: the batch in 1, 2 or 4 micro-batches gives the same losses and gradients
// (float64), with random second-expert routing and dropped copies (which follow the step's global
// token index, not the micro-batch's).
TEST(ModelGradients, MicroBatchesAddUpToTheWholeBatch) {
  // Capacity for about every copy, so that which second copies random routing skips decides which are
  // dropped.
  // A threshold of 1 keeps a second copy with probability g2 (about a third here): many are skipped.
  std::string moe = std::string(glam::testing::kMicroMoe) +
                    "second_expert_policy = \"random\"\nsecond_expert_threshold = 1.0\n";
  moe.replace(moe.find("capacity_factor = 0.5"), 21, "capacity_factor = 1.0");
  const ModelConfig m = parse_model(glam::testing::micro_toml(moe), "micro-random.toml");
  auto comm = make_single_communicator();
  kernels::KernelContext ctx;
  const int64_t seqs = 4;
  auto b = random_batch(seqs * m.seq_len, m.vocab_size, 11);
  struct Result {
    StepLoss loss;
    std::vector<double> grads;
    int64_t dropped = 0, skipped = 0;
  };
  auto run = [&](int64_t microbatches) {
    ExecShape s;
    s.seqs = seqs / microbatches, s.seq_len = m.seq_len, s.microbatches = microbatches;
    Transformer<double> model(m, s, *comm, ctx);
    model.init_params(7);
    Result r;
    for (int64_t k = 0; k < microbatches; ++k) {
      const StepLoss part =
          model.run(b.inputs.data() + k * s.tokens(), b.targets.data() + k * s.tokens(), 3, true, nullptr, k);
      r.loss.total += part.total, r.loss.ce += part.ce, r.loss.z += part.z, r.loss.aux += part.aux;
      for (const auto& st : model.moe_stats()) r.dropped += st.dropped(), r.skipped += st.skipped;
    }
    r.grads.assign(model.grads(), model.grads() + model.layout().total_elements);
    return r;
  };
  const Result whole = run(1);
  EXPECT_GT(whole.dropped, 0);
  EXPECT_GT(whole.skipped, 0);
  for (int64_t microbatches : {2, 4}) {
    const Result split = run(microbatches);
    EXPECT_NEAR(split.loss.total, whole.loss.total, 1e-12) << microbatches;
    EXPECT_NEAR(split.loss.ce, whole.loss.ce, 1e-12) << microbatches;
    EXPECT_NEAR(split.loss.aux, whole.loss.aux, 1e-12) << microbatches;
    EXPECT_EQ(split.dropped, whole.dropped) << microbatches;
    EXPECT_EQ(split.skipped, whole.skipped) << microbatches;
    double worst = 0;
    for (size_t i = 0; i < whole.grads.size(); ++i)
      worst = std::max(worst, std::abs(split.grads[i] - whole.grads[i]) / (1e-8 + std::abs(whole.grads[i])));
    EXPECT_LT(worst, 1e-10) << microbatches << " micro-batches";
  }
}

// Pipeline shapes the executor cannot run are refused before anything is built, naming the option.
TEST(PipelineShape, LayoutsThatCannotRunAreRefused) {
  const ModelConfig m = parse_model(glam::testing::micro_toml(glam::testing::kMicroMoe, "gated", "", 4), "micro4.toml");
  ExecShape s;
  s.seqs = 1, s.seq_len = m.seq_len, s.microbatches = 4;
  auto message = [&](ExecShape shape) {
    try {
      check_runnable(m, shape);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ExecShape ok = s;
  ok.stages = 2, ok.stage = 1, ok.virtual_stages = 2;
  EXPECT_EQ(message(ok), "");
  ExecShape three = s;
  three.stages = 3;
  EXPECT_NE(message(three).find("3 pipeline stages x 1 chunks per stage do not divide the 4 layers"), std::string::npos)
      << message(three);
  ExecShape odd = ok;
  odd.microbatches = 3;
  EXPECT_NE(message(odd).find("--microbatches 3: the interleaved schedule (--virtual-stages 2) needs a multiple of the 2 stages"),
            std::string::npos)
      << message(odd);
  ExecShape outside = ok;
  outside.stage = 2;
  EXPECT_NE(message(outside).find("pipeline stage 2 of 2"), std::string::npos) << message(outside);
  ExecShape chunks_alone = s;
  chunks_alone.virtual_stages = 2;
  EXPECT_NE(message(chunks_alone).find("needs pipeline stages"), std::string::npos) << message(chunks_alone);
  // Tensor parallelism: the micro model has 2 heads, 11 vocabulary entries, 12 hidden units, experts of 6.
  ExecShape slices = s;
  slices.tp = 2;
  EXPECT_NE(message(slices).find("--tensor-parallel 2 does not divide the 11 vocabulary entries of micro"),
            std::string::npos)
      << message(slices);
  slices.tp = 4;
  EXPECT_NE(message(slices).find("--tensor-parallel 4 does not divide the 2 attention heads"), std::string::npos)
      << message(slices);
  slices.tp_rank = 4;
  EXPECT_NE(message(slices).find("tensor-parallel rank 4 of 4: expected at least one slice, and a rank from 0"),
            std::string::npos)
      << message(slices);
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
  for (const auto& st : e.moe_stats()) EXPECT_EQ(st.dropped(), 0);
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
