// glamexec: the reference executor of the GLaM training step.
#include <cstdlib>
#include <iostream>
#include <limits>
#include <memory>

#include <CLI/CLI.hpp>

#include "calibrate/calibrate.h"
#include "comm/communicator.h"
#include "comm/launcher.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "common/cli_checks.h"
#include "common/errors.h"
#include "device.h"
#include "train/describe.h"
#include "train/trainer.h"

namespace {
using glam::cli_checks::integer_at_least;
using glam::cli_checks::unsigned_integer;

// MPI under an MPI launcher, else one process. A CUDA run on several ranks takes one GPU per
// process (the local rank picks it) and NCCL for the device buffers.
std::unique_ptr<glam::exec::Communicator> make_communicator(bool cuda) {
  auto comm = glam::exec::launched_by_mpi() ? glam::exec::make_mpi_communicator() : glam::exec::make_single_communicator();
  if (!cuda || comm->size() == 1 || glam::kernels::cuda_device_count() == 0) return comm;
  glam::kernels::cuda_set_device(glam::exec::local_rank() % glam::kernels::cuda_device_count());
  return glam::exec::make_nccl_communicator(std::move(comm));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"glamexec: run the GLaM training step on the CPU or a GPU and record what it measured"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "glamexec 0.1.0");
  glam::exec::DescribeOptions d;
  CLI::App* describe = app.add_subcommand("describe", "Parameters, FLOPs and single-chip memory of a model");
  describe->add_option("--model", d.model, "Model id or TOML file")->required();
  describe->add_option("--batch-tokens", d.batch_tokens, "Tokens per step (default 8 sequences, as train)")
      ->transform(integer_at_least(1, std::numeric_limits<int32_t>::max()));  // as train: 32-bit token indices
  describe->add_option("--layers", d.layers, "Only the model's first K layers, as glamexec train --layers (0: all)")
      ->transform(integer_at_least(0));
  describe->add_option("--format", d.format, "text or json")->transform(glam::cli_checks::output_format());
  describe->callback([&] { glam::exec::run_describe(d, std::cout); });

  glam::exec::TrainOptions t;
  CLI::App* train = app.add_subcommand(
      "train", "Run GLaM training steps (mpirun -np N for expert and data parallelism), time every op, write a run record");
  train->add_option("--model", t.model, "Model id or TOML file")->required();
  train->add_option("--layers", t.layers, "Run only the model's first K layers (0: all)")->transform(integer_at_least(0));
  train->add_option("--batch-tokens", t.batch_tokens, "Global batch in tokens, over all ranks (default 8 sequences)")
      ->transform(integer_at_least(1));
  train->add_option("--microbatches", t.microbatches,
                    "Gradient accumulation: each step runs the batch in this many passes, one set of buffers")
      ->transform(integer_at_least(1))
      ->capture_default_str();
  train->add_option("--stages", t.stages,
                    "Pipeline stages: the ranks form this many groups, each holding consecutive blocks, and run the "
                    "1F1B schedule over the micro-batches (on GPUs the activations pass through host memory)")
      ->transform(integer_at_least(1, 4096))
      ->capture_default_str();
  train->add_option("--tensor-parallel", t.tensor_parallel,
                    "Tensor parallelism: groups of this many ranks share their tokens and split the attention heads, "
                    "hidden units and vocabulary (Megatron-LM)")
      ->transform(integer_at_least(1, 4096))
      ->capture_default_str();
  train->add_option("--virtual-stages", t.virtual_stages,
                    "Chunks of blocks per pipeline stage (the interleaved schedule; micro-batches a multiple of the stages)")
      ->transform(integer_at_least(1, 4096))
      ->capture_default_str();
  train->add_option("--steps", t.steps, "Training steps, warm-up included")->transform(integer_at_least(1))->capture_default_str();
  train->add_option("--warmup", t.warmup, "Untimed first steps (default min(2, steps-1))")->transform(integer_at_least(0));
  train->add_option("--op-timing", t.op_timing,
                    "all: every timed step times its ops; alternate: every other one, the others give the step time "
                    "without the op timers' device waits (default: alternate on cuda, all on cpu)");
  train->add_option("--device", t.device, "cpu or cuda (a CUDA build; with mpirun one rank per GPU, over NCCL)");
  train->add_option("--precision", t.precision,
                    "fp32, tf32 (CUDA: TF32 products) or bf16 (bf16 activations and products with fp32 "
                    "accumulation, fp32 master weights, as GLaM trained); default bf16 on cuda, fp32 on cpu");
  train->add_option("--threads", t.threads, "Threads per rank (default: cores / ranks on the host)")
      ->transform(integer_at_least(1, 4096));
  train->add_option("--record", t.record, "Write the run record (JSON) to this file, atomically")
      ->check(glam::cli_checks::output_path("a file name"));
  train->add_option("--format", t.format, "text or json (the run record on stdout)")->transform(glam::cli_checks::output_format());
  train->add_option("--text", t.text, "Training text file (default: Debian's /usr/share/common-licenses)");
  train->add_option("--tokenizer", t.tokenizer, "SentencePiece model (default: trained on the text, cached)");
  train->add_flag("--random-tokens", t.random_tokens, "Uniform random tokens instead of text (timing runs of large vocabularies)");
  train->add_option("--cache-dir", t.cache_dir, "Folder for trained tokenizers");
  train->add_option("--seed", t.seed,
                    "Seed of the initial weights, random routing and --random-tokens (default 1; with --resume, the "
                    "checkpoint's)")
      ->transform(unsigned_integer());
  train->add_option("--resume", t.resume, "Checkpoint to continue from");
  train->add_option("--save", t.save, "Write a checkpoint here at the end (atomically)")
      ->check(glam::cli_checks::output_path("a file name"));
  train->add_flag("--quiet", t.quiet, "No per-step lines");

