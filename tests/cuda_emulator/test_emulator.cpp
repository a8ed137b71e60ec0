// The CUDA emulator against what a GPU does: shuffles, votes, barriers, dynamic shared memory, thread
// coordinates; and the errors it reports for what a GPU leaves undefined or refuses.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "emulator_test_kernels.h"

namespace {

class DeviceInts {
 public:
  explicit DeviceInts(size_t n) : n_(n) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(int)), cudaSuccess); }
  explicit DeviceInts(const std::vector<int>& v) : DeviceInts(v.size()) {
    EXPECT_EQ(cudaMemcpy(p_, v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceInts() { cudaFree(p_); }
  int* get() { return p_; }
  std::vector<int> read() const {
    std::vector<int> v(n_);
    EXPECT_EQ(cudaMemcpy(v.data(), p_, n_ * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }

 private:
  int* p_ = nullptr;
  size_t n_;
};

TEST(CudaEmulator, ShufflesExchangeWithinEachWarp) {
  const int blocks = 2, threads = 96, n = blocks * threads;
  std::vector<int> in(n);
  for (int i = 0; i < n; ++i) in[static_cast<size_t>(i)] = i * i % 97;
  DeviceInts d_in(in), sums(n), partner(n), broadcast(n);
  glam_emu_test::run_lane_sums(d_in.get(), sums.get(), partner.get(), broadcast.get(), blocks, threads);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const auto s = sums.read(), p = partner.read(), b = broadcast.read();
  for (int i = 0; i < n; ++i) {
    const int warp = i / 32 * 32;
    int want = 0;
    for (int l = 0; l < 32; ++l) want += in[static_cast<size_t>(warp + l)];
    EXPECT_EQ(s[static_cast<size_t>(i)], want) << i;
    EXPECT_EQ(p[static_cast<size_t>(i)], in[static_cast<size_t>(i ^ 1)]) << i;
    EXPECT_EQ(b[static_cast<size_t>(i)], in[static_cast<size_t>(warp + 5)]) << i;
  }
}

TEST(CudaEmulator, VotesAreOverTheWarp) {
  std::vector<int> in(64, 1);
  in[40] = 0;  // the second warp has one lane false
  DeviceInts d_in(in), all(64);
  glam_emu_test::run_votes(d_in.get(), all.get(), 64);
  const auto a = all.read();
  for (int i = 0; i < 64; ++i) EXPECT_EQ(a[static_cast<size_t>(i)], i < 32 ? 1 : 0) << i;
}

TEST(CudaEmulator, SyncthreadsOrdersSharedMemoryAndItsAbsenceShows) {
  DeviceInts out(512);
  glam_emu_test::run_neighbour(out.get(), 2, true);
  auto o = out.read();
  for (int i = 0; i < 512; ++i) EXPECT_EQ(o[static_cast<size_t>(i)], (i % 256 + 1) % 256 + 1000 * (i / 256)) << i;
  // Without the barrier, thread 0 reads slot 1 before thread 1 has written it (the first block reads
  // what no thread wrote yet; the shared array starts the launch as the last one left it).
  glam_emu_test::run_neighbour(out.get(), 2, false);
  o = out.read();
  int wrong = 0;
  for (int i = 0; i < 512; ++i) wrong += o[static_cast<size_t>(i)] != (i % 256 + 1) % 256 + 1000 * (i / 256);
  EXPECT_GT(wrong, 0);
}

TEST(CudaEmulator, DynamicSharedMemoryHasTheLaunchsSize) {
  const int n = 48, blocks = 3;
  DeviceInts out(static_cast<size_t>(n * blocks));
  glam_emu_test::run_dynamic_counts(out.get(), blocks, n);
  const auto o = out.read();
  for (int b = 0; b < blocks; ++b)
    for (int i = 0; i < n; ++i) EXPECT_EQ(o[static_cast<size_t>(b * n + i)], i < 128 % n ? 3 : 2) << b << " " << i;
}

TEST(CudaEmulator, ThreadAndBlockCoordinates) {
  DeviceInts out(6 * 20);
  glam_emu_test::run_coordinates(out.get());
  const auto o = out.read();
  for (int by = 0; by < 2; ++by)
    for (int bx = 0; bx < 3; ++bx)
      for (int ty = 0; ty < 5; ++ty)
        for (int tx = 0; tx < 4; ++tx) {
          const int t = ((by * 3 + bx) * 5 + ty) * 4 + tx;
          EXPECT_EQ(o[static_cast<size_t>(t)], tx + 10 * ty + 100 * bx + 1000 * by);
        }
}

// A GPU runs a grid's blocks in no promised order: each launch here takes another order, so a kernel
// whose blocks depend on each other's order fails here rather than racing on the GPU.
TEST(CudaEmulator, BlocksRunInAnOrderOfTheirOwnAtEachLaunch) {
  const int blocks = 7 * 5 * 3;
  std::vector<std::vector<int>> orders;
  for (int launch = 0; launch < 2; ++launch) {
    DeviceInts order(blocks), counter(std::vector<int>{0});
    glam_emu_test::run_block_order(order.get(), counter.get());
    EXPECT_EQ(counter.read()[0], blocks);
    std::vector<int> o = order.read(), sorted = o;
    std::sort(sorted.begin(), sorted.end());
    for (int b = 0; b < blocks; ++b) ASSERT_EQ(sorted[static_cast<size_t>(b)], b) << "each block runs once";
    orders.push_back(o);
  }
  std::vector<int> in_index_order(blocks);
  for (int b = 0; b < blocks; ++b) in_index_order[static_cast<size_t>(b)] = b;
  EXPECT_NE(orders[0], in_index_order);
  EXPECT_NE(orders[1], in_index_order);
  EXPECT_NE(orders[0], orders[1]);
}

void expect_error(void (*launch)(int*), const std::string& what) {
  DeviceInts out(64);
  try {
    launch(out.get());
    FAIL() << "no error; expected: " << what;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

// Threads that finish stop counting for __syncthreads, as on a GPU since Volta: the 16 that wait open it.
TEST(CudaEmulator, FinishedThreadsLetABarrierOpen) {
  DeviceInts out(64);
  glam_emu_test::run_barrier_in_a_branch(out.get());
  const auto o = out.read();
  for (int i = 0; i < 64; ++i) EXPECT_EQ(o[static_cast<size_t>(i)], 1);
}

TEST(CudaEmulator, WaitingForEverIsAnError) {
  expect_error(glam_emu_test::run_barrier_against_shuffle, "waits for ever");
}

TEST(CudaEmulator, AShuffleWithAFinishedLaneIsAnError) {
  // Reported when the lane finishes with others already waiting for it, or when a later one arrives.
  expect_error(glam_emu_test::run_lane_leaves_early, "finished");
}

TEST(CudaEmulator, ALaunchBeyondTheLimitsFailsLikeOnAGpu) {
  DeviceInts out(64);
  glam_emu_test::run_too_many_threads(out.get());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
}

TEST(CudaEmulator, AWriteOutsideItsAllocationIsAnError) {
  DeviceInts out(10);
  glam_emu_test::run_write_at(out.get(), 9);  // the last element: fine
  EXPECT_EQ(out.read()[9], 7);
  for (int index : {10, 70, -1}) {
    DeviceInts fresh(10);
    try {
      glam_emu_test::run_write_at(fresh.get(), index);
      ADD_FAILURE() << "no error for a write at " << index;
    } catch (const std::runtime_error& e) {
      const std::string want = index < 0 ? "the first at byte 4 before its start"
                                         : "the first at byte " + std::to_string(4 * (index - 10)) + " after its end";
      EXPECT_NE(std::string(e.what()).find("wrote outside an allocation of 40 bytes, " + want), std::string::npos) << e.what();
    }
  }
}

// On a GPU, host code that dereferences a device pointer crashes or reads garbage; here it dies with
// the emulator's message, and the same access inside a copy is fine.
TEST(CudaEmulatorDeathTest, HostCodeTouchingDeviceMemoryDies) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceInts d(4);
  int* p = d.get();
  EXPECT_DEATH({ std::printf("%d\n", *static_cast<volatile int*>(p)); }, "host code read or wrote device memory");
  EXPECT_DEATH({ *static_cast<volatile int*>(p) = 1; }, "host code read or wrote device memory");
  EXPECT_EQ(d.read()[0], -1);
}

TEST(CudaEmulator, CopiesClaimingADeviceSideAreChecked) {
  DeviceInts d(8);
  std::vector<int> host(16, 0);
  EXPECT_EQ(cudaMemcpy(d.get(), host.data(), 16 * sizeof(int), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d.get(), 8 * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(host[0], -1);  // fresh device memory reads as 0xff bytes
}

}  // namespace
