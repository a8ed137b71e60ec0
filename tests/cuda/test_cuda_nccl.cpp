// The NCCL communicator on one GPU: a one-rank communicator, bootstrapped through the single-process
// host communicator, runs every collective on device buffers through NCCL (several GPUs need MPI and
// as many devices; this checks the calls themselves: bootstrap, counts, types, the stream). With one
// rank every result equals its input, so an output left poisoned shows a wrong count or type.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "comm/communicator.h"
#include "comm/nccl_communicator.h"
#include "cuda_test_support.h"

namespace glam::testing {
namespace {

// Bytewise equality (a poisoned float is NaN, which no float comparison would match anyway).
template <class T>
void expect_same_bytes(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(T)), 0) << what;
}

TEST(CudaNccl, OneRankCollectivesOnDeviceBuffers) {
  GLAM_REQUIRE_CUDA_DEVICE();
  if (!exec::nccl_built()) GTEST_SKIP() << "this build has no NCCL";
  kernels::cuda_set_device(0);
  auto comm = exec::make_nccl_communicator(exec::make_single_communicator());
  ASSERT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->name(), "nccl");
  Random rnd;
  const size_t n = 4099;  // not a multiple of any vector width
  const auto x = rnd.normal(n);

  DeviceVec<float> f(x);
  comm->allreduce_sum(f.get(), static_cast<int64_t>(n));
  expect_same_bytes(f.download(), x, "all-reduce (float)");
  std::vector<double> xd(x.begin(), x.end());
  DeviceVec<double> d(xd);
  comm->allreduce_sum(d.get(), static_cast<int64_t>(n));
  expect_same_bytes(d.download(), xd, "all-reduce (double)");
  std::vector<int64_t> xi(n);
  for (size_t i = 0; i < n; ++i) xi[i] = static_cast<int64_t>(i) * 1000003 - 7;
  DeviceVec<int64_t> di(xi);
  comm->allreduce_sum(di.get(), static_cast<int64_t>(n));
  expect_same_bytes(di.download(), xi, "all-reduce (int64)");

  DeviceVec<float> recv(n);
  recv.poison();
  comm->alltoall(f.get(), recv.get(), static_cast<int64_t>(n * sizeof(float)));
  expect_same_bytes(recv.download(), x, "all-to-all");
  recv.poison();
  comm->allgather(f.get(), recv.get(), static_cast<int64_t>(n * sizeof(float)));
  expect_same_bytes(recv.download(), x, "all-gather");
  recv.poison();
  comm->reduce_scatter_sum(f.get(), recv.get(), static_cast<int64_t>(n));
  expect_same_bytes(recv.download(), x, "reduce-scatter");
  comm->broadcast(f.get(), static_cast<int64_t>(n * sizeof(float)), 0);
  comm->synchronize();
  expect_same_bytes(f.download(), x, "broadcast");

  // Host buffers (loss sums, error flags) go through the host communicator.
  std::vector<double> host = {1.5, -2.25};
  comm->allreduce_sum(host.data(), 2);
  EXPECT_EQ(host, (std::vector<double>{1.5, -2.25}));
  EXPECT_TRUE(comm->any(true));
  EXPECT_FALSE(comm->any(false));

  // A split (the calibration's groups) is a new NCCL communicator that works the same way.
  auto group = comm->split(0);
  ASSERT_NE(group, nullptr);
  EXPECT_EQ(group->name(), "nccl");
  recv.poison();
  group->alltoall(f.get(), recv.get(), static_cast<int64_t>(n * sizeof(float)));
  expect_same_bytes(recv.download(), x, "all-to-all of a split");
  EXPECT_EQ(comm->split(-1), nullptr);
  comm->barrier();
}

}  // namespace
}  // namespace glam::testing
