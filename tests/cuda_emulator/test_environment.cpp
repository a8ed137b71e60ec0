// The emulated GPU step tests' environment, set before main (ctest's ENVIRONMENT holds one variable per
// discovered test here): GLAM_EMULATED_GPUS emulated GPUs (two where the emulated NCCL is built, for the
// two-GPU test), and one OpenBLAS thread, whose idle workers would spin on the core the emulator needs.
// Both hold for this process and for the glamexec runs it starts.
#include <cblas.h>

#include <cstdlib>

namespace {
const bool kEnvironmentSet = [] {
  setenv("GLAM_EMULATED_GPUS", GLAM_EMULATED_GPUS_FOR_TESTS, 0);
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  openblas_set_num_threads(1);
  return true;
}();
}  // namespace
