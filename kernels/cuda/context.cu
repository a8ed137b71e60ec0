// The CUDA backend's context, memory and scratch (kernels/device.h, kernels/cuda/cuda_backend.h).
#include <cublas_v2.h>

#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"
#include "device.h"

namespace glam::kernels::cuda {

namespace {
std::atomic<bool> g_used{false};
// One scratch block per stream, freed with its context: contexts may live in several threads (the
// tensor-parallel GPU tests run a slice per thread), whose kernels would race on a shared block.
struct ScratchBlock {
  void* p = nullptr;
  size_t bytes = 0;
};
std::mutex g_scratch_mutex;
std::map<cudaStream_t, ScratchBlock> g_scratch;
}  // namespace

void throw_error(const char* expr, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error: ") + what + " in " + expr + " (" + file + ":" +
                           std::to_string(line) + ")");
}

namespace {
// An allocation's result `e` (of `bytes`), with DeviceOutOfMemory (what was asked, what is free) when
// the device is full.
void check_allocation(cudaError_t e, size_t bytes) {
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: clear it so that later calls do not report it
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    auto gib = [](size_t b) { return std::to_string(static_cast<double>(b) / (1u << 30)).substr(0, 6) + " GiB"; };
    throw DeviceOutOfMemory("GPU out of memory: " + gib(bytes) + " requested, " + gib(free_bytes) + " free of " +
                            gib(total_bytes));
  }
  GLAM_CUDA_CHECK(e);
}

void* device_malloc(size_t bytes) {
  void* p = nullptr;
  check_allocation(cudaMalloc(&p, bytes), bytes);
  return p;
}
}  // namespace

StreamBuffer::StreamBuffer(cudaStream_t s, size_t bytes) : s_(s) {
  if (bytes == 0) bytes = 1;
  check_allocation(cudaMallocAsync(&p_, bytes, s), bytes);
}

void* scratch(cudaStream_t s, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_scratch_mutex);
  ScratchBlock& b = g_scratch[s];
  if (bytes > b.bytes) {
    if (b.p) GLAM_CUDA_CHECK(cudaFree(b.p));
    b = ScratchBlock{};  // stays consistent if the allocation below throws
    const size_t want = bytes < (size_t{1} << 20) ? (size_t{1} << 20) : bytes + bytes / 4;
    b.p = device_malloc(want);
    b.bytes = want;
    g_used = true;
  }
  return b.p;
}

void synchronize(const KernelContext& ctx) { GLAM_CUDA_CHECK(cudaStreamSynchronize(stream_of(ctx))); }

void* alloc(size_t bytes) {
  void* p = device_malloc(bytes);
  GLAM_CUDA_CHECK(cudaMemset(p, 0, bytes));
  g_used = true;
  return p;
}

void free(void* p) { cudaFree(p); }  // no throw: called from destructors

void copy_bytes(void* dst, const void* src, size_t bytes) {
  // The legacy default stream waits for the (blocking) streams of the contexts, so this sees every
  // kernel queued before it. A device-to-device cudaMemcpy returns before the copy is done: wait.
  GLAM_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  GLAM_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}

bool used() { return g_used.load(); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

DeviceMemory memory() {
  size_t free_bytes = 0, total_bytes = 0;
  GLAM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return {static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
}

std::string no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
  }
  return n > 0 ? "" : "no CUDA device";
}

std::string device_name(int device) {
  cudaDeviceProp p{};
  GLAM_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return p.name;
}

std::string device_pci_bus_id(int device) {
  char id[32] = {};
  GLAM_CUDA_CHECK(cudaDeviceGetPCIBusId(id, static_cast<int>(sizeof id), device));
  return id;
}

int current_device() {
  int d = -1;
  GLAM_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void set_device(int device) { GLAM_CUDA_CHECK(cudaSetDevice(device)); }

void init_context(KernelContext& ctx) {
  if (device_count() == 0) throw std::runtime_error("no CUDA device");
  cudaStream_t s = nullptr;
  GLAM_CUDA_CHECK(cudaStreamCreate(&s));  // blocking: ordered with the legacy default stream
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate failed");
  if (cublasSetStream(h, s) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasSetStream failed");
  // Split-K partial sums stay in float32 where the output is bf16: by default cuBLAS may round them
  // to the output type, which the CPU reference (float32 accumulation, one rounding) never does.
  if (cublasSetMathMode(h, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error("cublasSetMathMode failed");
  ctx.backend = Backend::kCuda;
  ctx.stream = s;
  ctx.blas_handle = h;
  ctx.device = current_device();
  g_used = true;
}

void release_context(KernelContext& ctx) {
  if (ctx.backend != Backend::kCuda) return;
  cudaStreamSynchronize(stream_of(ctx));
  {
    // Before the stream goes: a context made meanwhile may be handed the same stream handle.
    std::lock_guard<std::mutex> lock(g_scratch_mutex);
    auto it = g_scratch.find(stream_of(ctx));
    if (it != g_scratch.end()) {
      cudaFree(it->second.p);
      g_scratch.erase(it);
    }
  }
  if (ctx.blas_handle) cublasDestroy(static_cast<cublasHandle_t>(ctx.blas_handle));
  if (ctx.stream) cudaStreamDestroy(stream_of(ctx));
  ctx.blas_handle = nullptr;
  ctx.stream = nullptr;
  ctx.backend = Backend::kCpu;
}

}  // namespace glam::kernels::cuda
