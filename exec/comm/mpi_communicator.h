#pragma once
// The communicator over MPI (OpenMPI on CPUs). MPI is initialised by the first call to
// make_mpi_communicator() and finalised when the last communicator is destroyed.
#include <cstdint>
#include <memory>

#include "comm/communicator.h"

namespace glam::exec {

// True when the process was started by mpirun / an MPI launcher (so MPI must be initialised).
bool launched_by_mpi();

std::unique_ptr<Communicator> make_mpi_communicator();

// The largest byte message sent in one MPI call (default 1 GiB; MPI counts are ints): larger sends,
// receives, broadcasts, all-gathers and all-to-alls go in pieces. Tests lower it to check the pieces.
void set_mpi_message_limit(int64_t bytes);

}  // namespace glam::exec
