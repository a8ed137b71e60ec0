#pragma once
// The communicator over MPI (OpenMPI on CPUs). MPI is initialised by the first call to
// make_mpi_communicator() and finalised when the last communicator is destroyed.
#include <cstdint>
#include <memory>

#include "comm/communicator.h"
#include "comm/launcher.h"  // launched_by_mpi

namespace glam::exec {

std::unique_ptr<Communicator> make_mpi_communicator();

// The largest byte message sent in one MPI call (default 1 GiB; MPI counts are ints): larger sends,
// receives, broadcasts, all-gathers and all-to-alls go in pieces. Tests lower it to check the pieces.
void set_mpi_message_limit(int64_t bytes);

}  // namespace glam::exec
