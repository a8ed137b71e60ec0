#include "comm/communicator.h"

#include "device.h"

namespace glam::exec {

namespace {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single"; }
  void allreduce_sum(float*, int64_t) override {}
  void allreduce_sum(double*, int64_t) override {}
  void allreduce_sum(int64_t*, int64_t) override {}
  void allreduce_sum(kernels::bf16*, int64_t) override {}
  void allreduce_max(double*, int64_t) override {}
  void alltoall(const void* send, void* recv, int64_t block_bytes) override { copy(send, recv, block_bytes); }
  void allgather(const void* send, void* recv, int64_t block_bytes) override { copy(send, recv, block_bytes); }
  void reduce_scatter_sum(const float* send, float* recv, int64_t count) override {
    copy(send, recv, count * static_cast<int64_t>(sizeof(float)));
  }
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color) override {
    return color < 0 ? nullptr : std::make_unique<SingleCommunicator>();
  }

 private:
  // Host or device memory alike (the CUDA step's buffers are on the device).
  static void copy(const void* src, void* dst, int64_t bytes) {
    if (src != dst && bytes > 0) kernels::copy_bytes(dst, src, static_cast<size_t>(bytes));
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() { return std::make_unique<SingleCommunicator>(); }

}  // namespace glam::exec
