// The CUDA runtime and cuBLAS functions the CUDA backend calls, on the emulated device memory
// (device_memory.h): streams run their work at once, and the products are OpenBLAS's on float32
// copies of the operands (bf16 and TF32 operands rounded as the GPU's tensor cores take them).
// Declared by the toolkit's own headers, so a signature that drifts fails to build.
#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <sys/sysinfo.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bfloat16.h"
#include "device_memory.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace glam_emu {
namespace {

thread_local cudaError_t g_last_error = cudaSuccess;
int g_device = 0;

cudaError_t allocate(void** p, size_t bytes) {
  if (!p) return cudaErrorInvalidValue;
  *p = device_allocate(bytes);
  if (!*p) return g_last_error = cudaErrorMemoryAllocation;
  return cudaSuccess;
}

cudaError_t release(void* p) {
  if (!p) return cudaSuccess;
  return device_release(p) ? cudaSuccess : (g_last_error = cudaErrorInvalidValue);
}

// A copy that claims a direction checks it: device pointers must lie inside an allocation.
cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  if ((src_device && !on_device(src, bytes)) || (dst_device && !on_device(dst, bytes)))
    return g_last_error = cudaErrorInvalidValue;
  DeviceAccess open;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

using glam::kernels::bf16;
// An operand as the tensor cores read it: TF32 keeps 10 mantissa bits, bf16 7 (round to nearest even).
float rounded(float f, cublasComputeType_t compute) {
  if (compute == CUBLAS_COMPUTE_32F_FAST_16BF) return bf16::from_bits(bf16::round_to_bits(f));
  if (compute == CUBLAS_COMPUTE_32F_FAST_TF32) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {
      u += 0xfffu + ((u >> 13) & 1u);
      u &= ~0x1fffu;
    }
    std::memcpy(&f, &u, 4);
  }
  return f;
}

// A column-major cols x ld matrix of `type` as float32 (only the rows x cols the product reads).
std::vector<float> as_float(const void* p, cudaDataType type, int rows, int cols, int ld, cublasComputeType_t compute) {
  std::vector<float> out(static_cast<size_t>(ld) * static_cast<size_t>(cols > 0 ? cols : 0));
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) {
      const size_t at = static_cast<size_t>(j) * static_cast<size_t>(ld) + static_cast<size_t>(i);
      out[at] = type == CUDA_R_16BF ? bf16::from_bits(static_cast<const uint16_t*>(p)[at])
                                    : rounded(static_cast<const float*>(p)[at], compute);
    }
  return out;
}

CBLAS_TRANSPOSE blas_op(cublasOperation_t op) { return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

bool supported(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

cublasStatus_t gemm_ex(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* alpha,
                       const void* a, cudaDataType at, int lda, const void* b, cudaDataType bt, int ldb,
                       const void* beta, void* c, cudaDataType ct, int ldc, cublasComputeType_t compute) {
  if (!supported(at) || !supported(bt) || !supported(ct) || at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  DeviceAccess open;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
  const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
  const std::vector<float> af = as_float(a, at, a_rows, a_cols, lda, compute), bf = as_float(b, bt, b_rows, b_cols, ldb, compute);
  std::vector<float> cf(static_cast<size_t>(ldc) * static_cast<size_t>(n), 0.0f);
  // beta = 0: C is written, not read (cuBLAS's rule, so unwritten NaNs in C do not propagate).
  if (be != 0.0f) cf = as_float(c, ct, m, n, ldc, CUBLAS_COMPUTE_32F);
  cblas_sgemm(CblasColMajor, blas_op(ta), blas_op(tb), m, n, k, al, af.data(), lda, bf.data(), ldb, be, cf.data(), ldc);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      const size_t at_c = static_cast<size_t>(j) * static_cast<size_t>(ldc) + static_cast<size_t>(i);
      if (ct == CUDA_R_16BF) static_cast<uint16_t*>(c)[at_c] = bf16::round_to_bits(cf[at_c]);
      else static_cast<float*>(c)[at_c] = cf[at_c];
    }
  return CUBLAS_STATUS_SUCCESS;
}

size_t element_bytes(cudaDataType t) { return t == CUDA_R_16BF ? 2 : 4; }

}  // namespace

void set_launch_error(cudaError_t e) { g_last_error = e; }

}  // namespace glam_emu

using glam_emu::g_last_error;

