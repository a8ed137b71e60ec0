// The tensor-parallel kernels on the GPU against the CPU's whole-tensor references (float64): each
// slice runs in its own thread with its own stream, and the slices' partial sums are combined on the
// host at a barrier (support/thread_slices.h), as the ranks' collectives would combine them. Outputs
// are poisoned; inputs are fresh random values. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "adafactor.h"
#include "cuda_test_support.h"
#include "loss.h"
#include "support/thread_slices.h"

namespace glam::testing {
namespace {

namespace k = glam::kernels;

class CudaSlicedKernels : public GpuKernelTest {};

// Vocabulary-parallel cross-entropy with z-loss over 3 slices (float32 gradients, and bf16 ones as the
// bf16 model writes them), against the whole vocabulary's loss in float64. Targets include each
// slice's first and last ids.
TEST_F(CudaSlicedKernels, VocabularyParallelLoss) {
  const int64_t tokens = 37, slices = 3, part = 1667, vocab = slices * part;
  const auto logits = rnd_.normal(static_cast<size_t>(tokens * vocab), 4.0);
  auto targets = rnd_.ints(static_cast<size_t>(tokens), static_cast<int32_t>(vocab));
  for (int64_t s = 0; s < slices; ++s) {
    targets[static_cast<size_t>(2 * s)] = static_cast<int32_t>(s * part);
    targets[static_cast<size_t>(2 * s + 1)] = static_cast<int32_t>((s + 1) * part - 1);
  }
  const auto ld = to_double(logits);
  std::vector<double> ce(static_cast<size_t>(tokens)), lse(ce.size()), dl(ld.size());
  k::softmax_xent_forward_backward<double>(cpu_, ld.data(), targets.data(), tokens, vocab, 1e-4, 1.0 / 256, ce.data(),
                                           lse.data(), dl.data());
  for (bool bf16_grads : {false, true}) {
    std::vector<std::vector<float>> sce(slices), slse(slices);
    std::vector<float> grads(dl.size());
    ThreadSlices threads(static_cast<int>(slices));
    threads.run([&](int s, const k::ShardReduce& reduce) {
      CudaContext gpu;
      std::vector<float> mine(static_cast<size_t>(tokens * part));
      for (int64_t t = 0; t < tokens; ++t)
        std::copy_n(logits.begin() + t * vocab + s * part, part, mine.begin() + t * part);
      DeviceVec<float> gl(mine), gce(static_cast<size_t>(tokens)), glse(gce.size()), gdl(mine.size());
      DeviceVec<k::bf16> gdl16(mine.size());
      DeviceVec<int32_t> gt(targets);
      gce.poison(), glse.poison(), gdl.poison(), gdl16.poison();
      if (bf16_grads)
        k::softmax_xent_forward_backward_sliced<float, k::bf16>(gpu.ctx, gl.get(), gt.get(), tokens, part, s * part,
                                                                1e-4, 1.0 / 256, gce.get(), glse.get(), gdl16.get(),
                                                                reduce);
      else
        k::softmax_xent_forward_backward_sliced<float>(gpu.ctx, gl.get(), gt.get(), tokens, part, s * part, 1e-4,
                                                       1.0 / 256, gce.get(), glse.get(), gdl.get(), reduce);
      sce[static_cast<size_t>(s)] = gce.download();
      slse[static_cast<size_t>(s)] = glse.download();
      std::vector<float> d(mine.size());
      if (bf16_grads) {
        const auto d16 = gdl16.download();
        for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<float>(d16[i]);
      } else {
        d = gdl.download();
      }
      for (int64_t t = 0; t < tokens; ++t)
        std::copy_n(d.begin() + t * part, part, grads.begin() + t * vocab + s * part);
    });
    const std::string what = bf16_grads ? " (bf16 gradients)" : "";
    for (int64_t s = 0; s < slices; ++s) {
      expect_close(sce[static_cast<size_t>(s)], ce, 1e-5, "ce of slice " + std::to_string(s) + what);
      expect_close(slse[static_cast<size_t>(s)], lse, 1e-6, "lse of slice " + std::to_string(s) + what);
    }
    if (bf16_grads) {  // elementwise: one bf16 unit (2^-7 of the value) plus 1e-4 of the largest gradient
      double scale = 0;
      for (double d : dl) scale = std::max(scale, std::abs(d));
      expect_close(grads, dl, 1.0 / 128, "dlogits" + what, 1e-4 * scale, true);
    } else {
      expect_close(grads, dl, 1e-5, "dlogits");
    }
  }
}

// A sliced weight's matrices: the CPU's whole ones and the GPU's slices.
struct SlicedMatrices {
  StackedMatrices c;
  std::vector<float> start;
  std::vector<double> whole, state;  // CPU reference: whole matrices, states row + column per matrix
  std::vector<std::vector<float>> part, part_state;  // per slice, after the GPU's updates
};

// Three updates of every slice of `cases` (one call for all of them, as the optimizer makes it) against
// adafactor_update of the whole matrices in float64. The stacked matrices differ in scale by 4x in the
// weights and 10x in the gradients, so a step size or factor shared between them would show.
void check_sliced_adafactor(Random& rnd, std::vector<StackedMatrices> cases, int slices) {
  const k::KernelContext cpu;
  const k::AdafactorHyper h;
  std::vector<SlicedMatrices> all;
  for (StackedMatrices& c : cases) {
    c.slices = slices;
    SlicedMatrices w{c, {}, {}, {}, {}, {}};
    for (int64_t e = 0; e < c.count; ++e) {
      const auto m = rnd.normal(static_cast<size_t>(c.rows * c.cols), 0.05 * std::pow(4.0, static_cast<double>(e)));
      w.start.insert(w.start.end(), m.begin(), m.end());
    }
    w.whole = to_double(w.start);
    w.state.assign(static_cast<size_t>(c.count * (c.rows + c.cols)), 0.0);
    for (int s = 0; s < slices; ++s) {
      w.part.push_back(c.slice_of(w.start, s));
      w.part_state.emplace_back(static_cast<size_t>(c.count * (c.slice_rows() + c.slice_cols())), 0.f);
    }
    all.push_back(std::move(w));
  }
  ThreadSlices threads(slices);
  for (int64_t step = 1; step <= 3; ++step) {
    std::vector<std::vector<float>> grads;
    for (SlicedMatrices& w : all) {
      std::vector<float> g;
      for (int64_t e = 0; e < w.c.count; ++e) {
        const auto m = rnd.normal(static_cast<size_t>(w.c.rows * w.c.cols), 0.01 * std::pow(10.0, static_cast<double>(e)));
        g.insert(g.end(), m.begin(), m.end());
      }
      const auto gd = to_double(g);
      k::adafactor_update<double>(cpu, w.whole.data(), gd.data(), w.state.data(), w.state.data() + w.c.rows, nullptr,
                                  w.c.rows, w.c.cols, step, h, w.c.count, w.c.rows + w.c.cols);
      grads.push_back(std::move(g));
    }
    threads.run([&](int s, const k::ShardReduce& reduce) {
      CudaContext gpu;
      std::vector<std::unique_ptr<DeviceVec<float>>> held;  // params, grads and states of this slice
      std::vector<k::SlicedWeight<float>> mine;
      for (size_t i = 0; i < all.size(); ++i) {
        SlicedMatrices& w = all[i];
        float* p = held.emplace_back(std::make_unique<DeviceVec<float>>(w.part[static_cast<size_t>(s)]))->get();
        float* g = held.emplace_back(std::make_unique<DeviceVec<float>>(w.c.slice_of(grads[i], s)))->get();
        float* st = held.emplace_back(std::make_unique<DeviceVec<float>>(w.part_state[static_cast<size_t>(s)]))->get();
        const int64_t sr = w.c.slice_rows(), sc = w.c.slice_cols();
        mine.push_back({p, g, st, st + sr, sr, sc, w.c.axis, slices, w.c.count, sr + sc});
      }
      k::adafactor_update_sliced<float>(gpu.ctx, mine, step, h, reduce);
      for (size_t i = 0; i < all.size(); ++i) {
        all[i].part[static_cast<size_t>(s)] = held[3 * i]->download();
        all[i].part_state[static_cast<size_t>(s)] = held[3 * i + 2]->download();
      }
    });
  }
  for (const SlicedMatrices& w : all)
    for (int s = 0; s < slices; ++s) {
      const std::string what = w.c.describe() + ", slice " + std::to_string(s);
      const auto& got = w.part[static_cast<size_t>(s)];
      const auto before = w.c.slice_of(w.start, s);
      const auto want = w.c.slice_of(w.whole, s);
      const int64_t sr = w.c.slice_rows(), sc = w.c.slice_cols();
      const size_t n = static_cast<size_t>(sr * sc);
      for (int64_t e = 0; e < w.c.count; ++e)
        expect_updates_close(got, before, want, static_cast<size_t>(e) * n, static_cast<size_t>(e + 1) * n,
                             what + ", matrix " + std::to_string(e) + " updates");
      // The slice's own rows and columns of each matrix's states, element by element (all positive).
      const bool by_rows = w.c.by_rows();
      std::vector<float> got_state;
      std::vector<double> want_state;
      for (int64_t e = 0; e < w.c.count; ++e) {
        const float* gs = w.part_state[static_cast<size_t>(s)].data() + e * (sr + sc);
        const double* ws = w.state.data() + e * (w.c.rows + w.c.cols);
        for (int64_t r = 0; r < sr; ++r) got_state.push_back(gs[r]), want_state.push_back(ws[r + (by_rows ? s * sr : 0)]);
        for (int64_t c = 0; c < sc; ++c)
          got_state.push_back(gs[sr + c]), want_state.push_back(ws[w.c.rows + c + (by_rows ? 0 : s * sc)]);
      }
      expect_close(got_state, want_state, 1e-5, what + " states", 0, true);
    }
}

// Stacked and single matrices split by rows and by columns in one call, with more rows than a column
// chunk of the kernels (64), then one split by columns into 3.
TEST_F(CudaSlicedKernels, AdafactorOfSlices) {
  check_sliced_adafactor(rnd_, {{140, 45, 3, k::SliceAxis::kRows}, {70, 66, 2, k::SliceAxis::kCols},
                                {34, 130, 1, k::SliceAxis::kRows}}, 2);
  check_sliced_adafactor(rnd_, {{65, 96, 1, k::SliceAxis::kCols}}, 3);
}

}  // namespace
}  // namespace glam::testing
