#pragma once
// The collectives the executor needs, behind one interface: an MPI implementation for CPUs
// (mpi_communicator.h), a single-process one, and an NCCL one for GPUs (nccl_communicator.h). Buffers are device
// pointers of the backend in use.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bfloat16.h"

namespace glam::exec {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "single", "mpi", ...

  virtual void allreduce_sum(float* data, int64_t n) = 0;
  virtual void allreduce_sum(double* data, int64_t n) = 0;
  virtual void allreduce_sum(int64_t* data, int64_t n) = 0;
  // bf16 activations (tensor parallelism's partial sums), added in float32 and rounded per addition.
  virtual void allreduce_sum(kernels::bf16* data, int64_t n) = 0;
  virtual void allreduce_max(double* data, int64_t n) = 0;
  // Equal blocks: send + r*block_bytes goes to rank r; recv + r*block_bytes arrives from rank r.
  virtual void alltoall(const void* send, void* recv, int64_t block_bytes) = 0;
  // recv + r*block_bytes receives rank r's block.
  virtual void allgather(const void* send, void* recv, int64_t block_bytes) = 0;
  // Sums `send` (size() x count floats) over the ranks; rank r receives block r of the sum in recv.
  virtual void reduce_scatter_sum(const float* send, float* recv, int64_t count) = 0;
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // A barrier that sleeps while it waits instead of spinning, so that ranks waiting for one rank
  // that measures alone leave it every core.
  virtual void idle_barrier() { barrier(); }
  // Waits until the collectives this rank issued have finished (NCCL queues them on a stream;
  // MPI's return finished). Timers call it.
  virtual void synchronize() {}
  // Collective: the ranks with the same color >= 0 form a new communicator, ordered by rank;
  // ranks with a negative color get nullptr. The calibration measures smaller groups this way.
  virtual std::unique_ptr<Communicator> split(int color) = 0;

  // Point to point, between pipeline stages. `send` takes a copy of the buffer and returns at once;
  // the message is delivered when `peer` receives it (buffered: two stages that send to each other
  // before receiving do not deadlock). `recv` waits for the message. Messages from one rank to another
  // with the same tag arrive in the order they were sent. Tags are at most kMaxTag.
  static constexpr int kMaxTag = 32767;  // the least upper bound MPI guarantees
  // (Pipeline stages need a communicator that reaches other processes: MPI.)
  virtual void send(const void* /*data*/, int64_t /*bytes*/, int peer, int /*tag*/) {
    throw std::logic_error("the " + name() + " communicator has no point-to-point messages (send to rank " +
                           std::to_string(peer) + ")");
  }
  virtual void recv(void* /*data*/, int64_t /*bytes*/, int peer, int /*tag*/) {
    throw std::logic_error("the " + name() + " communicator has no point-to-point messages (receive from rank " +
                           std::to_string(peer) + ")");
  }
  // Waits until every message this rank sent has been received.
  virtual void wait_sends() {}
  // A send that returns once the message has left `data`, without a copy of it (for large messages that
  // could not be held twice).
  virtual void send_and_wait(const void* data, int64_t bytes, int peer, int tag) {
    send(data, bytes, peer, tag);
    wait_sends();
  }

  // Collective: rank 0 gets every rank's `bytes` (by rank; empty ones too), the others an empty list.
  // Over sends, so no pass messages may be in flight.
  std::vector<std::string> gather_at_root(std::string bytes) {
    if (size() == 1) {
      std::vector<std::string> mine;
      mine.push_back(std::move(bytes));
      return mine;
    }
    constexpr int kTag = kMaxTag;  // apart from the pipeline passes' tags
    if (rank() != 0) {
      const int64_t n = static_cast<int64_t>(bytes.size());
      send_and_wait(&n, sizeof n, 0, kTag);
      if (n > 0) send_and_wait(bytes.data(), n, 0, kTag);
      return {};
    }
    std::vector<std::string> all;
    all.push_back(std::move(bytes));
    for (int peer = 1; peer < size(); ++peer) {
      int64_t n = 0;
      recv(&n, sizeof n, peer, kTag);
      all.emplace_back(static_cast<size_t>(n), '\0');
      if (n > 0) recv(all.back().data(), n, peer, kTag);
    }
    return all;
  }

  // True on every rank when `flag` is true on any rank (to agree on errors before writing).
  bool any(bool flag) {
    int64_t v = flag ? 1 : 0;
    allreduce_sum(&v, 1);
    return v > 0;
  }
};

// One process: collectives are copies.
std::unique_ptr<Communicator> make_single_communicator();

}  // namespace glam::exec
