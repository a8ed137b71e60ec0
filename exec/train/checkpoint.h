#pragma once
// Checkpoints: the weights, Adafactor's state, the step and the seed, in a file that does not
// depend on the number of ranks (experts are stored one tensor per global expert). Layout:
//   "GLAMCKPT" | u32 version | u32 0 | u64 header bytes | header JSON | float32 payload | u64 FNV-1a
// of everything before it. Written atomically (temporary file, fsync, rename): a crash mid-write
// leaves the previous checkpoint in place; a truncated or altered file fails the checksum.
#include <cstdint>
#include <filesystem>
#include <string>

#include "comm/communicator.h"
#include "model/transformer.h"
#include "optim/adafactor_optimizer.h"

namespace glam::exec {

struct CheckpointState {
  int64_t step = 0;   // updates applied so far
  uint64_t seed = 0;  // initialisation and routing seed of the run
  // Sequences of the data the run has read, where the next step starts (-1 in checkpoints from before
  // it was kept: step x the resuming run's batch).
  int64_t sequences = -1;
  std::string data;  // the text and tokenizer it read (TokenBatches' origin); empty in older checkpoints
};

// Collective: makes sliced tensors whole over `tensor` (the tensor-parallel ranks; null without
// slices), gathers every rank's experts over `comm` (the ranks of one pipeline stage that hold the
// same slice) and, with pipeline stages or slices, every stage's tensors over `world`; world rank 0
// writes the file. T is the activation type (float or bf16); the file holds the float32 master
// weights either way, one whole copy of each tensor, so it does not depend on the ranks, stages or
// slices that wrote or read it.
template <class T>
void save_checkpoint(const std::filesystem::path& path, Transformer<T>& model, AdafactorOptimizer<float>& opt,
                     const CheckpointState& state, Communicator& comm, Communicator* world = nullptr,
                     Communicator* tensor = nullptr);

// Reads the checkpoint's header and checks it against the run's model (every key of the
// configuration, the step, the seed and the tensor table): the check run_train makes before any work.
// With `verify_checksum`, first reads the whole file and checks its checksum, as loading it will.
// UsageError naming the file and, for another configuration, the keys that differ.
CheckpointState check_checkpoint(const std::filesystem::path& path, const ModelConfig& m,
                                 bool verify_checksum = false);

// Every rank reads the file and takes its share (its stage's tensors, its experts, its slices). UsageError when
// the file is missing, corrupt, or was written for a different model configuration.
template <class T>
CheckpointState load_checkpoint(const std::filesystem::path& path, Transformer<T>& model,
                                AdafactorOptimizer<float>& opt);

}  // namespace glam::exec
