#include "calibrate/microbench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "device.h"
#include "gemm.h"

namespace glam::exec {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Median seconds of `once()`, repeated for at least `min_seconds` (3 to 1000 samples).
double median_seconds(const std::function<void()>& once, double min_seconds) {
  once();  // warm
  std::vector<double> t;
  const double start = now_s();
  while (t.size() < 3 || (now_s() - start < min_seconds && t.size() < 1000)) {
    const double t0 = now_s();
    once();
    t.push_back(now_s() - t0);
  }
  return median(t);
}

// Runs body(begin, end) over [0, n) split into `threads` parts, `reps` times per part, and
// returns the wall time; parts run in their own threads (the calling thread takes the first).
double timed_parallel(int threads, size_t n, int reps, const std::function<void(size_t, size_t)>& body) {
  const double t0 = now_s();
  auto part = [&](int i) {
    const size_t b = n * static_cast<size_t>(i) / static_cast<size_t>(threads);
    const size_t e = n * static_cast<size_t>(i + 1) / static_cast<size_t>(threads);
    for (int r = 0; r < reps; ++r) body(b, e);
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(part, i);
  part(0);
  for (auto& th : pool) th.join();
  return now_s() - t0;
}

double stream_rate(int threads, double bytes, double min_seconds, int arrays) {
  threads = std::max(1, threads);
  const size_t n = std::max<size_t>(1024, static_cast<size_t>(bytes / (4.0 * arrays)));
  std::vector<float> a(n, 0.f), b(n, 1.f), c(n, 2.f);
  const float s = 0.5f;
  std::function<void(size_t, size_t)> body;
  if (arrays == 3)
    body = [&](size_t lo, size_t hi) {
      float* __restrict pa = a.data();
      const float* __restrict pb = b.data();
      const float* __restrict pc = c.data();
      for (size_t i = lo; i < hi; ++i) pa[i] = pb[i] + s * pc[i];
    };
  else
    body = [&](size_t lo, size_t hi) { std::memcpy(a.data() + lo, b.data() + lo, (hi - lo) * sizeof(float)); };
  // Repeats per timed batch: at least ~5 ms of work, so thread start-up does not count.
  const double one = timed_parallel(threads, n, 1, body);
  const int reps = static_cast<int>(std::clamp(0.005 / std::max(one, 1e-9), 1.0, 10000.0));
  std::vector<double> rates;
  const double start = now_s();
  while (rates.size() < 3 || (now_s() - start < min_seconds && rates.size() < 200)) {
    const double t = timed_parallel(threads, n, reps, body);
    rates.push_back(4.0 * arrays * static_cast<double>(n) * reps / t);
  }
  return median(rates);
}

}  // namespace

// Operands on a backend, freed on scope exit.
class Buffer {
 public:
  Buffer(kernels::Backend b, size_t bytes) : backend_(b), p_(kernels::device_alloc(b, bytes)) {}
  template <class T>
  Buffer(kernels::Backend b, size_t count, T fill) : Buffer(b, count * sizeof(T)) {
    const std::vector<T> host(count, fill);
    kernels::copy_bytes(p_, host.data(), count * sizeof(T));
  }
  ~Buffer() { kernels::device_free(backend_, p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  kernels::Backend backend_;
  void* p_;
};

namespace {
template <class T>
double gemm_rate_of(const kernels::KernelContext& ctx, const GemmShape& s, double min_seconds) {
  const size_t a_n = static_cast<size_t>(s.m * s.k * s.batch), b_n = static_cast<size_t>(s.k * s.n * s.batch),
               c_n = static_cast<size_t>(s.m * s.n * s.batch);
  // Non-zero operands: tensor cores draw less power, and may clock higher, on zeros.
  Buffer a(ctx.backend, a_n, T(0.5f)), b(ctx.backend, b_n, T(0.25f)), c(ctx.backend, c_n * sizeof(T));
  const int64_t lda = s.trans_a ? s.m : s.k, ldb = s.trans_b ? s.k : s.n;
  auto once = [&] {
    if (s.batch == 1)
      kernels::gemm<T>(ctx, s.trans_a, s.trans_b, s.m, s.n, s.k, 1, a.as<T>(), lda, b.as<T>(), ldb, 0, c.as<T>(), s.n);
    else
      kernels::gemm_strided_batched<T>(ctx, s.trans_a, s.trans_b, s.m, s.n, s.k, 1, a.as<T>(), lda, s.m * s.k,
                                       b.as<T>(), ldb, s.k * s.n, 0, c.as<T>(), s.n, s.m * s.n, s.batch);
    kernels::synchronize(ctx);
  };
  return s.flops() / median_seconds(once, min_seconds);
}
}  // namespace

double gemm_rate(const kernels::KernelContext& ctx, const GemmShape& s, double min_seconds) {
  // bf16 precision: bf16 operands and output, as the bf16 model's products
  return ctx.gemm_precision == kernels::GemmPrecision::kBf16 ? gemm_rate_of<kernels::bf16>(ctx, s, min_seconds)
                                                             : gemm_rate_of<float>(ctx, s, min_seconds);
}

double triad_rate(int threads, double bytes, double min_seconds) { return stream_rate(threads, bytes, min_seconds, 3); }
double copy_rate(int threads, double bytes, double min_seconds) { return stream_rate(threads, bytes, min_seconds, 2); }

double device_copy_rate(double bytes, double min_seconds) {
  const size_t n = static_cast<size_t>(bytes);
  Buffer a(kernels::Backend::kCuda, n), b(kernels::Backend::kCuda, n);
  return 2.0 * static_cast<double>(n) /
         median_seconds([&] { kernels::copy_bytes(a.as<void>(), b.as<void>(), n); }, min_seconds);
}

std::vector<CollectivePoint> collective_times(Communicator& comm, CollectiveKind kind,
                                              const std::vector<double>& buffer_bytes, double min_seconds,
                                              kernels::Backend backend) {
  const int ranks = comm.size();
  std::vector<CollectivePoint> out;
  for (double requested : buffer_bytes) {
    // Whole floats in each rank's block.
    const int64_t block = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(requested / (4.0 * ranks)))) * 4;
    const int64_t buffer = block * ranks;
    Buffer send(backend, static_cast<size_t>(buffer)), recv(backend, static_cast<size_t>(buffer));
    auto once = [&] {
      switch (kind) {
        case CollectiveKind::kAllToAll: comm.alltoall(send.as<void>(), recv.as<void>(), block); break;
        case CollectiveKind::kAllReduce: comm.allreduce_sum(send.as<float>(), buffer / 4); break;
        case CollectiveKind::kReduceScatter: comm.reduce_scatter_sum(send.as<float>(), recv.as<float>(), block / 4); break;
        case CollectiveKind::kAllGather: comm.allgather(send.as<void>(), recv.as<void>(), block); break;
        case CollectiveKind::kSendRecv:  // pipeline sends are costed from the link figures alone
          throw std::invalid_argument("collective_times: point-to-point sends are not measured");
      }
      comm.synchronize();
    };
    once();  // warm (NCCL sets up its channels on the first call)
    // Every rank runs the same number of repeats (agreed on rank 0's clock), each after a barrier.
    std::vector<double> t;
    const double start = now_s();
    for (;;) {
      int64_t go = comm.rank() == 0 && (t.size() < 21 || (now_s() - start < min_seconds && t.size() < 2000)) ? 1 : 0;
      comm.broadcast(&go, sizeof go, 0);
      if (!go) break;
      comm.barrier();
      const double t0 = now_s();
      once();
      t.push_back(now_s() - t0);
    }
    double m = median(t);
    comm.allreduce_sum(&m, 1);
    out.push_back({static_cast<double>(buffer), m / ranks});
  }
  return out;
}

}  // namespace glam::exec
