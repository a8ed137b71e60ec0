// The tensor-parallel kernels against their whole-tensor versions, the slices in threads of one process
// (support/thread_slices.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <random>
#include <vector>

#include "adafactor.h"
#include "embedding.h"
#include "loss.h"
#include "support/thread_slices.h"

namespace glam::kernels {
namespace {

using glam::testing::StackedMatrices;
using glam::testing::ThreadSlices;

std::vector<double> random_values(int64_t n, unsigned seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(gen);
  return v;
}

TEST(SlicedKernels, EmbeddingRowsHoldTheirIdsOnly) {
  const KernelContext ctx;
  const int64_t vocab = 12, dim = 3, tokens = 7, slices = 3, rows = vocab / slices;
  const std::vector<int32_t> ids = {0, 5, 11, 4, 4, 8, 3};
  const auto table = random_values(vocab * dim, 1), dout = random_values(tokens * dim, 2);
  std::vector<double> whole(static_cast<size_t>(tokens * dim)), sum(whole.size(), 0.0),
      whole_grad(static_cast<size_t>(vocab * dim), 0.0), sliced_grad(whole_grad.size(), 0.0);
  embedding_forward<double>(ctx, ids.data(), table.data(), whole.data(), tokens, dim);
  embedding_backward<double>(ctx, ids.data(), dout.data(), whole_grad.data(), tokens, dim);
  for (int64_t s = 0; s < slices; ++s) {
    std::vector<double> out(whole.size(), -7.0);  // poisoned: every element must be written
    embedding_forward<double>(ctx, ids.data(), table.data() + s * rows * dim, out.data(), tokens, dim,
                              EmbeddingRows{s * rows, rows});
    for (size_t i = 0; i < out.size(); ++i) sum[i] += out[i];
    embedding_backward<double>(ctx, ids.data(), dout.data(), sliced_grad.data() + s * rows * dim, tokens, dim,
                               EmbeddingRows{s * rows, rows});
  }
  EXPECT_EQ(sum, whole) << "each token's row comes from exactly one slice, zeros from the others";
  EXPECT_EQ(sliced_grad, whole_grad);
}

TEST(SlicedKernels, VocabularyParallelLossEqualsTheWholeVocabulary) {
  const KernelContext ctx;
  const int64_t tokens = 5, vocab = 48, slices = 3, part = vocab / slices;
  const auto logits = random_values(tokens * vocab, 3, 4.0);
  const std::vector<int32_t> targets = {0, 17, 47, 31, 16};  // at both ends of the slices
  std::vector<double> ce(tokens), lse(tokens), grad(static_cast<size_t>(tokens * vocab));
  softmax_xent_forward_backward<double>(ctx, logits.data(), targets.data(), tokens, vocab, 0.01, 0.5, ce.data(),
                                        lse.data(), grad.data());
  ThreadSlices threads(static_cast<int>(slices));
  std::vector<std::vector<double>> sce(slices, std::vector<double>(tokens)), slse = sce;
  std::vector<double> sgrad(grad.size(), -7.0);
  threads.run([&](int s, const ShardReduce& reduce) {
    std::vector<double> mine(static_cast<size_t>(tokens * part)), dmine(mine.size(), -7.0);
    for (int64_t t = 0; t < tokens; ++t)
      std::copy_n(logits.begin() + t * vocab + s * part, part, mine.begin() + t * part);
    softmax_xent_forward_backward_sliced<double>(ctx, mine.data(), targets.data(), tokens, part, s * part, 0.01, 0.5,
                                                 sce[static_cast<size_t>(s)].data(), slse[static_cast<size_t>(s)].data(),
                                                 dmine.data(), reduce);
    for (int64_t t = 0; t < tokens; ++t)
      std::copy_n(dmine.begin() + t * part, part, sgrad.begin() + t * vocab + s * part);
  });
  for (int64_t s = 0; s < slices; ++s)
    for (int64_t t = 0; t < tokens; ++t) {
      EXPECT_NEAR(sce[static_cast<size_t>(s)][static_cast<size_t>(t)], ce[static_cast<size_t>(t)], 1e-12);
      EXPECT_NEAR(slse[static_cast<size_t>(s)][static_cast<size_t>(t)], lse[static_cast<size_t>(t)], 1e-12);
    }
  for (size_t i = 0; i < grad.size(); ++i) EXPECT_NEAR(sgrad[i], grad[i], 1e-14) << i;
}

// Three updates of every slice of `weights` (one call for all of them, as the optimizer makes it)
// against adafactor_update of the whole matrices.
void check_sliced_adafactor(std::vector<StackedMatrices> weights, int slices) {
  const KernelContext ctx;
  const AdafactorHyper h;
  struct State {
    StackedMatrices t;
    std::vector<double> whole, state;
    std::vector<std::vector<double>> part, part_state;
  };
  std::vector<State> all;
  for (size_t k = 0; k < weights.size(); ++k) {
    StackedMatrices& t = weights[k];
    t.slices = slices;
    State st{t, random_values(t.count * t.rows * t.cols, static_cast<unsigned>(4 + k)),
             std::vector<double>(static_cast<size_t>(t.count * (t.rows + t.cols)), 0.0), {}, {}};
    for (int s = 0; s < slices; ++s) {
      st.part.push_back(t.slice_of(st.whole, s));
      st.part_state.emplace_back(static_cast<size_t>(t.count * (t.slice_rows() + t.slice_cols())), 0.0);
    }
    all.push_back(std::move(st));
  }
  ThreadSlices threads(slices);
  for (int64_t step = 1; step <= 3; ++step) {
    std::vector<std::vector<double>> grads;
    for (size_t k = 0; k < all.size(); ++k) {
      State& st = all[k];
      grads.push_back(random_values(static_cast<int64_t>(st.whole.size()), static_cast<unsigned>(10 * step + k), 0.1));
      adafactor_update<double>(ctx, st.whole.data(), grads.back().data(), st.state.data(), st.state.data() + st.t.rows,
                               nullptr, st.t.rows, st.t.cols, step, h, st.t.count, st.t.rows + st.t.cols);
    }
    threads.run([&](int s, const ShardReduce& reduce) {
      std::vector<std::vector<double>> g;
      std::vector<SlicedWeight<double>> mine;
      for (size_t k = 0; k < all.size(); ++k) g.push_back(all[k].t.slice_of(grads[k], s));
      for (size_t k = 0; k < all.size(); ++k) {
        State& st = all[k];
        const int64_t sr = st.t.slice_rows(), sc = st.t.slice_cols();
        double* state = st.part_state[static_cast<size_t>(s)].data();
        mine.push_back({st.part[static_cast<size_t>(s)].data(), g[k].data(), state, state + sr, sr, sc, st.t.axis,
                        slices, st.t.count, sr + sc});
      }
      adafactor_update_sliced<double>(ctx, mine, step, h, reduce);
    });
  }
  for (const State& st : all)
    for (int s = 0; s < slices; ++s) {
      const auto want = st.t.slice_of(st.whole, s);
      const auto& got = st.part[static_cast<size_t>(s)];
      for (size_t i = 0; i < want.size(); ++i)
        EXPECT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::abs(want[i])))
            << st.t.describe() << ", slice " << s << ", element " << i;
    }
}

