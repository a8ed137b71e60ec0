#pragma once
// The frame of the executor's checks that run under mpirun on 4 ranks: each rank counts its failed
// expectations (printed with the rank), and the world's total decides the exit code.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "comm/mpi_communicator.h"

namespace glam::testing {

class MpiCheck {
 public:
  explicit MpiCheck(glam::exec::Communicator& world) : world_(world) {}
  void expect(bool ok, const std::string& what) {
    if (ok) return;
    std::fprintf(stderr, "rank %d: %s\n", world_.rank(), what.c_str());
    ++failures_;
  }
  glam::exec::Communicator& world() { return world_; }

  // Runs `body` on the 4 ranks of MPI's world; prints "`name`: N failure(s) over the ranks" on rank 0.
  // The exit code: 0 when no rank failed, 1 otherwise, 2 on another number of ranks.
  static int run(const char* name, const std::function<void(MpiCheck&)>& body) {
    int64_t total = 0;
    {
      auto world = glam::exec::make_mpi_communicator();
      if (world->size() != 4) {
        if (world->rank() == 0) std::fprintf(stderr, "run on 4 ranks (mpirun -np 4), not %d\n", world->size());
        return 2;
      }
      MpiCheck check(*world);
      body(check);
      total = check.failures_;
      world->allreduce_sum(&total, 1);
      if (world->rank() == 0) std::printf("%s: %lld failure(s) over the ranks\n", name, static_cast<long long>(total));
    }
    return total == 0 ? 0 : 1;
  }

 private:
  glam::exec::Communicator& world_;
  int64_t failures_ = 0;
};

}  // namespace glam::testing
