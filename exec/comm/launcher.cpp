#include "comm/launcher.h"

#include <algorithm>
#include <cstdlib>
#include <initializer_list>

namespace glam::exec {

namespace {

// The first of the variables that is set, or `fallback`.
int first_set(std::initializer_list<const char*> names, int fallback) {
  for (const char* v : names)
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return fallback;
}

}  // namespace

int local_rank() { return std::max(0, first_set({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}, 0)); }

int local_ranks() { return std::max(1, first_set({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"}, 1)); }

}  // namespace glam::exec
