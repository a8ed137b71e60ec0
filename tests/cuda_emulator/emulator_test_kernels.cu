// Kernels that exercise the emulator itself (test_emulator.cpp), written as CUDA and built like
// kernels/cuda/*.cu: through launch_rewrite and the host compiler.
#include <cstdint>

#include "emulator_test_kernels.h"

namespace {

__global__ void lane_sums(const int* in, int* out, int* xor_partner, int* broadcast) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  int v = in[t];
  xor_partner[t] = __shfl_xor_sync(0xffffffffu, v, 1);
  broadcast[t] = __shfl_sync(0xffffffffu, v, 5);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[t] = v;
}

__global__ void votes(const int* in, int* all) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  all[t] = __all_sync(0xffffffffu, in[t] > 0);
}

// Every thread writes its slot, then reads its neighbour's: right only with the barrier between.
__global__ void neighbour(int* out, bool barrier) {
  __shared__ int slot[256];
  slot[threadIdx.x] = static_cast<int>(threadIdx.x) + 1000 * static_cast<int>(blockIdx.x);
  if (barrier) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

__global__ void dynamic_counts(int* out, int n) {
  extern __shared__ int count[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) count[i] = 0;
  __syncthreads();
  atomicAdd(&count[threadIdx.x % n], 1);
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < n) out[static_cast<int>(blockIdx.x) * n + static_cast<int>(threadIdx.x)] = count[threadIdx.x];
}

__global__ void barrier_in_a_branch(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

// Half a warp at the block barrier, the other half in a shuffle that needs the first half: no way on.
__global__ void barrier_against_shuffle(int* out) {
  int v = 1;
  if (threadIdx.x < 16) __syncthreads();
  else v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void lane_leaves_early(int* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

__global__ void write_at(int* out, int index) { out[index] = 7; }

// Each block's place in the order the blocks ran: counter[0] counts the blocks started.
__global__ void block_order(int* order, int* counter) {
  const int b = static_cast<int>((blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x);
  if (threadIdx.x == 0) order[b] = atomicAdd(counter, 1);
}

__global__ void coordinates(int* out) {
  const int t = ((blockIdx.y * gridDim.x + blockIdx.x) * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[t] = static_cast<int>(threadIdx.x + 10 * threadIdx.y + 100 * blockIdx.x + 1000 * blockIdx.y);
}

}  // namespace

namespace glam_emu_test {

void run_lane_sums(const int* in, int* out, int* xor_partner, int* broadcast, int blocks, int threads) {
  lane_sums<<<blocks, threads, 0, nullptr>>>(in, out, xor_partner, broadcast);
}
void run_votes(const int* in, int* all, int threads) { votes<<<1, threads, 0, nullptr>>>(in, all); }
void run_neighbour(int* out, int blocks, bool barrier) { neighbour<<<blocks, 256, 0, nullptr>>>(out, barrier); }
void run_dynamic_counts(int* out, int blocks, int n) {
  dynamic_counts<<<blocks, 128, sizeof(int) * n, nullptr>>>(out, n);
}
void run_barrier_in_a_branch(int* out) { barrier_in_a_branch<<<1, 64, 0, nullptr>>>(out); }
void run_barrier_against_shuffle(int* out) { barrier_against_shuffle<<<1, 32, 0, nullptr>>>(out); }
void run_lane_leaves_early(int* out) { lane_leaves_early<<<1, 32, 0, nullptr>>>(out); }
void run_coordinates(int* out) { coordinates<<<dim3(3, 2), dim3(4, 5), 0, nullptr>>>(out); }
void run_write_at(int* out, int index) { write_at<<<1, 1, 0, nullptr>>>(out, index); }
void run_block_order(int* order, int* counter) { block_order<<<dim3(7, 5, 3), 64, 0, nullptr>>>(order, counter); }
void run_too_many_threads(int* out) { coordinates<<<1, 2048, 0, nullptr>>>(out); }

}  // namespace glam_emu_test