// Stacked and single matrices split by rows and by columns into 2 slices in one call, and by columns
// into 5.
TEST(SlicedKernels, AdafactorOfSlicesEqualsTheWholeMatrices) {
  check_sliced_adafactor({{6, 10, 2, SliceAxis::kRows}, {6, 10, 2, SliceAxis::kCols}, {4, 6, 1, SliceAxis::kCols}}, 2);
  check_sliced_adafactor({{6, 10, 1, SliceAxis::kCols}}, 5);
}

// The harness itself: a slice that fails (as a CUDA call may) is reported by run(), and the slices
// waiting for it in a reduction stop instead of hanging.
TEST(SlicedKernels, ASliceThatFailsIsReportedNotWaitedFor) {
  ThreadSlices threads(3);
  std::atomic<int> stopped{0};
  EXPECT_THROW(threads.run([&](int s, const ShardReduce& reduce) {
                 double v = 1;
                 reduce.sum(&v, 1);  // all three
                 EXPECT_EQ(v, 3);
                 if (s == 1) throw std::runtime_error("slice 1 failed");
                 try {
                   reduce.sum(&v, 1);
                 } catch (const std::runtime_error&) {
                   ++stopped;
                   throw;
                 }
               }),
               std::runtime_error);
  EXPECT_EQ(stopped, 2);
}

}  // namespace
}  // namespace glam::kernels
