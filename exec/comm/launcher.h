#pragma once
// What an MPI launcher (OpenMPI's mpirun, MPICH, Slurm) tells a process about its place on this
// host, through the environment; a process started without one is rank 0 of 1.
namespace glam::exec {

// True when the process was started by mpirun / an MPI launcher (so MPI must be initialised).
bool launched_by_mpi();
int local_rank();   // this process's index among the job's processes on this host
int local_ranks();  // the job's processes on this host
// The CPUs this process may run on: fewer than the host's when the launcher pinned it (OpenMPI's
// mpirun binds each rank to a core by default; --bind-to none lifts that).
int allowed_cpus();

}  // namespace glam::exec
