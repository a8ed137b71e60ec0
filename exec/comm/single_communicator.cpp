#include <cstring>

#include "comm/communicator.h"

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
  void alltoall(const void* send, void* recv, int64_t block_bytes) override { copy(send, recv, block_bytes); }
  void allgather(const void* send, void* recv, int64_t block_bytes) override { copy(send, recv, block_bytes); }
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}

 private:
  static void copy(const void* src, void* dst, int64_t bytes) {
    if (src != dst && bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() { return std::make_unique<SingleCommunicator>(); }

}  // namespace glam::exec
