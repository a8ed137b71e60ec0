#pragma once
// The communicator over MPI (OpenMPI on CPUs). MPI is initialised by the first call to
// make_mpi_communicator() and finalised when the last communicator is destroyed.
#include <memory>

#include "comm/communicator.h"

namespace glam::exec {

// True when the process was started by mpirun / an MPI launcher (so MPI must be initialised).
bool launched_by_mpi();

std::unique_ptr<Communicator> make_mpi_communicator();

}  // namespace glam::exec
