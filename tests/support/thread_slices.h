#pragma once
// Tensor-parallel kernels in one process: each slice runs in its own thread, and the ShardReduce it
// gets combines the values the slices pass in the same call at a barrier, in slice order on every
// slice, as the ranks' collectives would.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "shard_reduce.h"

namespace glam::testing {

class ThreadSlices {
 public:
  explicit ThreadSlices(int slices) : slices_(slices), sync_(slices), parts_(static_cast<size_t>(slices)) {}

  // Runs body(slice, reduce) for every slice at once and returns when all have. An exception in a
  // slice (a failed CUDA call) leaves the barrier, makes the others' next reduction throw, and is
  // rethrown here, so the test reports it instead of hanging or terminating.
  void run(const std::function<void(int, const kernels::ShardReduce&)>& body) {
    std::vector<std::thread> threads;
    std::exception_ptr first_error;
    std::mutex error_mutex;
    for (int s = 0; s < slices_; ++s)
      threads.emplace_back([&, s] {
        kernels::ShardReduce reduce;
        reduce.sum = [&, s](double* v, int64_t n) { combine(s, v, n, [](double a, double b) { return a + b; }); };
        reduce.max = [&, s](double* v, int64_t n) { combine(s, v, n, [](double a, double b) { return std::max(a, b); }); };
        try {
          body(s, reduce);
        } catch (...) {
          {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!first_error) first_error = std::current_exception();
          }
          failed_ = true;
          sync_.arrive_and_drop();
        }
      });
    for (auto& t : threads) t.join();
    if (first_error) std::rethrow_exception(first_error);
  }

 private:
  void combine(int s, double* v, int64_t n, double (*op)(double, double)) {
    parts_[static_cast<size_t>(s)].assign(v, v + n);
    sync_.arrive_and_wait();
    if (failed_) throw std::runtime_error("slice " + std::to_string(s) + ": another slice failed");
    for (int64_t i = 0; i < n; ++i) {
      double r = parts_[0][static_cast<size_t>(i)];
      for (int o = 1; o < slices_; ++o) r = op(r, parts_[static_cast<size_t>(o)][static_cast<size_t>(i)]);
      v[i] = r;
    }
    sync_.arrive_and_wait();
  }
  int slices_;
  std::atomic<bool> failed_{false};
  std::barrier<> sync_;
  std::vector<std::vector<double>> parts_;
};

// A weight in the tensor-parallel tests: `count` stacked matrices of rows x cols, split along `axis`
// into `slices` blocks of rows or of columns.
struct StackedMatrices {
  int64_t rows = 0, cols = 0, count = 1;
  kernels::SliceAxis axis = kernels::SliceAxis::kRows;
  int slices = 1;

  bool by_rows() const { return axis == kernels::SliceAxis::kRows; }
  int64_t slice_rows() const { return by_rows() ? rows / slices : rows; }
  int64_t slice_cols() const { return by_rows() ? cols : cols / slices; }
  // Slice s of each stacked matrix of m (count x rows x cols values), one after another.
  template <class V>
  V slice_of(const V& m, int s) const {
    const int64_t sr = slice_rows(), sc = slice_cols(), r0 = by_rows() ? s * sr : 0, c0 = by_rows() ? 0 : s * sc;
    V out;
    for (int64_t e = 0; e < count; ++e)
      for (int64_t r = 0; r < sr; ++r)
        for (int64_t c = 0; c < sc; ++c) out.push_back(m[static_cast<size_t>(e * rows * cols + (r0 + r) * cols + c0 + c)]);
    return out;
  }
  // "3 x 140x45 by rows / 2", for failure messages.
  std::string describe() const {
    return std::to_string(count) + " x " + std::to_string(rows) + "x" + std::to_string(cols) +
           (by_rows() ? " by rows / " : " by columns / ") + std::to_string(slices);
  }
};

}  // namespace glam::testing
