#pragma once
// The execution context every kernel takes. Kernels receive raw device pointers, sizes and a
// `const KernelContext&`; the CPU backend uses the thread count, the CUDA backend will keep its
// cudaStream_t and cuBLAS handle here, so model code calls the same signatures on both. Every
// kernel entry point dispatches on `backend` (kernels/cpu/dispatch.h); CUDA code is in kernels/cuda/.
#include <cstdint>
#include <vector>

#include "bfloat16.h"

namespace glam::kernels {

enum class Backend { kCpu, kCuda };

// Arithmetic of the float matrix products on the CUDA backend: fp32, TF32 tensor cores, or bf16 inputs
// with fp32 accumulation (cuBLAS converts the fp32 operands). The CPU backend always computes in fp32.
enum class GemmPrecision { kFp32, kTf32, kBf16 };

// One matrix product as executed (for the matmul-efficiency benchmark).
struct GemmRecord {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  double seconds = 0;
  double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(batch); }
};

struct KernelContext {
  Backend backend = Backend::kCpu;
  int threads = 1;                       // CPU: threads for BLAS and elementwise loops
  void* stream = nullptr;                // CUDA: cudaStream_t
  void* blas_handle = nullptr;           // CUDA: cublasHandle_t
  std::vector<GemmRecord>* gemm_log = nullptr;  // when set, every product appends its shape and time
  GemmPrecision gemm_precision = GemmPrecision::kFp32;  // CUDA float products
  int device = -1;                       // CUDA: the device of the stream
};

// Makes the CPU context's thread count effective (OpenBLAS and the elementwise loops).
void set_cpu_threads(KernelContext& ctx, int threads);

// Waits until every kernel queued on the context has finished (a no-op on the CPU); timers call it.
void synchronize(const KernelContext& ctx);

}  // namespace glam::kernels
