#include "comm/nccl_communicator.h"

#include <stdexcept>
#include <string>
#include <vector>

#ifdef GLAM_WITH_NCCL
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#endif

namespace glam::exec {

#ifdef GLAM_WITH_NCCL
namespace {

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL error in ") + what + ": " + ncclGetErrorString(r));
}
void check(cudaError_t r, const char* what) {
  if (r != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(r));
}

// ncclAlltoAll (NCCL 2.28 and later), looked up in the NCCL loaded at run time rather than linked: a
// program built against newer headers then still runs on an older NCCL (a GPU machine's own), with
// grouped send/receive. Null when the library lacks it.
using AlltoAllFn = ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t);
AlltoAllFn nccl_alltoall() {
  static const AlltoAllFn fn = [] {
    int version = 0;
    if (ncclGetVersion(&version) != ncclSuccess || version < 22800) return AlltoAllFn{nullptr};
    return reinterpret_cast<AlltoAllFn>(dlsym(RTLD_DEFAULT, "ncclAlltoAll"));
  }();
  return fn;
}

bool on_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// Whether a collective's buffers are device memory (NCCL) or host memory (the host communicator);
// one of each would have one library read memory it cannot reach. An empty buffer (null) takes the
// other's kind: a collective of zero bytes moves nothing.
bool both_on_device(const void* send, const void* recv, const char* what) {
  if (!send || !recv) return on_device(send ? send : recv);
  const bool device = on_device(send);
  if (device != on_device(recv))
    throw std::logic_error(std::string("NCCL communicator: ") + what + " from " + (device ? "device" : "host") +
                           " memory into " + (device ? "host" : "device") + " memory");
  return device;
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(std::unique_ptr<Communicator> host) : host_(std::move(host)) {
    ncclUniqueId id{};
    if (host_->rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host_->broadcast(&id, sizeof(id), 0);
    check(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()), "ncclCommInitRank");
  }
  ~NcclCommunicator() override {
    if (comm_) {
      cudaDeviceSynchronize();
      ncclCommDestroy(comm_);
    }
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string name() const override { return "nccl"; }

  void allreduce_sum(float* d, int64_t n) override { reduce(d, n, ncclFloat32, [&] { host_->allreduce_sum(d, n); }); }
  void allreduce_sum(double* d, int64_t n) override { reduce(d, n, ncclFloat64, [&] { host_->allreduce_sum(d, n); }); }
  void allreduce_sum(int64_t* d, int64_t n) override { reduce(d, n, ncclInt64, [&] { host_->allreduce_sum(d, n); }); }
  void allreduce_sum(kernels::bf16* d, int64_t n) override {
    reduce(d, n, ncclBfloat16, [&] { host_->allreduce_sum(d, n); });
  }
  // Host values (the tensor-parallel loss's row maxima), through the host communicator.
  void allreduce_max(double* d, int64_t n) override { host_->allreduce_max(d, n); }

  void alltoall(const void* send, void* recv, int64_t block_bytes) override {
    if (!both_on_device(send, recv, "all-to-all")) return host_->alltoall(send, recv, block_bytes);
    const size_t bb = static_cast<size_t>(block_bytes);
    if (AlltoAllFn direct = nccl_alltoall()) {
      check(direct(send, recv, bb, ncclInt8, comm_, stream_), "ncclAlltoAll");
      return;
    }
    check(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < size(); ++r) {
      check(ncclSend(static_cast<const char*>(send) + r * bb, bb, ncclInt8, r, comm_, stream_), "ncclSend");
      check(ncclRecv(static_cast<char*>(recv) + r * bb, bb, ncclInt8, r, comm_, stream_), "ncclRecv");
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
  }
  void allgather(const void* send, void* recv, int64_t block_bytes) override {
    if (!both_on_device(send, recv, "all-gather")) return host_->allgather(send, recv, block_bytes);
    check(ncclAllGather(send, recv, static_cast<size_t>(block_bytes), ncclInt8, comm_, stream_), "ncclAllGather");
  }
  void reduce_scatter_sum(const float* send, float* recv, int64_t count) override {
    if (!both_on_device(send, recv, "reduce-scatter")) return host_->reduce_scatter_sum(send, recv, count);
    check(ncclReduceScatter(send, recv, static_cast<size_t>(count), ncclFloat32, ncclSum, comm_, stream_),
          "ncclReduceScatter");
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    if (!on_device(data)) return host_->broadcast(data, bytes, root);
    check(ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclInt8, root, comm_, stream_), "ncclBroadcast");
  }
  void barrier() override {
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    host_->barrier();
  }
  void idle_barrier() override {
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    host_->idle_barrier();
  }
  void synchronize() override { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }
  // Pipeline messages go through host memory and the host communicator's buffered sends: NCCL's
  // send would hold the stream until the peer receives, and two stages that send to each other
  // before receiving would then wait for ever.
  void send(const void* data, int64_t bytes, int peer, int tag) override {
    if (!on_device(data)) return host_->send(data, bytes, peer, tag);
    std::vector<char> staged(static_cast<size_t>(bytes));
    check(cudaMemcpy(staged.data(), data, staged.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
    host_->send(staged.data(), bytes, peer, tag);  // (which takes its own copy)
  }
  void recv(void* data, int64_t bytes, int peer, int tag) override {
    if (!on_device(data)) return host_->recv(data, bytes, peer, tag);
    std::vector<char> staged(static_cast<size_t>(bytes));
    host_->recv(staged.data(), bytes, peer, tag);
    check(cudaMemcpy(data, staged.data(), staged.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  void wait_sends() override { host_->wait_sends(); }
  void send_and_wait(const void* data, int64_t bytes, int peer, int tag) override {
    if (!on_device(data)) return host_->send_and_wait(data, bytes, peer, tag);
    Communicator::send_and_wait(data, bytes, peer, tag);  // (staged: a copy is made anyway)
  }
  // A new NCCL communicator over the host communicator's split, bootstrapped like the first.
  std::unique_ptr<Communicator> split(int color) override {
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    auto host = host_->split(color);
    if (!host) return nullptr;
    return std::make_unique<NcclCommunicator>(std::move(host));
  }

 private:
  template <class T, class F>
  void reduce(T* d, int64_t n, ncclDataType_t type, F on_host) {
    if (n <= 0) return;
    if (!on_device(d)) return on_host();
    check(ncclAllReduce(d, d, static_cast<size_t>(n), type, ncclSum, comm_, stream_), "ncclAllReduce");
  }

  std::unique_ptr<Communicator> host_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;  // legacy default stream
};

}  // namespace

bool nccl_built() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host) {
  return std::make_unique<NcclCommunicator>(std::move(host));
}

#else

bool nccl_built() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>) {
  throw std::runtime_error("this build has no NCCL communicator (a CUDA build that finds nccl.h and libnccl)");
}

#endif

}  // namespace glam::exec
