#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>

#include "common/atomic_output.h"
#include "common/catalogue.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "comm/launcher.h"
#include "core/device_session.h"
#include "core/gpu_energy_meter.h"
#include "data/corpus.h"
#include "data/token_batches.h"
#include "data/tokenizer.h"
#include "device.h"
#include "model/transformer.h"
#include "optim/adafactor_optimizer.h"
#include "train/checkpoint.h"
#include "train/run_record.h"
#include "train/step_memory.h"

#ifndef GLAM_DATA_DIR
#define GLAM_DATA_DIR ""
#endif

namespace glam::exec {

void check_loss_finite(int64_t step, const StepLoss& loss, const ModelConfig& m) {
  if (std::isfinite(loss.total)) return;
  std::ostringstream why;
  why << "step " << step << ": the loss is " << loss.total << " (cross-entropy " << loss.ce << ", z " << loss.z
      << ", aux " << loss.aux << "): training diverged; nothing was saved or recorded. Check the model file's "
      << "loss weights (moe.aux_loss_weight = " << m.aux_loss_weight << ", training.z_loss_weight = "
      << m.z_loss_weight << ")";
  throw TrainingDiverged(why.str());
}

namespace fs = std::filesystem;

namespace {

fs::path cache_dir(const TrainOptions& o) {
  if (!o.cache_dir.empty()) return o.cache_dir;
  if (const char* s = std::getenv("GLAM_CACHE_DIR")) return s;
  if (std::string(GLAM_DATA_DIR).size()) return GLAM_DATA_DIR;
  return fs::temp_directory_path() / "glam-cache";
}

uint64_t text_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The tokenizer: the user's, or one trained on the text with the model's vocabulary, cached by
// (text, vocab). Rank 0 trains and caches; the others wait and read it.
Tokenizer get_tokenizer(const TrainOptions& o, const std::string& text, const std::string& text_origin, int64_t vocab,
                        Communicator& comm) {
  if (!o.tokenizer.empty()) return Tokenizer::load(o.tokenizer);
  std::ostringstream name;
  name << "spm-" << std::hex << text_hash(text) << std::dec << "-" << vocab << ".model";
  fs::path file = cache_dir(o) / name.str();
  bool failed = false;
  std::string error;
  if (comm.rank() == 0 && !fs::exists(file)) {
    try {
      std::string model = train_tokenizer(text, vocab, text_origin);
      fs::create_directories(file.parent_path());
      write_file_atomically(file, model);
    } catch (const TextTooShortForVocabulary& e) {
      failed = true;
      // GLaM's 256K vocabulary needs far more text than the default corpus: say the way round it.
      error = std::string(e.what()) + " (train: --text a larger corpus, --tokenizer a trained model, or " +
              "--random-tokens to time the model's " + std::to_string(vocab) + "-piece vocabulary on random tokens)";
    } catch (const UsageError& e) {
      failed = true;
      error = e.what();
    } catch (const std::exception& e) {  // the cache folder cannot be made or written
      failed = true;
      error = "--cache-dir " + file.parent_path().string() + ": cannot keep the trained tokenizer there (" + e.what() + ")";
    }
  }
  if (comm.any(failed)) throw UsageError(failed ? error : "tokenizer training failed on rank 0");
  return Tokenizer::load(file);
}

}  // namespace

void run_tokenizer(const std::string& text_file, int64_t vocab, const std::string& out_file) {
  check_output_file("--out", out_file);
  std::string text = text_file.empty() ? default_corpus_text() : read_text_file(text_file);
  const std::string origin = text_file.empty() ? kDefaultCorpusDir : text_file;
  write_file_atomically(out_file, train_tokenizer(text, vocab, origin));
  std::cout << "wrote " << out_file << ": a SentencePiece BPE model of " << vocab << " pieces, trained on " << origin
            << " (" << text.size() << " bytes)\n";
}

kernels::GemmPrecision parse_gemm_precision(const std::string& p, bool cuda) {
  kernels::GemmPrecision precision = kernels::GemmPrecision::kFp32;
  if (p == "tf32") precision = kernels::GemmPrecision::kTf32;
  else if (p == "bf16") precision = kernels::GemmPrecision::kBf16;
  else if (p != "fp32") throw UsageError("--precision " + p + ": expected fp32, tf32 or bf16");
  if (!cuda && precision == kernels::GemmPrecision::kTf32)
    throw UsageError("--precision tf32: TF32 is a GPU tensor-core format (expected fp32 or bf16 on the CPU)");
  return precision;
}

namespace {

// "glam-0.1b (12 layers) at 32768 tokens per rank, --precision bf16": the step, as messages name it.
std::string step_label(const ModelConfig& m, const ExecShape& shape, const std::string& precision) {
  return m.id + " (" + std::to_string(m.layers) + " layers" +
         (shape.stages > 1 ? ", stage " + std::to_string(shape.stage) + " of " + std::to_string(shape.stages) : "") +
         ") at " + std::to_string(shape.tokens()) + " tokens per rank" +
         (shape.microbatches > 1 ? " and micro-batch (" + std::to_string(shape.microbatches) + " per step)" : "") +
         ", --precision " + precision;
}

// What a step needs and what was free for it (-1: unknown), on this rank; the most any rank of the job
// needs (pipeline stages hold different blocks and activations).
struct StepFit {
  StepMemory need;
  int64_t available = -1;
  int64_t largest_need = 0;
  int64_t device_total = -1;  // GPU: the device's memory in all (total less available: what the runtime holds)
};

// Refuses, before anything is allocated, a step whose buffers exceed the memory free for them: the
// GPU's free memory, or the host's available memory shared by this host's ranks (there an allocation
// would succeed and the kernel would kill the run once the buffers are touched). Decided together, so
// that no rank goes on to wait for one that stopped, and reported for the rank shortest of memory with
// a batch (or a number of micro-batches) that fits every rank.
StepFit check_step_fits(const ModelConfig& m, const ExecShape& shape, bool bf16, bool cuda, const std::string& precision,
                        Communicator& comm) {
  const StepMemory need = step_memory(m, shape, bf16);
  // What is free here; -1 where unknown (not refused). A failed query is counted, not thrown at once:
  // every rank must reach the reduction below.
  int64_t available = -1, device_total = -1;
  std::string query_error;
  try {
    if (cuda) {
      const kernels::DeviceMemory dm = kernels::cuda_memory();
      available = dm.free_bytes, device_total = dm.total_bytes;
    } else if (const int64_t host = host_available_memory(); host >= 0) {
      available = host / local_ranks();
    }
  } catch (const std::exception& e) {
    query_error = e.what();
  }
  // Every rank's figures, gathered (each rank fills its own entries of a zero vector, then a sum).
  const int ranks = comm.size(), me = comm.rank();
  auto gather = [&](std::vector<int64_t> mine) {
    const size_t k = mine.size();
    std::vector<int64_t> all(k * static_cast<size_t>(ranks), 0);
    std::copy(mine.begin(), mine.end(), all.begin() + static_cast<std::ptrdiff_t>(k * static_cast<size_t>(me)));
    comm.allreduce_sum(all.data(), static_cast<int64_t>(all.size()));
    return all;
  };
  const std::vector<int64_t> fig = gather({need.total(), available, query_error.empty() ? 0 : 1, need.model_bytes,
                                           need.optimizer_bytes});
  auto at = [&](int rank, int field) { return fig[static_cast<size_t>(5 * rank + field)]; };
  int64_t failed = 0, largest_need = 0;
  int worst = -1;  // the rank shortest of memory
  for (int r = 0; r < ranks; ++r) {
    failed += at(r, 2);
    largest_need = std::max(largest_need, at(r, 0));
    if (at(r, 1) >= 0 && at(r, 0) > at(r, 1) && (worst < 0 || at(r, 0) - at(r, 1) > at(worst, 0) - at(worst, 1)))
      worst = r;
  }
  if (!query_error.empty()) throw std::runtime_error("the device's free memory could not be read: " + query_error);
  if (failed > 0) throw std::runtime_error(std::to_string(failed) + " rank(s) of this job could not read their free memory");
  if (worst < 0) return {need, available, largest_need, device_total};
  // The largest batch this rank could run, and the fewest micro-batches that would run this batch here
  // (the routing groups may need several sequences per micro-batch); each rank's, then the job's.
  const int64_t seqs = available >= 0 ? max_sequences_within(m, shape, bf16, available) : int64_t{1} << 40;
  const int64_t step_seqs = shape.seqs * shape.microbatches;
  int64_t more = 0;
  for (int64_t k = shape.microbatches + 1; seqs > 0 && k <= step_seqs && more == 0; ++k) {
    ExecShape micro = shape;
    micro.seqs = step_seqs / k;
    micro.microbatches = k;
    if (step_seqs % k == 0 && runnable(m, micro) &&
        (available < 0 || step_memory(m, micro, bf16).total() <= available))
      more = k;
  }
  const std::vector<int64_t> hints = gather({seqs, more});
  int64_t job_seqs = seqs, job_more = more;
  for (int r = 0; r < ranks; ++r) {
    job_seqs = std::min(job_seqs, hints[static_cast<size_t>(2 * r)]);
    const int64_t k = hints[static_cast<size_t>(2 * r + 1)];
    job_more = job_more == 0 || k == 0 ? 0 : std::max(job_more, k);
  }
  const ExecShape worst_shape = shape.at_world_rank(worst);
  auto bytes = [](int64_t b) { return format_bytes(static_cast<double>(b)); };
  const std::string step = step_label(m, worst_shape, precision) + ", needs " + bytes(at(worst, 0)) + " (model buffers " +
                           bytes(at(worst, 3)) + ", optimizer state " + bytes(at(worst, 4)) + ")";
  const std::string hint =
      job_seqs > 0 ? "at most --batch-tokens " + std::to_string(job_seqs * m.seq_len * shape.ranks * shape.microbatches) +
                         " fits" + (job_more > 0 ? ", or this batch with --microbatches " + std::to_string(job_more) : "")
                   : "no batch fits: try fewer --layers";
  throw UsageError(step + ", and " + (cuda ? "the GPU has " : "the host has ") + bytes(at(worst, 1)) +
                   (cuda ? " free" : " available per rank") + ": " + hint);
}

// NVML's energy counter updates every 20-100 ms: a shorter window than this is not reported.
constexpr double kMinEnergyWindow_s = 1.0;

// Adds one step's routing statistics (per MoE layer) to the sums over the timed steps.
void add_moe_stats(const std::vector<MoeLayerStats>& st, std::vector<MoeLayerStats>& sum) {
  if (sum.empty()) {
    sum = st;
    for (auto& s : sum) s.clear();
  }
  for (size_t j = 0; j < st.size(); ++j) sum[j].add(st[j]);
}

// Rank 0 of each stage (its slice 0) sends its op times to world rank 0, which returns them all (stage by stage);
// the others return their own.
nlohmann::json gather_stage_ops(const OpTimer& timer, const ExecShape& shape, Communicator& world) {
  nlohmann::json ops = timed_ops_json(timer);
  if (shape.stages == 1) return ops;
  const bool sends = world.rank() != 0 && shape.rank == 0 && shape.tp_rank == 0;
  const std::vector<std::string> stages = world.gather_at_root(sends ? ops.dump() : std::string());
  for (size_t r = 1; r < stages.size(); ++r)
    if (!stages[r].empty())
      for (auto& op : nlohmann::json::parse(stages[r])) ops.push_back(std::move(op));
  return ops;
}

// Everything run_train resolved and checked before the first step.
struct ResolvedRun {
  const TrainOptions& o;
  const ModelConfig& m;
  std::string model_file, precision_name, op_timing, text_origin, tokenizer_origin;
  ExecShape shape;
  int64_t warmup = 0;
  int threads = 1;
  bool cuda = false;
  StepFit memory;
  uint64_t seed = 1;  // --seed, or the checkpoint's when resuming
};

// The model and the steps with activations of type T: float, or bf16 with float32 master weights and
// optimizer state. Writes the run record and the checkpoint; returns the exit code.
template <class T>
int train_steps(const ResolvedRun& r, TokenBatches& batches, kernels::KernelContext& ctx, Communicator& comm,
                std::ostream& out) {
  const TrainOptions& o = r.o;
  const ModelConfig& m = r.m;
  const ExecShape& shape = r.shape;
  const int ranks = comm.size(), rank = comm.rank();
  const int64_t warmup = r.warmup;
  const bool cuda = r.cuda;
  const std::string& op_timing = r.op_timing;
  PipelineComms comms = make_pipeline_comms(comm, shape, m.tied_embeddings);
  Transformer<T> model(m, shape, comms.stage(), ctx, comms.links());
  AdafactorOptimizer<float> opt(model.layout());
  CheckpointState cs;
  cs.seed = r.seed;
  if (!o.resume.empty()) cs = load_checkpoint(o.resume, model, opt);
  else model.init_params(cs.seed);
  model.routing_seed = cs.seed;
  // The data goes on where the saved run stopped, whatever this run's batch. What it is, to compare with
  // a checkpoint's: a text and how it was tokenized (a cached tokenizer is the text's own, wherever
  // the cache is), or random tokens, whose stream's length depends on the batch.
  const int64_t step_sequences = shape.global_tokens() / m.seq_len;
  const std::string tokenized = o.tokenizer.empty() ? ", a tokenizer trained on it" : ", tokenizer " + o.tokenizer;
  const std::string data = o.random_tokens
                               ? "random tokens, a stream of " + std::to_string(batches.sequences()) + " sequences"
                               : r.text_origin + tokenized;
  if (cs.sequences < 0) cs.sequences = cs.step * step_sequences;
  if (rank == 0 && !o.resume.empty() && !cs.data.empty() && cs.data != data)
    std::cerr << "glamexec train: warning: " << o.resume << " was trained on " << cs.data << "; this run reads " << data
              << ", from its sequence " << cs.sequences << "\n";
  cs.data = data;

  // ---- training ----
  OpTimer timer(&ctx, &comm);
  // Every micro-batch's tokens: a stage's passes of different micro-batches interleave.
  const int64_t n = shape.tokens();
  DeviceBuffer<int32_t> inputs(n * shape.microbatches), targets(n * shape.microbatches);
  std::vector<int32_t> hin(static_cast<size_t>(n)), htg(static_cast<size_t>(n));
  const std::vector<PipelineLayout::Pass> program = pipeline_layout(m, shape).program(shape.stage);
  RunDescription run;
  run.model = &m;
  run.model_file = r.model_file;
  run.layers_run = m.layers;
  run.ranks = ranks;
  run.dp = shape.ranks;
  run.ep = m.is_moe() ? shape.ranks : 1;
  run.tp = shape.tp;
  run.pp = shape.stages;
  run.virtual_stages = shape.virtual_stages;
  run.microbatches = shape.microbatches;
  run.device_name = cuda ? kernels::cuda_device_name(ctx.device) : cpu_model_name();
  if (cuda) run.device_kind = "cuda";
  run.host = host_name();
  run.threads = r.threads;
  run.batch_tokens = shape.tokens() * shape.microbatches;
  run.global_batch_tokens = shape.global_tokens();
  run.seq_len = m.seq_len;
  run.steps = o.steps;
  run.warmup_steps = warmup;
  run.seed = cs.seed;
  run.first_step = cs.step + 1;
  run.first_sequence = cs.sequences;
  run.op_timing = op_timing;
  run.tokenizer = r.tokenizer_origin;
  run.text = r.text_origin;
  std::vector<MoeLayerStats> moe_sum;
  const bool print = rank == 0 && o.format == "text" && !o.quiet;
  if (print) {
    out << step_label(m, shape, r.precision_name) << " on " << run.device_name << ": step buffers "
        << format_bytes(static_cast<double>(r.memory.need.total()));
    if (r.memory.available >= 0)
      out << " of " << format_bytes(static_cast<double>(r.memory.available)) << (cuda ? " free" : " available");
    out << "\n";
  }
  // The GPU's energy counter over the timed steps, first to last (the counter updates every 20-100 ms,
  // so it is read around the whole block rather than step by step).
  std::optional<GpuEnergyMeter> meter;
  if (cuda) meter.emplace(ctx.device);
  double energy_begin_J = -1, energy_end_J = -1, energy_s = 0;
  std::chrono::steady_clock::time_point energy_t0;
  for (int64_t i = 0; i < o.steps; ++i) {
    const int64_t step = cs.step + 1;  // 1-based update number
    const bool timed = i >= warmup;
    const bool ops_timed = timed && (op_timing == "all" || (i - warmup) % 2 == 0);
    timer.set_recording(ops_timed);
    timer.begin_step();
    comm.barrier();
    if (meter && i == warmup) energy_begin_J = meter->read_joules();
    auto t0 = std::chrono::steady_clock::now();
    if (i == warmup) energy_t0 = t0;
    // Micro-batch k of rank r (of its stage): the k-th share of the rank's sequences of this step. The
    // stage runs its program's passes; their ops carry the StepGraph's "mb{k}." prefix, and the loss
    // shares add up.
    for (int64_t mb = 0; mb < shape.microbatches; ++mb) {
      batches.fill(cs.sequences + (shape.rank * shape.microbatches + mb) * shape.seqs, shape.seqs, hin.data(),
                   htg.data());
      copy_to_device(hin.data(), inputs.data() + mb * n, n);
      copy_to_device(htg.data(), targets.data() + mb * n, n);
    }
    StepLoss shares;
    for (const auto& pass : program) {
      const MicroBatchTokens tokens{inputs.data() + pass.microbatch * n, targets.data() + pass.microbatch * n};
      timer.set_prefix(pass.microbatch > 0 ? "mb" + std::to_string(pass.microbatch) + "." : "");
      if (pass.forward) shares.add(model.forward_pass(pass.chunk, pass.microbatch, tokens, step, &timer));
      else model.backward_pass(pass.chunk, pass.microbatch, tokens, &timer);
    }
    model.wait_sends();
    timer.set_prefix("");
    model.allreduce_gradients(&timer);
    timer.set_prefix(stage_op_id(shape, ""));  // "s1.optimizer" with stages
    opt.update(ctx, model.params(), model.grads(), step, &timer, model.slice_reduce());
    timer.set_prefix("");
    kernels::synchronize(ctx);
    comm.barrier();
    const auto t1 = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(t1 - t0).count();
    if (meter && i == o.steps - 1) {
      energy_end_J = meter->read_joules();
      energy_s = std::chrono::duration<double>(t1 - energy_t0).count();
    }
    if (timed) add_moe_stats(model.step_moe_stats(), moe_sum);
    const StepLoss loss = model.reduce_pipeline_loss(shares);  // after the clock: a report, not the step's work
    check_loss_finite(step, loss, m);
    timer.end_step();
    cs.step = step;
    cs.sequences += step_sequences;
    run.losses.push_back(loss.total);
    run.ce_losses.push_back(loss.ce);
    if (timed) {
      (ops_timed && op_timing == "alternate" ? run.op_timed_step_times_s : run.step_times_s).push_back(dt);
      ++run.timed_steps;
    }
    if (print)
      out << "step " << step << "  loss " << std::fixed << std::setprecision(4) << loss.total << "  ce " << loss.ce
          << "  aux " << loss.aux << "  " << std::setprecision(3) << dt * 1e3 << " ms\n"
          << std::flush;
  }
  // Every rank has an entry for every MoE layer (zeros for other stages' layers): the world's sum. A
  // rank's tensor-parallel slices route the same tokens: counted from slice 0.
  for (auto& s : moe_sum) {
    if (shape.tp_rank != 0) s.clear();
    comm.allreduce_sum(s.expert_load.data(), static_cast<int64_t>(s.expert_load.size()));
    comm.allreduce_sum(s.expert_dropped.data(), static_cast<int64_t>(s.expert_dropped.size()));
    int64_t v[2] = {s.routed, s.skipped};
    comm.allreduce_sum(v, 2);
    s.routed = v[0], s.skipped = v[1];
  }
  run.moe = moe_sum;

  // ---- outputs ----
  if (!o.save.empty())
    save_checkpoint(o.save, model, opt, cs, comms.stage(), shape.stages > 1 || shape.tp > 1 ? &comm : nullptr,
                    comms.tensor.get());
  nlohmann::json record = make_run_record(run, gather_stage_ops(timer, shape, comm));
  // How full the device was: the step's buffers (counted before they were allocated; the most any rank
  // needs) and what was free for them then on rank 0 (GPU: cudaMemGetInfo; CPU: the host's available
  // memory per rank).
  record["device"]["memory"] = {{"step_buffers_bytes", r.memory.largest_need},
                                {"optimizer_state_bytes", r.memory.need.optimizer_bytes}};
  if (r.memory.available >= 0) record["device"]["memory"]["free_bytes_before"] = r.memory.available;
  // GPU: total less free before the step's buffers is what the CUDA context, cuBLAS and NCCL hold
  // (and any other process on the device): the simulator's chip runtime_reserved_bytes.
  if (r.memory.device_total > 0) record["device"]["memory"]["total_bytes"] = r.memory.device_total;
  if (meter) {  // collective: every rank has a GPU
    // A card shared by two ranks would be counted twice; a window under a second is a few counter
    // updates, too coarse to report.
    const bool shared = local_ranks() > kernels::cuda_device_count();
    const bool measured = meter->available() && !shared && energy_begin_J >= 0 &&
                          energy_end_J > energy_begin_J && energy_s >= kMinEnergyWindow_s;
    if (!comm.any(!measured)) {
      double joules = energy_end_J - energy_begin_J;
      comm.allreduce_sum(&joules, 1);
      const double tokens = static_cast<double>(run.timed_steps) * static_cast<double>(shape.global_tokens());
      record["device"]["energy"] = {{"joules", joules},
                                    {"seconds", energy_s},
                                    {"gpus", ranks},
                                    {"mean_power_W", joules / energy_s / ranks},
                                    {"joules_per_token", joules / tokens},
                                    {"timed_steps", run.timed_steps},
                                    {"op_timed_steps", static_cast<int64_t>(run.op_timed_step_times_s.size())},
                                    {"source", "NVML total energy counter, first to last timed step"}};
    } else if (rank == 0) {  // even with --quiet: a record without energy should say why in the logs
      std::cerr << "glamexec: GPU energy not measured: "
                << (!meter->available() ? meter->why_not()
                    : shared            ? "ranks share a GPU"
                    : energy_s < kMinEnergyWindow_s
                        ? "the timed steps took " + std::to_string(energy_s) + " s, under the " +
                              std::to_string(kMinEnergyWindow_s) + " s the counter needs"
                        : "the energy counter could not be read (on this or another rank)")
                << "\n";
    }
  }
  record["device"]["gemm_precision"] = r.precision_name;
  record["device"]["activation_precision"] = std::is_same_v<T, kernels::bf16> ? "bfloat16" : "float32";
  if (rank == 0) {
    if (!o.record.empty()) write_file_atomically(o.record, record.dump(2) + "\n");
    if (o.format == "json") {
      out << record.dump(2) << "\n";
    } else {
      out << m.id << " (" << m.layers << (m.layers == 1 ? " layer) on " : " layers) on ") << ranks << " rank(s) x "
          << r.threads << " thread(s): "
          << std::fixed << std::setprecision(0) << record["tokens_per_s"].get<double>() << " tokens/s, " << std::setprecision(2)
          << record["achieved_flops_per_s"].get<double>() / 1e9 << " GFLOP/s (model FLOPs), median step "
          << std::setprecision(1) << record["step_time_s"]["median"].get<double>() * 1e3 << " ms";
      if (record["device"].contains("energy"))
        out << ", GPU " << std::setprecision(0) << record["device"]["energy"]["mean_power_W"].get<double>() << " W";
      out << "\n";
    }
  }
  return 0;
}

}  // namespace

int run_train(const TrainOptions& o, Communicator& comm, std::ostream& out) {
  const int ranks = comm.size(), rank = comm.rank();
  // ---- everything is checked before the first step ----
  const bool cuda = o.device == "cuda";
  if (o.device != "cpu" && !cuda) throw UsageError("--device " + o.device + ": expected cpu or cuda");
  if (cuda && !kernels::cuda_built())
    throw UsageError("--device cuda: this build has no CUDA backend (configure with nvcc present, -DGLAM_CUDA=ON)");
  if (cuda && kernels::cuda_device_count() == 0)
    throw UsageError("--device cuda: no CUDA device is visible (" + kernels::cuda_no_device_reason() + ")");
  if (cuda && ranks > 1 && comm.name() != "nccl")
    throw UsageError("--device cuda on " + std::to_string(ranks) + " ranks needs the NCCL communicator (a CUDA build with NCCL)");
  // GLaM's own precision on GPUs; float32 on the CPU, where bf16 storage only adds conversions
  const std::string precision_name = o.precision.empty() ? (cuda ? "bf16" : "fp32") : o.precision;
  const kernels::GemmPrecision precision = parse_gemm_precision(precision_name, cuda);
  if (o.format != "text" && o.format != "json") throw UsageError("--format " + o.format + ": expected text or json");
  if (o.steps < 1) throw UsageError("--steps must be at least 1");
  ModelConfig m = load_model(o.model);
  const std::string model_file = resolve_catalogue_entry("models", o.model).string();
  check_executor_settings(m, model_file);
  m = first_layers(m, o.layers);
  // One process alone is told how to start more: the ranks are MPI's.
  const std::string more_ranks = ranks == 1 ? "; start several with mpirun -np N glamexec train ..." : "";
  if (o.stages < 1 || ranks % o.stages != 0)
    throw UsageError("--stages " + std::to_string(o.stages) + ": expected a divisor of the " + std::to_string(ranks) +
                     " ranks (each stage is a group of ranks / stages ranks)" + more_ranks);
  if (o.virtual_stages < 1) throw UsageError("--virtual-stages " + std::to_string(o.virtual_stages) + ": expected at least 1");
  const int tp = o.tensor_parallel;
  if (tp < 1 || (ranks / o.stages) % tp != 0)
    throw UsageError("--tensor-parallel " + std::to_string(tp) + ": expected a divisor of the " +
                     std::to_string(ranks / o.stages) + (o.stages > 1 ? " ranks per pipeline stage" : " ranks") +
                     " (each group of that many ranks shares its tokens and splits the matrices)" + more_ranks);
  const int stage_ranks = ranks / o.stages / tp;  // data- and expert-parallel ranks per stage
  check_experts_divide(m, stage_ranks, o.stages);
  const int64_t global_tokens = o.batch_tokens > 0 ? o.batch_tokens : kDefaultBatchSequences * m.seq_len;
  if (o.microbatches < 1 || o.microbatches > (int64_t{1} << 20))
    throw UsageError("--microbatches " + std::to_string(o.microbatches) + ": expected from 1 to 1048576");
  if (global_tokens % (m.seq_len * stage_ranks * o.microbatches) != 0) {
    const std::string ranks_text = std::string(tp > 1 ? "data-parallel " : "") + (o.stages > 1 ? "ranks per stage" : "ranks");
    throw UsageError((o.batch_tokens > 0 ? "--batch-tokens " + std::to_string(global_tokens)
                                          : "the default batch (8 sequences, " + std::to_string(global_tokens) +
                                                " tokens; --batch-tokens sets another)") +
                     ": must be a multiple of seq_len x " + ranks_text + (o.microbatches > 1 ? " x --microbatches" : "") +
                     " = " + std::to_string(m.seq_len) + " x " + std::to_string(stage_ranks) +
                     (o.microbatches > 1 ? " x " + std::to_string(o.microbatches) : ""));
  }
  ExecShape shape;
  shape.seq_len = m.seq_len;
  shape.microbatches = o.microbatches;
  shape.seqs = global_tokens / m.seq_len / stage_ranks / o.microbatches;
  shape.ranks = stage_ranks;
  shape.tp = tp;
  shape.stages = o.stages;
  shape.virtual_stages = o.virtual_stages;
  shape = shape.at_world_rank(rank);
  check_runnable(m, shape);
  // A rank's token indices and routing slots are 32-bit.
  if (global_tokens / stage_ranks > std::numeric_limits<int32_t>::max())
    throw UsageError("--batch-tokens " + std::to_string(global_tokens) + ": " + std::to_string(global_tokens / stage_ranks) +
                     " tokens per rank, expected at most " + std::to_string(std::numeric_limits<int32_t>::max()));
  if (o.warmup >= o.steps)
    throw UsageError("--warmup " + std::to_string(o.warmup) + ": expected fewer than --steps " + std::to_string(o.steps) +
                     " (at least one timed step)");
  const int64_t warmup = o.warmup >= 0 ? o.warmup : std::min<int64_t>(2, o.steps - 1);
  const std::string op_timing = o.op_timing.empty() ? (cuda ? "alternate" : "all") : o.op_timing;
  if (op_timing != "all" && op_timing != "alternate")
    throw UsageError("--op-timing " + op_timing + ": expected all or alternate");
  if (op_timing == "alternate" && o.steps - warmup < 2)
    throw UsageError("--op-timing alternate: " + std::to_string(o.steps - warmup) +
                     " timed step(s), expected at least 2 (--steps, --warmup)");
  // Rank 0 writes the record and the checkpoint: its view of their folders decides, for every rank.
  std::string output_error;
  if (rank == 0) {
    try {
      if (!o.record.empty()) check_output_file("--record", o.record);
      if (!o.save.empty()) check_output_file("--save", o.save);
      // The record written over the checkpoint saved or resumed from would lose it.
      auto same_file = [](const std::string& a, const std::string& b) {
        if (a.empty() || b.empty()) return false;
        std::error_code a_error, b_error;
        const fs::path a_path = fs::weakly_canonical(a, a_error), b_path = fs::weakly_canonical(b, b_error);
        return !a_error && !b_error && a_path == b_path;
      };
      for (const auto& [flag, path] : {std::pair{"--save", o.save}, std::pair{"--resume", o.resume}})
        if (same_file(o.record, path))
          throw UsageError("--record " + o.record + ": the file " + flag +
                           " names; the record would replace the checkpoint");
      // A corrupt checkpoint is refused now, before a tokenizer is trained or cached (rank 0 reads it whole).
      if (!o.resume.empty()) check_checkpoint(o.resume, m, true);
    } catch (const UsageError& e) {
      output_error = e.what();
    }
  }
  if (comm.any(!output_error.empty())) throw UsageError(output_error);
  // The checkpoint's header against this run's model, and its seed, before any data is read.
  uint64_t seed = o.seed.value_or(1);
  if (!o.resume.empty()) {
    const CheckpointState saved = check_checkpoint(o.resume, m);
    if (o.seed && *o.seed != saved.seed)
      throw UsageError("--seed " + std::to_string(*o.seed) + ": " + o.resume + " continues a run of seed " +
                       std::to_string(saved.seed) + " (leave --seed out when resuming)");
    seed = saved.seed;
  }

  // device, and whether the step fits it, before any data is read
  kernels::KernelContext ctx;
  // The host's cores shared by its ranks, but no more than the rank may run on: mpirun pins each
  // rank to one core by default, and threads beyond that would take turns on it.
  const int host_share = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local_ranks());
  const int cpus = allowed_cpus();
  const int threads = o.threads > 0 ? o.threads : std::min(host_share, cpus);
  // Said when the affinity cut the default threads, or --threads asks for more than the rank may use.
  const bool cut = o.threads == 0 && cpus < host_share;
  if (!cuda && comm.rank() == 0 && (cut || threads > cpus))
    std::cerr << "glamexec train: warning: this rank may run on " << cpus << " of the host's "
              << std::thread::hardware_concurrency() << " cores"
              << (launched_by_mpi() ? " (an MPI launcher pinned it; mpirun --bind-to none lifts that)" : "") << ": "
              << threads << " thread(s) per rank" << (threads > cpus ? ", taking turns on them" : "") << "\n";
  kernels::set_cpu_threads(ctx, threads);
  DeviceSession device(ctx, cuda);
  ctx.gemm_precision = precision;
  const StepFit memory = check_step_fits(m, shape, precision == kernels::GemmPrecision::kBf16, cuda, precision_name, comm);

