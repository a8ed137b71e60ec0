#pragma once
// The communicator over NCCL for the CUDA backend, one process per GPU (NCCL refuses two ranks on one
// device). It is bootstrapped through a host communicator (MPI): rank 0 creates the unique id and
// broadcasts it. Collectives on device buffers go through NCCL on the legacy default stream (which
// orders them with the kernels of the contexts' blocking streams); on host buffers (loss sums, expert
// loads, error flags) through the host communicator. Equal-block all-to-alls use ncclAlltoAll where
// the NCCL loaded at run time has it (2.28 and later), grouped ncclSend/ncclRecv otherwise.
#include <memory>

#include "comm/communicator.h"

namespace glam::exec {

// Whether this build has NCCL (a CUDA build that found nccl.h and libnccl).
bool nccl_built();

// Uses the current CUDA device (select it first). Throws std::runtime_error when NCCL is not built
// or fails to initialise.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host);

}  // namespace glam::exec
