#pragma once
// What an MPI launcher (OpenMPI's mpirun, MPICH, Slurm) tells a process about its place on this
// host, through the environment; a process started without one is rank 0 of 1.
namespace glam::exec {

int local_rank();   // this process's index among the job's processes on this host
int local_ranks();  // the job's processes on this host

}  // namespace glam::exec