  // data: the step's sequences over every rank and micro-batch
  const int64_t step_sequences = shape.global_tokens() / m.seq_len;
  std::optional<TokenBatches> batches;
  std::string text_origin = "random tokens", tokenizer_origin = "none";
  if (o.random_tokens) {
    if (!o.text.empty() || !o.tokenizer.empty()) throw UsageError("--random-tokens excludes --text and --tokenizer");
    std::vector<int32_t> stream(static_cast<size_t>(step_sequences * m.seq_len * 4 + 1));
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + 7;
    for (auto& t : stream) {
      z = z * 6364136223846793005ull + 1442695040888963407ull;
      t = static_cast<int32_t>((z >> 33) % static_cast<uint64_t>(m.vocab_size));
    }
    batches.emplace(std::move(stream), m.seq_len, step_sequences, text_origin);
  } else {
    const std::string text = o.text.empty() ? default_corpus_text() : read_text_file(o.text);
    text_origin = o.text.empty() ? std::string(kDefaultCorpusDir) : o.text;
    Tokenizer tok = get_tokenizer(o, text, text_origin, m.vocab_size, comm);
    if (tok.vocab_size() != m.vocab_size)
      throw UsageError(tok.origin() + ": SentencePiece vocabulary of " + std::to_string(tok.vocab_size()) +
                       " pieces does not match vocab_size = " + std::to_string(m.vocab_size) + " of " + m.id);
    tokenizer_origin = tok.origin();
    batches.emplace(tok.encode_text(text), m.seq_len, step_sequences, text_origin);
  }

  ResolvedRun run{o, m, model_file, precision_name, op_timing, text_origin, tokenizer_origin, shape, warmup, threads,
                  cuda, memory, seed};
  try {
    return precision == kernels::GemmPrecision::kBf16 ? train_steps<kernels::bf16>(run, *batches, ctx, comm, out)
                                                      : train_steps<float>(run, *batches, ctx, comm, out);
  } catch (const kernels::DeviceOutOfMemory& e) {  // a bad input: the run does not fit this GPU
    throw UsageError(step_label(m, shape, precision_name) + ", does not fit on " +
                     kernels::cuda_device_name(ctx.device) + ": " + e.what() + "; try a smaller --batch-tokens or --layers");
  }
}

}  // namespace glam::exec
