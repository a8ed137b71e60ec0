#pragma once
// Helpers of the GPU tests: skip without a device, device vectors that upload, download and poison,
// fresh random inputs (the seed is printed), and comparisons with relative tolerances.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "device.h"
#include "kernel_context.h"

namespace glam::testing {

// Built with GLAM_GPU_TESTS_ON_CPU (tests/cuda/CMakeLists.txt), the GPU tests run on the CPU backend:
// "device" memory and contexts are the CPU's. That checks the tests themselves (their inputs,
// indexing, poisoning and tolerances against the float64 references) on every machine, so that a
// GPU session's failures are the GPU's.
#ifdef GLAM_GPU_TESTS_ON_CPU
inline constexpr kernels::Backend kDeviceBackend = kernels::Backend::kCpu;
inline bool have_cuda_device() { return true; }
#else
inline constexpr kernels::Backend kDeviceBackend = kernels::Backend::kCuda;
inline bool have_cuda_device() { return kernels::cuda_device_count() > 0; }
#endif

#define GLAM_REQUIRE_CUDA_DEVICE() \
  if (!::glam::testing::have_cuda_device()) GTEST_SKIP() << "no CUDA device (" << ::glam::kernels::cuda_no_device_reason() << ")"

// A vector in device memory of the CUDA backend.
template <class T>
class DeviceVec {
 public:
  explicit DeviceVec(size_t n) : n_(n) { p_ = static_cast<T*>(kernels::device_alloc(kDeviceBackend, bytes())); }
  explicit DeviceVec(const std::vector<T>& host) : DeviceVec(host.size()) { upload(host); }
  ~DeviceVec() { kernels::device_free(kDeviceBackend, p_); }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  T* get() { return p_; }
  const T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& host) {
    EXPECT_EQ(host.size(), n_);
    kernels::copy_bytes(p_, host.data(), bytes());
  }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    kernels::copy_bytes(h.data(), p_, bytes());
    return h;
  }
  // Fills every byte with 0xff: NaN for floating point, -1 for integers (use poison_int for outputs
  // where -1 is a valid value).
  void poison() {
    std::vector<unsigned char> b(bytes(), 0xff);
    kernels::copy_bytes(p_, b.data(), bytes());
  }
  void poison_int(T v) { upload(std::vector<T>(n_, v)); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

class Random {
 public:
  Random() : seed_(std::random_device{}()), gen_(seed_) {}
  uint64_t seed() const { return seed_; }
  std::vector<float> normal(size_t n, double sd = 1.0, double mean = 0.0) {
    std::normal_distribution<double> d(mean, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(d(gen_));
    return v;
  }
  std::vector<float> uniform(size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(d(gen_));
    return v;
  }
  std::vector<int32_t> ints(size_t n, int32_t below) {
    std::vector<int32_t> v(n);
    for (auto& x : v) x = static_cast<int32_t>(gen_() % static_cast<uint64_t>(below));
    return v;
  }
  std::mt19937_64& gen() { return gen_; }

 private:
  uint64_t seed_;
  std::mt19937_64 gen_;
};

inline std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// Every value finite (poisoned elements were written) and |got - want| <= atol + rtol * scale, where
// scale is max |want| over the vector (relative to the output's magnitude) unless elementwise.
inline void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rtol,
                         const std::string& what, double atol = 0, bool elementwise = false) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  size_t bad = 0, first = got.size();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = atol + rtol * (elementwise ? std::abs(want[i]) : scale);
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!std::isfinite(got[i]) || err > tol) {
      if (first == got.size()) first = i;
      ++bad;
    }
    if (std::isfinite(got[i])) worst = std::max(worst, scale > 0 ? err / scale : err);
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements off; first at " << first
                     << " (got " << (first < got.size() ? got[first] : 0.0f) << ", want "
                     << (first < got.size() ? want[first] : 0.0) << "); worst relative error " << worst;
}

// A float32 sum of many terms, taken in an order the test does not know (atomics, warps, blocks):
// per element |got - want| <= 64 u sum|terms| (u = 2^-24), where want and abs_sum are the float64 sums
// of the same terms and of their magnitudes. A sum of cancelling terms is judged by its terms' size, not
// by its own, and a dropped or misplaced term larger than that shows.
inline void expect_sum_close(const std::vector<float>& got, const std::vector<double>& want,
                             const std::vector<double>& abs_sum, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(abs_sum.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = 64 * 0x1p-24 * abs_sum[i];
    ASSERT_TRUE(std::isfinite(got[i]) && std::abs(static_cast<double>(got[i]) - want[i]) <= tol)
        << what << ": element " << i << " got " << got[i] << ", want " << want[i] << " within " << tol;
  }
}

// The relative position bias's gradient by hand, in float64: dbias[bucket[i - j] * heads + h] of
// `start` plus the scores' gradient `ds` ([batch, heads, t, t], keys j <= i), and the sums of the
// magnitudes of the same terms (for expect_sum_close).
template <class T>
std::pair<std::vector<double>, std::vector<double>> bias_gradient_sums(const std::vector<T>& ds,
                                                                       const std::vector<int32_t>& bucket,
                                                                       const std::vector<float>& start, int64_t heads,
                                                                       int64_t t) {
  std::vector<double> sum(start.begin(), start.end()), abs_sum(start.size());
  for (size_t k = 0; k < start.size(); ++k) abs_sum[k] = std::abs(static_cast<double>(start[k]));
  const int64_t rows = static_cast<int64_t>(ds.size()) / t;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % t, h = (r / t) % heads;
    for (int64_t j = 0; j <= i; ++j) {
      const double v = static_cast<double>(static_cast<float>(ds[static_cast<size_t>(r * t + j)]));
      const size_t k = static_cast<size_t>(bucket[static_cast<size_t>(i - j)] * heads + h);
      sum[k] += v, abs_sum[k] += std::abs(v);
    }
  }
  return {sum, abs_sum};
}

// Adafactor's updates themselves, elements [first, last), which are small next to the weights: a wrong
// step size shows here. `before` are the weights before the steps, `got` the GPU's after, `want` the CPU's.
inline void expect_updates_close(const std::vector<float>& got, const std::vector<float>& before,
                                 const std::vector<double>& want, size_t first, size_t last, const std::string& what) {
  std::vector<float> got_delta(last - first);
  std::vector<double> want_delta(last - first);
  for (size_t i = first; i < last; ++i)
    got_delta[i - first] = got[i] - before[i], want_delta[i - first] = want[i] - static_cast<double>(before[i]);
  expect_close(got_delta, want_delta, 2e-3, what);
}

// A CUDA context for a test fixture (a CPU one under GLAM_GPU_TESTS_ON_CPU).
class CudaContext {
 public:
  CudaContext() {
    if (kDeviceBackend == kernels::Backend::kCuda) kernels::init_cuda_context(ctx);
  }
  ~CudaContext() {
    if (kDeviceBackend == kernels::Backend::kCuda) kernels::release_cuda_context(ctx);
  }
  kernels::KernelContext ctx;
};

// A kernel test: a CUDA context, a CPU context for the reference, and fresh random inputs whose seed
// is printed and recorded. Skipped without a device.
class GpuKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GLAM_REQUIRE_CUDA_DEVICE();
    gpu_ = std::make_unique<CudaContext>();
    RecordProperty("seed", std::to_string(rnd_.seed()));
    std::cout << "random seed " << rnd_.seed() << "\n";
  }
  const kernels::KernelContext& gpu() { return gpu_->ctx; }
  kernels::KernelContext cpu_;
  std::unique_ptr<CudaContext> gpu_;
  Random rnd_;
};

}  // namespace glam::testing