  std::string text_file, out_file;
  int64_t vocab = 4096;
  CLI::App* tok = app.add_subcommand("tokenizer", "Train a SentencePiece model (BPE) on a text");
  tok->add_option("--text", text_file, "Text file (default: Debian's /usr/share/common-licenses)");
  // (SentencePiece's control pieces <unk>, <s> and </s> come first)
  tok->add_option("--vocab", vocab, "Pieces, the 3 control pieces included")
      ->transform(integer_at_least(3, 1 << 30))
      ->capture_default_str();
  tok->add_option("--out", out_file, "Model file to write")
      ->check(glam::cli_checks::output_path("a file name"))
      ->required();
  tok->callback([&] { glam::exec::run_tokenizer(text_file, vocab, out_file); });

  glam::exec::CalibrateOptions cal;
  CLI::App* calibrate = app.add_subcommand(
      "calibrate", "Measure this host (GEMM peak, memory bandwidth, links between ranks, per-op curves from training "
                   "steps) and write a calibration profile for glamsim (mpirun -np N for the network figures)");
  calibrate->add_option("--device", cal.device, "cpu or cuda (a CUDA build with a device; NCCL between ranks)");
  calibrate->add_option("--precision", cal.precision, "As glamexec train's --precision (default: bf16 on cuda, fp32 on cpu)");
  calibrate->add_option("--threads", cal.threads, "Threads per rank (default: cores / ranks on the host)")
      ->transform(integer_at_least(1, 4096));
  calibrate->add_option("--out", cal.out, "Profile to write (TOML), atomically (default: stdout)")
      ->check(glam::cli_checks::output_path("a file name"));
  calibrate->add_flag("--quick", cal.quick, "A few seconds: fewer sizes and steps (tests)");
  calibrate->add_option("--model", cal.models, "Configs whose training steps give the per-op curves (repeatable; "
                                                "default glam-tiny glam-tiny-8e on cpu, glam-0.1b glam-0.1b-64e on cuda)");
  calibrate->add_option("--tokens", cal.tokens,
                        "Tokens per rank of those steps (default 384 768 1536 3072 on cpu, 2048 to 32768 on cuda; "
                        "--quick: 256 512 on cpu, 2048 8192 on cuda)")
      ->transform(integer_at_least(1));
  calibrate->add_option("--layers", cal.layers, "Run only the first K layers of those configs (0: all)")
      ->transform(integer_at_least(0));
  calibrate->add_option("--steps", cal.steps, "Steps per config, warm-up included (default 8, --quick 3)")
      ->transform(integer_at_least(2));
  calibrate->add_option("--records", cal.records, "More per-op points from run records of this host");
  calibrate->add_option("--seed", cal.seed, "Seed of the training steps")->transform(unsigned_integer())->capture_default_str();
  calibrate->add_flag("--quiet", cal.quiet, "No progress lines");

  std::unique_ptr<glam::exec::Communicator> comm;
  int rc = 0;
  try {
    app.parse(argc, argv);
    if (train->parsed()) {
      comm = make_communicator(t.device == "cuda");
      rc = glam::exec::run_train(t, *comm, std::cout);
    }
    if (calibrate->parsed()) {
      comm = make_communicator(cal.device == "cuda");
      rc = glam::exec::run_calibrate(cal, *comm, std::cout);
    }
  } catch (const CLI::ParseError& e) {
    return glam::cli_checks::report_parse_error(app, e, "glamexec");
  } catch (const glam::ConfigError& e) {
    if (!comm || comm->rank() == 0) std::cerr << "glamexec: error: " << e.what() << "\n";
    rc = glam::kExitBadInput;
  } catch (const glam::UsageError& e) {
    if (!comm || comm->rank() == 0) std::cerr << "glamexec: error: " << e.what() << "\n";
    rc = glam::kExitBadInput;
  } catch (const glam::exec::TrainingDiverged& e) {  // every rank: the loss is the same on all
    if (!comm || comm->rank() == 0) std::cerr << "glamexec: error: " << e.what() << "\n";
    rc = 1;
  } catch (const std::runtime_error& e) {  // CUDA, cuBLAS or NCCL failures
    std::cerr << "glamexec: error: " << e.what() << "\n";
    rc = 1;
  }
  if (rc == 0) rc = glam::cli_checks::stdout_exit_code("glamexec");
  comm.reset();  // MPI_Finalize before exit
  return rc;
}
