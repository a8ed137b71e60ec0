#pragma once
// `glamexec train`: load the model, tokenize the text, run N training steps on this rank's share
// (expert and data parallel over the communicator), time every op after warm-up, and write the run
// record and the checkpoint. All input is checked before the first step; nothing is written on error.
#include <cstdint>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>

#include "comm/communicator.h"
#include "kernel_context.h"
#include "model/transformer.h"
#include "model_config.h"

namespace glam::exec {

// Train's batch when --batch-tokens is not given: this many sequences (describe uses it too).
inline constexpr int64_t kDefaultBatchSequences = 8;

// Training diverged: a step's loss is not finite. Every rank throws it (the loss is reduced over
// them), and nothing is saved or recorded.
struct TrainingDiverged : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws TrainingDiverged, naming the step, the loss's parts and the model's loss weights, unless the
// step's loss is finite.
void check_loss_finite(int64_t step, const StepLoss& loss, const ModelConfig& m);

struct TrainOptions {
  std::string model;              // id or TOML file
  int64_t layers = 0;             // run the first K layers (0: all)
  int64_t batch_tokens = 0;       // global batch (0: kDefaultBatchSequences sequences)
  int64_t microbatches = 1;       // gradient accumulation: the batch runs in this many passes per step
  // Pipeline stages: the ranks form this many stages of ranks / stages ranks each, which hold
  // consecutive chunks of blocks (virtual_stages chunks each: the interleaved schedule) and run the
  // StepGraph's 1F1B programs over the micro-batches.
  int stages = 1;
  int virtual_stages = 1;
  // Tensor parallelism: groups of this many ranks share their tokens and split the model's matrices.
  int tensor_parallel = 1;
  int64_t steps = 10;
  int64_t warmup = -1;            // untimed first steps (-1: min(2, steps - 1))
  std::string device = "cpu";     // "cpu" or "cuda" (a CUDA build with a device)
  // fp32: float32 activations and products; tf32 (CUDA): float32 activations, TF32 products; bf16:
  // bf16 activations and products with float32 accumulation, float32 master weights (as GLaM
  // trained); "": bf16 on CUDA, fp32 on the CPU
  std::string precision;
  int threads = 0;                // 0: cores / ranks on this host
  std::string record;             // run record path ("" : none)
  std::string format = "text";    // "text" or "json" (stdout)
  std::string text;               // training text ("" : the default corpus)
  std::string tokenizer;          // SentencePiece model ("" : trained on the text and cached)
  bool random_tokens = false;     // uniform random tokens instead of text (timing of large vocabularies)
  std::string cache_dir;          // where trained tokenizers are cached ("" : $GLAM_CACHE_DIR or the build's data/)
  std::optional<uint64_t> seed;   // initial weights, random routing and --random-tokens (none: 1, or the checkpoint's)
  std::string resume;             // checkpoint to start from
  std::string save;               // checkpoint to write at the end
  bool quiet = false;
  // "all": every timed step times its ops; "alternate": every other timed step does, and the others
  // give the step time without the op timers' device waits (which stall a GPU's queue between ops).
  // "": alternate on CUDA, all on the CPU (where the waits cost nothing).
  std::string op_timing;
};

// Returns the process exit code; throws UsageError / ConfigError on bad input.
int run_train(const TrainOptions& options, Communicator& comm, std::ostream& out);

// "fp32", "tf32" or "bf16"; throws UsageError naming --precision for anything else, or for tf32 on
// the CPU backend.
kernels::GemmPrecision parse_gemm_precision(const std::string& precision, bool cuda);

// `glamexec tokenizer`: trains a SentencePiece model on a text (default corpus) and writes it.
void run_tokenizer(const std::string& text_file, int64_t vocab, const std::string& out_file);

}  // namespace glam::exec
