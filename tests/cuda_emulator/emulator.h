#pragma once
// A CUDA emulator for the CPU: kernels/cuda/*.cu compiled by the host compiler (after
// launch_rewrite turns each `kernel<<<grid, block, shared, stream>>>(args)` into a call of
// glam_emu::launch) run here, one block at a time, each GPU thread a fiber of its own with a real
// __syncthreads and real warp shuffles and votes. The CUDA runtime and cuBLAS functions the backend
// calls are implemented on host memory (runtime.cpp). So the GPU tests run on any machine: not the
// GPU's speed, rounding or memory model, but the kernels' indexing, launch shapes, block and warp
// synchronisation (a barrier that not every thread reaches, or a shuffle with exited lanes, is an
// error), and the host code around them.
//
// Force-included (-include) before every translated .cu file: the CUDA keywords are defined here
// before cuda_runtime.h would give them meanings a host compiler ignores.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One instance per kernel (and template instance) shared by every thread: right while the blocks
// of a launch run one after another and launches run one at a time (emulator.cpp).
#define __shared__ static

#include <cuda_runtime.h>
#include <math.h>  // the device math functions nvcc declares everywhere

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

namespace glam_emu {

// The running GPU thread's coordinates.
struct ThreadCoordinates {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
const ThreadCoordinates& coordinates();
// The running thread's lane in its warp (warps are formed from the linear thread index, as on a GPU).
int lane();

// Runs body once per thread of the grid (every block in turn, its threads as fibers), with
// `shared_bytes` of dynamic shared memory. Throws std::runtime_error naming the kernel's first failed
// synchronisation.
void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body);
// The running block's dynamic shared memory (launch_rewrite's `extern __shared__` arrays).
void* dynamic_shared();

inline dim3 to_dim3(const dim3& d) { return d; }
template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
dim3 to_dim3(I n) {
  return dim3(static_cast<unsigned>(n));
}

// What launch_rewrite writes for `kernel<<<grid, block, shared, stream>>>(args)`: the arguments are
// evaluated by each thread's call, as the rewrite places them inside `body`.
template <class G, class B, class Body>
void launch(G grid, B block, size_t shared_bytes, cudaStream_t /*stream*/, Body&& body) {
  run_grid(to_dim3(grid), to_dim3(block), shared_bytes, std::function<void()>(std::forward<Body>(body)));
}

// Block barrier, warp barrier, and one exchange among a warp's lanes (the lanes of `mask`): each lane
// gives `bytes` bytes and gets the whole warp's, 32 slots of 16 bytes.
void sync_block();
void sync_warp(unsigned mask);
const unsigned char* exchange_in_warp(unsigned mask, const void* value, size_t bytes);

template <class T>
T shfl(unsigned mask, T v, int src_lane, int width) {
  static_assert(sizeof(T) <= 16, "shuffle of more than 16 bytes");
  const unsigned char* all = exchange_in_warp(mask, &v, sizeof(T));
  const int base = lane() - lane() % width;
  T out;
  std::memcpy(&out, all + 16 * (base + (src_lane % width)), sizeof(T));
  return out;
}
template <class T>
T shfl_xor(unsigned mask, T v, int lane_mask, int width) {
  static_assert(sizeof(T) <= 16, "shuffle of more than 16 bytes");
  const unsigned char* all = exchange_in_warp(mask, &v, sizeof(T));
  const int me = lane(), src = me ^ lane_mask;
  // A source outside the lane's width-wide segment gives the lane's own value, as on the GPU.
  const int from = src / width == me / width ? src : me;
  T out;
  std::memcpy(&out, all + 16 * from, sizeof(T));
  return out;
}
int all_in_warp(unsigned mask, int predicate);

}  // namespace glam_emu

#define threadIdx (::glam_emu::coordinates().thread_idx)
#define blockIdx (::glam_emu::coordinates().block_idx)
#define blockDim (::glam_emu::coordinates().block_dim)
#define gridDim (::glam_emu::coordinates().grid_dim)

inline void __syncthreads() { ::glam_emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::glam_emu::sync_warp(mask); }
template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::glam_emu::shfl(mask, v, src_lane, width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::glam_emu::shfl_xor(mask, v, lane_mask, width);
}
inline int __all_sync(unsigned mask, int predicate) { return ::glam_emu::all_in_warp(mask, predicate); }

// One fiber runs at a time, and only a synchronisation switches fibers: a plain read-modify-write is
// atomic here.
template <class T>
T atomicAdd(T* address, T v) {
  const T old = *address;
  *address = old + v;
  return old;
}
