#include "comm/mpi_communicator.h"

#include <mpi.h>

#include <cstdlib>
#include <limits>
#include <stdexcept>

namespace glam::exec {
namespace {

int checked_count(int64_t n) {
  if (n > std::numeric_limits<int>::max()) throw std::runtime_error("MPI message larger than 2^31 elements");
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  void allreduce_sum(float* d, int64_t n) override {
    MPI_Allreduce(MPI_IN_PLACE, d, checked_count(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  }
  void allreduce_sum(double* d, int64_t n) override {
    MPI_Allreduce(MPI_IN_PLACE, d, checked_count(n), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  }
  void allreduce_sum(int64_t* d, int64_t n) override {
    MPI_Allreduce(MPI_IN_PLACE, d, checked_count(n), MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  }
  void alltoall(const void* send, void* recv, int64_t block_bytes) override {
    MPI_Alltoall(send, checked_count(block_bytes), MPI_BYTE, recv, checked_count(block_bytes), MPI_BYTE,
                 MPI_COMM_WORLD);
  }
  void allgather(const void* send, void* recv, int64_t block_bytes) override {
    MPI_Allgather(send, checked_count(block_bytes), MPI_BYTE, recv, checked_count(block_bytes), MPI_BYTE,
                  MPI_COMM_WORLD);
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    MPI_Bcast(data, checked_count(bytes), MPI_BYTE, root, MPI_COMM_WORLD);
  }
  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace glam::exec
