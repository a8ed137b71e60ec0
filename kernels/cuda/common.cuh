#pragma once
// Shared pieces of the CUDA kernels: error checks, the context's stream, launch sizes, reductions.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "kernel_context.h"

namespace glam::kernels::cuda {

[[noreturn]] void throw_error(const char* expr, const char* what, const char* file, int line);

#define GLAM_CUDA_CHECK(expr)                                                                        \
  do {                                                                                               \
    cudaError_t glam_err_ = (expr);                                                                  \
    if (glam_err_ != cudaSuccess)                                                                    \
      ::glam::kernels::cuda::throw_error(#expr, cudaGetErrorString(glam_err_), __FILE__, __LINE__); \
  } while (0)
#define GLAM_CUDA_LAUNCHED() GLAM_CUDA_CHECK(cudaGetLastError())

inline cudaStream_t stream_of(const KernelContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

// Device scratch memory of at least `bytes` for kernels on stream s, valid until the next call on s
// (kernels on one stream use it in turn; growing it frees the old block, which waits for the
// device). Each stream has its own block, freed with its context.
void* scratch(cudaStream_t s, size_t bytes);

// Device memory for one call's own use on stream s, returned to the pool in stream order: for
// buffers that must outlive the next scratch call on s (the tensor-parallel kernels' partial sums).
class StreamBuffer {
 public:
  StreamBuffer(cudaStream_t s, size_t bytes);  // DeviceOutOfMemory when the device has no room (context.cu)
  ~StreamBuffer() { (void)cudaFreeAsync(p_, s_); }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  double* doubles() const { return static_cast<double*>(p_); }

 private:
  cudaStream_t s_;
  void* p_ = nullptr;
};

// n doubles between the host and the device, in order with the stream's kernels. Both wait for the
// copy: the host values may be gone right after (an asynchronous copy from pageable memory is only
// "possibly synchronous").
inline void to_host(double* host, const double* device, int64_t n, cudaStream_t s) {
  GLAM_CUDA_CHECK(cudaMemcpyAsync(host, device, sizeof(double) * static_cast<size_t>(n), cudaMemcpyDeviceToHost, s));
  GLAM_CUDA_CHECK(cudaStreamSynchronize(s));
}
inline void to_device(double* device, const double* host, int64_t n, cudaStream_t s) {
  GLAM_CUDA_CHECK(cudaMemcpyAsync(device, host, sizeof(double) * static_cast<size_t>(n), cudaMemcpyHostToDevice, s));
  GLAM_CUDA_CHECK(cudaStreamSynchronize(s));
}

// 16 bytes of T (8 bf16, 4 float, 2 double) for one load or store: one bf16 or float per load keeps too
// few bytes in flight to reach the HBM's bandwidth on the elementwise passes.
template <class T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

template <class T>
__device__ __forceinline__ Pack<T> load_pack(const T* p, int64_t k) {
  return reinterpret_cast<const Pack<T>*>(p)[k];
}
template <class T>
__device__ __forceinline__ void store_pack(T* p, int64_t k, const Pack<T>& v) {
  reinterpret_cast<Pack<T>*>(p)[k] = v;
}

// Whether arrays of n elements (null ones ignored) can be read and written in packs: n a multiple of a
// pack and every array 16-byte aligned.
template <class T>
bool packs_fit(int64_t n, std::initializer_list<const T*> arrays) {
  if (n % Pack<T>::kSize != 0) return false;
  for (const T* a : arrays)
    if (a && reinterpret_cast<uintptr_t>(a) % alignof(Pack<T>) != 0) return false;
  return true;
}

// Threads for a block that strides over n items and sums over the block (block_sum): a warp per 32
// items, at most `most`. A short row gets no idle warps to wait at the block's barriers.
inline unsigned threads_for(int64_t n, int most) {
  const int64_t warps = (n + 31) / 32;
  return static_cast<unsigned>(32 * std::clamp<int64_t>(warps, 1, most / 32));
}

// Blocks for a grid-stride loop over n items.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > (int64_t{1} << 20)) b = int64_t{1} << 20;
  return static_cast<unsigned>(b);
}

#define GLAM_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{blockDim.x} * gridDim.x)

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    T u = __shfl_xor_sync(0xffffffffu, v, o);
    v = u > v ? u : v;
  }
  return v;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple of 32 (at most 1024).
template <class T>
__device__ T block_sum(T v) {
  __shared__ T sh[32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    T u = lane < nw ? sh[lane] : T(0);
    u = warp_sum(u);
    if (lane == 0) sh[0] = u;
  }
  __syncthreads();
  return sh[0];
}
template <class T>
__device__ T block_max(T v) {
  __shared__ T sh[32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    T u = lane < nw ? sh[lane] : sh[0];
    u = warp_max(u);
    __syncwarp();  // every lane has read sh[0] before lane 0 overwrites it (racecheck does not count shuffles)
    if (lane == 0) sh[0] = u;
  }
  __syncthreads();
  return sh[0];
}

// Column sums of a [chunks, cols] array of partial sums (one row per chunk of rows of a matrix), for
// a block of (32, 8) threads over columns blockIdx.x * 32 ..+ 32: each column's chunks strided over
// the 8 rows of threads, then added in shared memory in a fixed order. The sum of column
// blockIdx.x * 32 + threadIdx.x on the threads of row 0 (0 on the others and past cols). A thread per
// column over all the chunks left a 2,048-column matrix on 8 blocks, each thread adding hundreds of
// partial sums one after another (thousands for the 262,144-row embedding).
template <class A>
__device__ A column_sum_of_chunks(const A* partial, int64_t chunks, int64_t cols) {
  __shared__ A sh[8][33];
  const int64_t c = blockIdx.x * int64_t{32} + threadIdx.x;
  A s = 0;
  if (c < cols)
    for (int64_t j = threadIdx.y; j < chunks; j += 8) s += partial[j * cols + c];
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  A total = 0;
  if (threadIdx.y == 0 && c < cols)
    for (int j = 0; j < 8; ++j) total += sh[j][threadIdx.x];
  return total;
}
// Blocks of 32 columns over `cols` columns (the column-sum kernels and their partial sums).
inline unsigned column_blocks(int64_t cols) { return static_cast<unsigned>((cols + 31) / 32); }

__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dtanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dtanh(double x) { return tanh(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }

}  // namespace glam::kernels::cuda
