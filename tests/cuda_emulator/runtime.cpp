// The CUDA runtime and cuBLAS functions the CUDA backend calls, on host memory: "device" memory is
// host memory (filled with 0xff bytes when allocated, as a GPU's is left unwritten: a kernel that
// reads what nobody wrote gets NaNs), streams run their work at once, and the products are
// OpenBLAS's on float32 copies of the operands (bf16 and TF32 operands rounded as the GPU's tensor
// cores take them). Declared by the toolkit's own headers, so a signature that drifts fails to build.
#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <sys/sysinfo.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <mutex>
#include <vector>

#include "bfloat16.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace glam_emu {
namespace {

// Every allocation sits between guard bytes: 256 before it, and after it up to the next 256-byte
// boundary plus 256 more, all holding kGuardByte. A kernel that writes into them has written outside
// its buffer: the emulator checks them after every launch (check_guards).
constexpr size_t kGuardBytes = 256;
constexpr unsigned char kGuardByte = 0x5a;

std::mutex g_memory_mutex;
std::map<uintptr_t, size_t> g_allocations;  // start -> bytes
thread_local cudaError_t g_last_error = cudaSuccess;
int g_device = 0;

size_t padded(size_t bytes) { return (bytes + 255) / 256 * 256 + kGuardBytes; }

cudaError_t allocate(void** p, size_t bytes) {
  if (!p) return cudaErrorInvalidValue;
  auto* raw = static_cast<unsigned char*>(std::aligned_alloc(256, kGuardBytes + padded(bytes)));
  if (!raw) {
    g_last_error = cudaErrorMemoryAllocation;
    return cudaErrorMemoryAllocation;
  }
  unsigned char* user = raw + kGuardBytes;
  std::memset(raw, kGuardByte, kGuardBytes);
  std::memset(user, 0xff, bytes);
  std::memset(user + bytes, kGuardByte, padded(bytes) - bytes);
  *p = user;
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  g_allocations[reinterpret_cast<uintptr_t>(user)] = bytes;
  return cudaSuccess;
}

cudaError_t release(void* p) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  auto it = g_allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_allocations.end()) return g_last_error = cudaErrorInvalidValue;
  g_allocations.erase(it);
  std::free(static_cast<unsigned char*>(p) - kGuardBytes);
  return cudaSuccess;
}

// The first guard byte of [from, to) that no longer holds kGuardByte, or -1.
long first_changed(const unsigned char* from, const unsigned char* to) {
  for (const unsigned char* q = from; q < to; ++q)
    if (*q != kGuardByte) return q - from;
  return -1;
}

// Whether [p, p + bytes) lies in one allocation.
bool on_device(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocations.upper_bound(a);
  if (it == g_allocations.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

// A copy that claims a direction checks it: device pointers must lie inside an allocation.
cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  if ((src_device && !on_device(src, bytes)) || (dst_device && !on_device(dst, bytes)))
    return g_last_error = cudaErrorInvalidValue;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

uint16_t to_bf16_bits(float f) { return glam::kernels::bf16::round_to_bits(f); }
float from_bf16_bits(uint16_t b) { return glam::kernels::bf16::from_bits(b); }
// An operand as the tensor cores read it: TF32 keeps 10 mantissa bits, bf16 7 (round to nearest even).
float rounded(float f, cublasComputeType_t compute) {
  if (compute == CUBLAS_COMPUTE_32F_FAST_16BF) return from_bf16_bits(to_bf16_bits(f));
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
      out[at] = type == CUDA_R_16BF ? from_bf16_bits(static_cast<const uint16_t*>(p)[at])
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
      if (ct == CUDA_R_16BF) static_cast<uint16_t*>(c)[at_c] = to_bf16_bits(cf[at_c]);
      else static_cast<float*>(c)[at_c] = cf[at_c];
    }
  return CUBLAS_STATUS_SUCCESS;
}

size_t element_bytes(cudaDataType t) { return t == CUDA_R_16BF ? 2 : 4; }

}  // namespace

void set_launch_error(cudaError_t e) { g_last_error = e; }

void check_guards() {
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  for (const auto& [start, bytes] : g_allocations) {
    const auto* user = reinterpret_cast<const unsigned char*>(start);
    const long before = first_changed(user - kGuardBytes, user);
    const long after = first_changed(user + bytes, user + padded(bytes));
    if (before < 0 && after < 0) continue;
    const std::string where = after >= 0 ? "the first at byte " + std::to_string(after) + " after its end"
                                          : "the first at byte " + std::to_string(static_cast<long>(kGuardBytes) - before) +
                                                " before its start";
    // Restored, so that the next launch reports only what it does itself.
    std::memset(const_cast<unsigned char*>(user) - kGuardBytes, kGuardByte, kGuardBytes);
    std::memset(const_cast<unsigned char*>(user) + bytes, kGuardByte, padded(bytes) - bytes);
    throw std::runtime_error("CUDA emulator: the kernel wrote outside an allocation of " + std::to_string(bytes) +
                             " bytes, " + where);
  }
}

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
cudaError_t cudaGetDevice(int* d) {
  *d = glam_emu::g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  int n = 0;
  cudaGetDeviceCount(&n);
  if (d < 0 || d >= n) return g_last_error = cudaErrorInvalidDevice;
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
  int n = 0;
  cudaGetDeviceCount(&n);
  if (device < 0 || device >= n) return g_last_error = cudaErrorInvalidDevice;
  *p = cudaDeviceProp{};
  std::strncpy(p->name, "CUDA emulator on the CPU", sizeof p->name - 1);
  p->major = 9, p->minor = 0;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetPCIBusId(char* id, int len, int device) {
  int n = 0;
  cudaGetDeviceCount(&n);
  if (device < 0 || device >= n) return g_last_error = cudaErrorInvalidDevice;
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
cublasStatus_t cublasDgemm_v2(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const double* alpha, const double* a, int lda, const double* b, int ldb,
                              const double* beta, double* c, int ldc) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
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