extern "C" {

cudaError_t cudaMalloc(void** p, size_t bytes) { return glam_emu::allocate(p, bytes); }
cudaError_t cudaFree(void* p) { return glam_emu::release(p); }
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return glam_emu::allocate(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return glam_emu::release(p); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return glam_emu::copy(dst, src, bytes, kind);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return glam_emu::copy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes && !glam_emu::on_device(p, bytes)) return g_last_error = cudaErrorInvalidValue;
  glam_emu::DeviceAccess open;
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<char*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "error (CUDA emulator)";
  }
}
// One device, or GLAM_EMULATED_GPUS of them (a process per device, as with real GPUs and NCCL).
cudaError_t cudaGetDeviceCount(int* n) {
  const char* v = std::getenv("GLAM_EMULATED_GPUS");
  *n = v && std::atoi(v) > 0 ? std::atoi(v) : 1;
  return cudaSuccess;
}
namespace glam_emu {
namespace {
bool valid_device(int d) {
  int n = 0;
  cudaGetDeviceCount(&n);
  return d >= 0 && d < n;
}
}  // namespace
}  // namespace glam_emu

cudaError_t cudaGetDevice(int* d) {
  *d = glam_emu::g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (!glam_emu::valid_device(d)) return g_last_error = cudaErrorInvalidDevice;
  glam_emu::g_device = d;
  return cudaSuccess;
}
// The host's memory stands for the device's.
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  struct sysinfo s {};
  sysinfo(&s);
  *free_bytes = static_cast<size_t>(s.freeram + s.bufferram) * s.mem_unit;
  *total_bytes = static_cast<size_t>(s.totalram) * s.mem_unit;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!glam_emu::valid_device(device)) return g_last_error = cudaErrorInvalidDevice;
  *p = cudaDeviceProp{};
  std::strncpy(p->name, "CUDA emulator on the CPU", sizeof p->name - 1);
  p->major = 9, p->minor = 0;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetPCIBusId(char* id, int len, int device) {
  if (!glam_emu::valid_device(device)) return g_last_error = cudaErrorInvalidDevice;
  const std::string bus = "0000:0" + std::to_string(device % 10) + ":00.0";
  std::strncpy(id, bus.c_str(), static_cast<size_t>(len));
  if (len > 0) id[len - 1] = '\0';
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  *a = cudaPointerAttributes{};
  a->type = p && glam_emu::on_device(p, 1) ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  return cudaSuccess;
}

cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
// The emulator's products accumulate in float32 (or float64) and round once, as the mode asks.
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDgemm_v2(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const double* alpha, const double* a, int lda, const double* b, int ldb,
                              const double* beta, double* c, int ldc) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  glam_emu::DeviceAccess open;
  // beta = 0: C is not read (it may hold NaNs).
  if (*beta == 0.0)
    for (int j = 0; j < n; ++j) std::memset(c + static_cast<size_t>(j) * static_cast<size_t>(ldc), 0, sizeof(double) * static_cast<size_t>(m));
  cblas_dgemm(CblasColMajor, glam_emu::blas_op(ta), glam_emu::blas_op(tb), m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* a, int lda, long long sa,
                                         const double* b, int ldb, long long sb, const double* beta, double* c, int ldc,
                                         long long sc, int batch) {
  for (int i = 0; i < batch; ++i)
    cublasDgemm_v2(h, ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * sc, ldc);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* a, cudaDataType at, int lda, const void* b, cudaDataType bt,
                            int ldb, const void* beta, void* c, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  return glam_emu::gemm_ex(ta, tb, m, n, k, alpha, a, at, lda, b, bt, ldb, beta, c, ct, ldc, compute);
}
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* a, cudaDataType at, int lda,
                                          long long sa, const void* b, cudaDataType bt, int ldb, long long sb,
                                          const void* beta, void* c, cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t) {
  const auto* a8 = static_cast<const char*>(a);
  const auto* b8 = static_cast<const char*>(b);
  auto* c8 = static_cast<char*>(c);
  for (int i = 0; i < batch; ++i) {
    const cublasStatus_t s = glam_emu::gemm_ex(
        ta, tb, m, n, k, alpha, a8 + i * sa * static_cast<long long>(glam_emu::element_bytes(at)), at, lda,
        b8 + i * sb * static_cast<long long>(glam_emu::element_bytes(bt)), bt, ldb, beta,
        c8 + i * sc * static_cast<long long>(glam_emu::element_bytes(ct)), ct, ldc, compute);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
