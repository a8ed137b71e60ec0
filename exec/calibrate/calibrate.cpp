#include "calibrate/calibrate.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <thread>

#include <sched.h>

#include <nlohmann/json.hpp>

#include "calibrate/microbench.h"
#include "calibrate/op_curves.h"
#include "common/atomic_output.h"
#include "common/catalogue.h"
#include "common/errors.h"
#include "common/json_file.h"
#include "common/record_fields.h"
#include "comm/launcher.h"
#include "core/device_session.h"
#include "core/gpu_energy_meter.h"
#include "device.h"
#include "model_config.h"
#include "train/run_record.h"
#include "train/trainer.h"

namespace glam::exec {
namespace fs = std::filesystem;

namespace {

// The chip kind a GPU's name stands for in the simulator's catalogue (topologies/chips/).
// The catalogue's chip kind of this GPU, as glamsim pairs a profile with a cluster's chips; one the
// catalogue has no kind of is written as "gpu", which no cluster has.
std::string device_kind_of(const std::string& device_name) {
  const std::string kind = gpu_chip_kind(device_name);
  return kind.empty() ? "gpu" : kind;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6e", v);
  return buf;
}

std::string list(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + num(v[i]);
  return s + "]";
}

// Descriptive text goes into TOML comments: one line, printable.
std::string comment_text(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

// A TOML basic string of one line.
std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : comment_text(s)) out += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
  return out + "\"";
}

struct Curve {
  std::vector<double> sizes, values;
  void set(const std::vector<CurvePoint>& pts) {
    sizes.clear(), values.clear();
    for (const auto& p : pts) sizes.push_back(p.size), values.push_back(p.efficiency);
  }
};

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Mean over ranks (every rank calls it).
double mean_over_ranks(Communicator& comm, double v) {
  comm.allreduce_sum(&v, 1);
  return v / comm.size();
}

// One calibration: the options checked and resolved, then each measurement in turn; rank 0
// keeps the results and writes the profile.
class Calibrator {
 public:
  Calibrator(const CalibrateOptions& o, Communicator& comm)
      : o_(o), comm_(comm), ranks_(comm.size()), rank_(comm.rank()), cuda_(o.device == "cuda") {
    check_and_resolve();
    kernels::set_cpu_threads(ctx_, threads_);
    session_.emplace(ctx_, cuda_);
    ctx_.gemm_precision = parse_gemm_precision(precision_, cuda_);
    backend_ = cuda_ ? kernels::Backend::kCuda : kernels::Backend::kCpu;
    t_min_ = o.quick ? 0.02 : 0.15;
  }

  void measure_power();
  void measure_products();
  void measure_memory();
  void measure_network();
  void measure_op_curves();
  void measure_one_rank_alone();
  std::string profile_text() const;
  std::string summary() const;

 private:
  struct MeasuredCollective {
    CollectiveKind kind;
    int ranks;
    std::vector<CollectivePoint> points;
  };
  using OpPoints = std::map<std::string, std::vector<CurvePoint>>;

  void check_and_resolve();
  void say(const std::string& s) const {
    if (rank_ == 0 && !o_.quiet) std::cerr << "calibrate: " << s << "\n" << std::flush;
  }
  // Training steps of one config on `c` (every rank of it), their per-op points into `points`.
  void train_points(Communicator& c, const std::string& id, int64_t tokens_per_rank, int run_threads, OpPoints& points);

  const CalibrateOptions& o_;
  Communicator& comm_;
  const int ranks_, rank_;
  const bool cuda_;
  // resolved options
  std::string precision_;
  std::vector<std::string> models_;
  std::vector<int64_t> tokens_;
  std::vector<std::pair<std::string, nlohmann::json>> extra_records_;
  int cores_ = 1, threads_ = 1;
  double t_min_ = 0.15;
  kernels::KernelContext ctx_;
  std::optional<DeviceSession> session_;
  kernels::Backend backend_ = kernels::Backend::kCpu;
  // results
  double peak_ = 0, bandwidth_ = 0, link_bw_ = 0, link_lat_ = 0;
  std::vector<GemmShape> model_shapes_;
  std::vector<double> model_rates_;
  std::vector<CurvePoint> matmul_points_, attention_points_, memory_points_, network_points_;
  std::vector<MeasuredCollective> collectives_;
  OpPoints op_points_, alone_points_;
  int runs_ = 0;
  double thread_speedup_ = 1;
  int speedup_threads_ = 1;
  double idle_W_ = 0, busy_W_ = 0, power_window_s_ = 0;
};

// GPUs: the chip's power from its energy counter (the energy model's idle_W and busy_W), first idle,
// then running the largest square product back to back. First in the calibration, while the GPU
// has not worked yet: idle power right after work still carries the decay of the busy clocks.
void Calibrator::measure_power() {
  if (!cuda_) return;
  GpuEnergyMeter meter(ctx_.device);
  const bool shared = local_ranks() > kernels::cuda_device_count();  // two ranks on one card
  if (comm_.any(!meter.available() || shared)) {
    say("power: not measured (" +
        (!meter.available() ? meter.why_not()
         : shared           ? std::string("ranks share a GPU")
                            : std::string("a GPU of another rank has no energy counter")) + ")");
    return;
  }
  // The counter updates every 20-100 ms: windows of seconds keep that under a few percent.
  power_window_s_ = o_.quick ? 1.0 : 2.0;
  say("power: idle for " + std::to_string(static_cast<int>(power_window_s_)) + " s, then products back to back");
  // Mean power per rank over `work`, or -1 where a read failed or the counter did not move.
  auto mean_power = [&](const std::function<void()>& work) {
    kernels::synchronize(ctx_);
    comm_.barrier();
    const double e0 = meter.read_joules();
    const auto t0 = std::chrono::steady_clock::now();
    work();
    kernels::synchronize(ctx_);
    const double e1 = meter.read_joules();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return e0 >= 0 && e1 > e0 ? (e1 - e0) / seconds : -1.0;
  };
  const double idle = mean_power([&] { std::this_thread::sleep_for(std::chrono::duration<double>(power_window_s_)); });
  const GemmShape square{8192, 8192, 8192};
  gemm_rate(ctx_, square, 0.3);  // clocks up first
  const double busy = mean_power([&] { gemm_rate(ctx_, square, power_window_s_); });
  if (comm_.any(idle <= 0 || busy < idle)) {  // every rank agrees before writing anything
    say("power: not measured (the energy counter did not give a usable reading)");
    return;
  }
  idle_W_ = mean_over_ranks(comm_, idle);
  busy_W_ = mean_over_ranks(comm_, busy);
}

// Everything is checked before the first measurement.
void Calibrator::check_and_resolve() {
  if (o_.device != "cpu" && !cuda_) throw UsageError("--device " + o_.device + ": unknown device (expected cpu or cuda)");
  if (cuda_ && !kernels::cuda_built())
    throw UsageError("--device cuda: this build has no CUDA backend (configure with nvcc present, -DGLAM_CUDA=ON; "
                     "expected --device cpu)");
  if (cuda_ && kernels::cuda_device_count() == 0)
    throw UsageError("--device cuda: no CUDA device is visible on this host (" + kernels::cuda_no_device_reason() +
                     "; expected --device cpu)");
  if (cuda_ && ranks_ > 1 && comm_.name() != "nccl")
    throw UsageError("--device cuda on " + std::to_string(ranks_) + " ranks needs the NCCL communicator (a CUDA build with NCCL)");
  if (cuda_ && o_.threads > 0) throw UsageError("--threads " + std::to_string(o_.threads) + ": only for --device cpu");
  precision_ = o_.precision.empty() ? (cuda_ ? "bf16" : "fp32") : o_.precision;
  parse_gemm_precision(precision_, cuda_);  // throws on a bad one
  if (!o_.out.empty()) {
    check_output_file("--out", o_.out);
  }
  if (o_.threads < 0) throw UsageError("--threads " + std::to_string(o_.threads) + ": expected a positive count");
  if (o_.steps < 0 || o_.steps == 1) throw UsageError("--steps " + std::to_string(o_.steps) + ": expected at least 2");
  if (o_.layers < 0) throw UsageError("--layers " + std::to_string(o_.layers) + ": expected 0 (all) or more");
  // GPUs need larger steps to fill them: the 0.1B configs at up to 32k tokens per rank.
  models_ = !o_.models.empty() ? o_.models
            : cuda_ ? std::vector<std::string>{"glam-0.1b", "glam-0.1b-64e"}
                    : std::vector<std::string>{"glam-tiny", "glam-tiny-8e"};
  tokens_ = !o_.tokens.empty() ? o_.tokens
            : cuda_ ? (o_.quick ? std::vector<int64_t>{2048, 8192} : std::vector<int64_t>{2048, 8192, 16384, 32768})
            : o_.quick ? std::vector<int64_t>{256, 512}
                       : std::vector<int64_t>{384, 768, 1536, 3072};
  for (const auto& id : models_) {
    ModelConfig m = load_model(id);  // ConfigError on an unknown model
    if (o_.layers > m.layers)
      throw UsageError("--layers " + std::to_string(o_.layers) + ": " + m.id + " has " + std::to_string(m.layers) + " layers");
    for (int64_t t : tokens_) {
      const int64_t unit = m.is_moe() ? std::lcm(m.seq_len, m.group_tokens) : m.seq_len;
      if (t <= 0 || t % unit != 0)
        throw UsageError("--tokens " + std::to_string(t) + ": tokens per rank must be a positive multiple of " +
                         std::to_string(unit) + " for " + m.id);
    }
    if (m.is_moe() && m.experts % ranks_ != 0)
      throw UsageError(std::to_string(ranks_) + " ranks do not divide the " + std::to_string(m.experts) +
                       " experts of " + m.id);
  }
  for (const auto& f : o_.records) {
    nlohmann::json j = read_json_file(f, "an executor run record");
    if (!j.is_object())
      throw ConfigError(f, "(top level)", std::string("a JSON ") + j.type_name(), "an object (an executor run record)");
    if (j.value("schema", "") != "glam-run-record/1")
      throw ConfigError(f, "schema", j.value("schema", "(missing)"), "\"glam-run-record/1\" (an executor run record)");
    if (!j.contains("device") || j["device"].value("kind", "") != o_.device)
      throw ConfigError(f, "device.kind", j.contains("device") ? j["device"].value("kind", "(missing)") : "(missing)",
                        "\"" + o_.device + "\" (records of the device being calibrated)");
    // Products in another arithmetic run at another rate: their points would bend this profile's curves
    // (validate refuses the same pairing). Records from before the key are taken as they are.
    if (const std::string ran = record_gemm_precision(j, f); ran != precision_)
      throw ConfigError(f, "device.gemm_precision", "\"" + ran + "\"",
                        "\"" + precision_ + "\", the products this calibration measures (--precision " + ran +
                            " calibrates those)");
    // Everything the op curves read from it must be readable now, not after the calibration's runs.
    try {
      std::map<std::string, std::vector<CurvePoint>> scratch;
      add_op_points(j, f, 1, 1, scratch);
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(f, "(record)", e.what(), "a run record as glamexec train --record writes it");
    }
    extra_records_.emplace_back(f, std::move(j));
  }
  cores_ = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads_ = cuda_ ? 1 : o_.threads > 0 ? o_.threads : std::max(1, cores_ / local_ranks());
  speedup_threads_ = threads_;
  if (!cuda_ && rank_ == 0 && local_ranks() * threads_ > cores_)
    std::cerr << "glamexec calibrate: warning: " << local_ranks() << " rank(s) x " << threads_ << " thread(s) on "
              << cores_ << " cores: the profile measures an oversubscribed host\n";
}

// Matrix products: the peak, the square-product and attention-shaped curves, and the rates of the
// calibration configs' own product shapes.
void Calibrator::measure_products() {
  std::vector<GemmShape> squares;
  const std::vector<int64_t> square_sizes = cuda_ ? std::vector<int64_t>{256, 512, 1024, 2048, 4096, 8192}
                                                  : std::vector<int64_t>{32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536};
  for (int64_t n : square_sizes)
    if (!o_.quick || n <= (cuda_ ? 2048 : 512)) squares.push_back({n, n, n});
  for (const auto& id : models_) {
    ModelConfig m = load_model(id);
    // On GPUs at most 8,192 tokens: the logits product of 32,768 would need a 34 GB output.
    const int64_t t = std::min<int64_t>(*std::max_element(tokens_.begin(), tokens_.end()), cuda_ ? 8192 : INT64_MAX);
    const int64_t d = m.d_model, a = m.attention_width(), h = m.ffn_hidden;
    for (GemmShape s : {GemmShape{t, 3 * a, d}, GemmShape{t, 2 * h, d}, GemmShape{t, d, h}, GemmShape{t, m.vocab_size, d},
                        GemmShape{d, h, t, 1, true, false}, GemmShape{t, d, m.vocab_size}})
      model_shapes_.push_back(s);
  }
  say("matrix products (" + std::to_string(squares.size() + model_shapes_.size()) + " shapes)");
  for (const auto& s : squares) {
    double r = mean_over_ranks(comm_, gemm_rate(ctx_, s, t_min_));
    peak_ = std::max(peak_, r);
    matmul_points_.push_back({s.flops(), r});
  }
  for (const auto& s : model_shapes_) {
    model_rates_.push_back(mean_over_ranks(comm_, gemm_rate(ctx_, s, t_min_)));
    peak_ = std::max(peak_, model_rates_.back());
  }
  for (auto& p : matmul_points_) p.efficiency /= peak_;
  // attention-shaped batched products (scores: S x S x dh per head and sequence; context: S x dh x S)
  ModelConfig m = load_model(models_.front());
  const int64_t S = m.seq_len, dh = m.head_dim;
  for (int64_t seqs : {1, 2, 4, 8, 16}) {
    if (o_.quick && seqs > 4) break;
    GemmShape scores{S, S, dh, seqs * m.heads, false, true}, context{S, dh, S, seqs * m.heads};
    attention_points_.push_back({scores.flops(), mean_over_ranks(comm_, gemm_rate(ctx_, scores, t_min_)) / peak_});
    attention_points_.push_back({context.flops(), mean_over_ranks(comm_, gemm_rate(ctx_, context, t_min_)) / peak_});
  }
}

// CPU: STREAM triad (and copy) with the rank's threads; GPU: device-to-device copies.
void Calibrator::measure_memory() {
  say("memory bandwidth");
  std::vector<double> sizes;
  if (cuda_)
    for (double b = 1 << 20; b <= (o_.quick ? 64 << 20 : 1 << 30); b *= 4) sizes.push_back(b);
  else
    for (double b = 48e3; b <= (o_.quick ? 50e6 : 400e6); b *= 4) sizes.push_back(b);
  std::vector<double> rates;
  for (double b : sizes)
    rates.push_back(mean_over_ranks(comm_, cuda_ ? device_copy_rate(b, t_min_) : triad_rate(threads_, b, t_min_)));
  // The bandwidth is that of the largest size, out of every cache.
  const double copy_large = cuda_ ? rates.back() : mean_over_ranks(comm_, copy_rate(threads_, sizes.back(), t_min_));
  bandwidth_ = std::max(rates.back(), copy_large);
  for (size_t i = 0; i < sizes.size(); ++i) memory_points_.push_back({sizes[i], rates[i] / bandwidth_});
}

// Several ranks: the link (latency and bandwidth of the world all-to-all), then every collective
// kind over groups of 2, 4, ... ranks and all of them, all groups at once (as the groups of a step run).
void Calibrator::measure_network() {
  if (ranks_ < 2) return;
  std::vector<double> buffers;
  const double largest = cuda_ ? (o_.quick ? 16 << 20 : 256 << 20) : (o_.quick ? 1 << 20 : 64 << 20);
  for (double b = 64; b <= largest; b *= 4) buffers.push_back(b);
  const double min_s = o_.quick ? 0.02 : 0.1;
  say("all-to-all between " + std::to_string(ranks_) + " ranks");
  auto pts = collective_times(comm_, CollectiveKind::kAllToAll, buffers, min_s, backend_);
  // Latency: the fastest of the small exchanges (a rank descheduled on a busy host spikes one size).
  link_lat_ = pts.front().seconds;
  for (const auto& p : pts)
    if (p.buffer_bytes <= 1024.0 * ranks_) link_lat_ = std::min(link_lat_, p.seconds);
  // Ranks on one host exchange small buffers in microseconds; a millisecond or more is the time the
  // ranks waited for a core (more ranks than free cores), which the profile would then call a link.
  if (rank_ == 0 && !cuda_ && link_lat_ > 1e-3)
    std::cerr << "glamexec calibrate: warning: the smallest all-to-all took " << link_lat_ * 1e3
              << " ms: the ranks waited for the CPU scheduler (a busy or oversubscribed host), so the profile's "
                 "link latency and bandwidth measure it, not the link; calibrate again on an idle host\n";
  // Bandwidth: the best of the large buffers, never dividing by less than half the measured time.
  const double remote = bus_factor(CollectiveKind::kAllToAll, ranks_);  // share of the buffer leaving the rank
  for (const auto& p : pts)
    if (p.buffer_bytes >= 65536.0 * ranks_)
      link_bw_ = std::max(link_bw_, remote * p.buffer_bytes / std::max(p.seconds - link_lat_, 0.5 * p.seconds));
  for (const auto& p : pts) {
    // The simulator's generic curve, by bytes per destination: wire time / (time - latency).
    const double wire = remote * p.buffer_bytes / link_bw_;
    const double eff = p.seconds > link_lat_ ? wire / (p.seconds - link_lat_) : 1.0;
    network_points_.push_back({p.buffer_bytes / ranks_, std::clamp(eff, 1e-4, 1.0)});
  }
  std::vector<int> group_sizes;
  for (int g = 2; g < ranks_; g *= 2) group_sizes.push_back(g);
  group_sizes.push_back(ranks_);
  for (int g : group_sizes) {
    say("collectives over groups of " + std::to_string(g) + " ranks");
    // Ranks past the last whole group sit out (color -1); rank 0 is always in the first group.
    const int color = (rank_ / g + 1) * g <= ranks_ ? rank_ / g : -1;
    std::unique_ptr<Communicator> group = g == ranks_ ? nullptr : comm_.split(color);
    Communicator* c = g == ranks_ ? &comm_ : group.get();
    for (CollectiveKind kind : {CollectiveKind::kAllToAll, CollectiveKind::kAllReduce, CollectiveKind::kReduceScatter,
                                CollectiveKind::kAllGather}) {
      if (c) collectives_.push_back({kind, g, collective_times(*c, kind, buffers, min_s, backend_)});
      comm_.barrier();
    }
  }
}

void Calibrator::train_points(Communicator& c, const std::string& id, int64_t tokens_per_rank, int run_threads,
                              OpPoints& points) {
  TrainOptions to;
  to.device = o_.device;
  to.precision = precision_;
  to.model = id;
  to.layers = o_.layers;
  to.batch_tokens = tokens_per_rank * c.size();
  to.steps = o_.steps > 0 ? o_.steps : o_.quick ? 3 : 8;
  to.warmup = std::min<int64_t>(o_.quick ? 1 : 2, to.steps - 1);  // --steps 2 keeps one timed step
  // CUDA times ops on every other timed step; with a single timed step, that one times them.
  if (to.steps - to.warmup < 2) to.op_timing = "all";
  to.threads = run_threads;
  to.format = "json";
  to.random_tokens = true;
  to.seed = o_.seed;
  to.quiet = true;
  std::ostringstream record_text;
  run_train(to, c, record_text);
  if (c.rank() == 0) {
    auto record = nlohmann::json::parse(record_text.str());
    add_op_points(record, "calibration run " + id + " " + std::to_string(tokens_per_rank), peak_, bandwidth_, points);
  }
}

// Per-op curves from training steps of the calibration configs, every rank at once with `threads`
// threads, plus points from the given run records.
void Calibrator::measure_op_curves() {
  for (const auto& id : models_)
    for (int64_t t : tokens_) {
      say("training steps: " + id + ", " + std::to_string(t) + " tokens per rank");
      train_points(comm_, id, t, threads_, op_points_);
      ++runs_;
    }
  if (rank_ == 0)
    for (const auto& [f, j] : extra_records_) {
      // A record made with other threads per rank: rates scale with the threads (as in validation).
      const int rt = j["device"].value("threads", threads_);
      const double scale = !cuda_ && rt > 0 ? static_cast<double>(rt) / threads_ : 1.0;  // GPU: host threads idle
      add_op_points(j, f, peak_ * scale, bandwidth_ * scale, op_points_);
    }
}

// A record may give one rank every core of the host. How much faster do the calibration configs'
// products run that way (the other ranks asleep) than at `threads` with every rank busy, and what
// does each op take? BLAS threading speeds large products up and barely helps small batched ones,
// so each op gets its own curve. The speedup is measured right before those training steps, so
// that both see the host in the same state.
void Calibrator::measure_one_rank_alone() {
  if (cuda_ || cores_ <= threads_) return;
  say("matrix products with " + std::to_string(cores_) + " threads in one rank");
  comm_.barrier();
  if (rank_ == 0 && allowed_cpus() < cores_)
    std::cerr << "glamexec calibrate: warning: this rank may run on " << allowed_cpus() << " of the " << cores_
              << " cores (an MPI launcher pinned it; mpirun --bind-to none lifts that): thread_speedup measures "
                 "the pinned rank, not the host\n";
  speedup_threads_ = cores_;
  if (rank_ == 0) {
    kernels::KernelContext wide;
    kernels::set_cpu_threads(wide, cores_);
    std::vector<double> ratios;
    for (size_t i = 0; i < model_shapes_.size(); ++i)
      ratios.push_back(gemm_rate(wide, model_shapes_[i], t_min_) / model_rates_[i]);
    std::sort(ratios.begin(), ratios.end());
    thread_speedup_ = ratios[ratios.size() / 2];
    say("training steps of rank 0 alone with " + std::to_string(speedup_threads_) + " threads");
    auto alone = make_single_communicator();
    for (const auto& id : models_)
      for (int64_t t : tokens_) train_points(*alone, id, t, speedup_threads_, alone_points_);
    kernels::set_cpu_threads(ctx_, threads_);
  }
  // The other ranks sleep through it instead of taking a core.
  comm_.idle_barrier();
}

std::string Calibrator::profile_text() const {
  Curve matmul, attention, memory, network;
  matmul.set(merge_curve(matmul_points_, 1e-4, 1.0));
  attention.set(merge_curve(attention_points_, 1e-4, 1.0));
  memory.set(merge_curve(memory_points_, 1e-4, 1.0));
  network.set(merge_curve(network_points_, 1e-4, 1.0));
  std::ostringstream p;
  p << "# Calibration profile written by `glamexec calibrate --device " << o_.device << "` (" << utc_now() << ").\n"
    << "# host: " << comment_text(host_name()) << "\n"
    << "# cpu: " << comment_text(cpu_model_name()) << " (" << cores_ << " hardware threads)\n";
  if (cuda_)
    p << "# gpu: " << comment_text(kernels::cuda_device_name(ctx_.device)) << ", products in " << precision_
      << ", collectives through " << comm_.name() << "\n";
  std::string model_list;
  for (const auto& id : models_) model_list += (model_list.empty() ? "" : ", ") + id;
  p << "# measured with " << ranks_ << " rank(s) x " << threads_ << " thread(s), every rank at once"
    << (o_.quick ? " (--quick)" : "") << "\n"
    << "# per-op curves: " << runs_ << " training run(s) of " << comment_text(model_list) << " at tokens per rank";
  for (int64_t t : tokens_) p << " " << t;
  if (!o_.records.empty()) p << ", plus " << o_.records.size() << " run record(s)";
  p << "\ndevice = \"" << (cuda_ ? device_kind_of(kernels::cuda_device_name(ctx_.device)) : "cpu") << "\"\n\n"
    << "[measured]\n"
    << "host = " << toml_string(host_name()) << "  # validate notes records from another host or device\n"
    << "device_name = " << toml_string(cuda_ ? kernels::cuda_device_name(ctx_.device) : cpu_model_name()) << "\n"
    << "precision = \"" << precision_ << "\"          # the products' arithmetic (--precision)\n"
    << "peak_flops = " << num(peak_) << "            # best product rate of one rank (kernels::gemm)\n"
    << "memory_bandwidth_Bps = " << num(bandwidth_)
    << (cuda_ ? "  # device-to-device copies, bytes read + written\n" : "  # streaming copy/triad of one rank\n")
    << "threads = " << threads_ << "\n"
    << "speedup_threads = " << speedup_threads_ << "\n"
    << "thread_speedup = " << num(thread_speedup_)
    << "     # products of one rank with speedup_threads threads, the others idle, over `threads` threads\n\n"
    << "[compute]\n"
    << "# square products n x n x n\n"
    << "matmul_flops = " << list(matmul.sizes) << "\n"
    << "matmul_efficiency = " << list(matmul.values) << "\n"
    << "# attention-shaped batched products (seq x seq x head_dim and seq x head_dim x seq per head)\n"
    << "attention_flops = " << list(attention.sizes) << "\n"
    << "attention_efficiency = " << list(attention.values) << "\n\n"
    << "[memory]\n"
    << (cuda_ ? "# device-to-device copies of this many bytes\n" : "# triad a = b + s*c (STREAM counting) over this many bytes\n")
    << "bytes = " << list(memory.sizes) << "\n"
    << "efficiency = " << list(memory.values) << "\n";
  if (busy_W_ > 0)
    p << "\n[power]\n"
      << "# the GPU's energy counter (NVML): idle for " << power_window_s_ << " s, then 8192^3 products in "
      << precision_ << " back to back for " << power_window_s_ << " s; mean over ranks\n"
      << "idle_W = " << num(idle_W_) << "\n"
      << "busy_W = " << num(busy_W_) << "\n";
  if (ranks_ > 1) {
    p << "\n[network]\n"
      << "# all-to-all between " << ranks_ << " ranks: latency = time of the smallest exchanges, bandwidth = the best\n"
      << "# (ranks-1) x block / (time - latency); the efficiency curve is by bytes per destination.\n"
      << "link_bandwidth_Bps = " << num(link_bw_) << "\n"
      << "link_latency_s = " << num(link_lat_) << "\n"
      << "# The host cluster of `glamsim validate` routes rank to rank through a switch vertex, two links\n"
      << "# each carrying link_latency_s: the factor makes the route's latency the measured one.\n"
      << "latency_factor = 0.5\n"
      << "bytes = " << list(network.sizes) << "\n"
      << "bandwidth_efficiency = " << list(network.values) << "\n\n"
      << "# Collectives over groups of `ranks` ranks, all groups at once: median seconds of one by per-rank\n"
      << "# buffer bytes (as the StepGraph counts them), and the bus efficiency the simulator uses in place of\n"
      << "# bandwidth_efficiency and route latencies: bus factor x bytes / seconds / link_bandwidth_Bps, with\n"
      << "# NCCL-tests' bus factors (2(n-1)/n for all_reduce, (n-1)/n for the others).\n";
    for (const auto& m : collectives_) {
      std::vector<double> bytes, seconds, bus;
      for (const auto& pt : m.points) {
        bytes.push_back(pt.buffer_bytes), seconds.push_back(pt.seconds);
        bus.push_back(std::clamp(bus_factor(m.kind, m.ranks) * pt.buffer_bytes / pt.seconds / link_bw_, 1e-6, 1.0));
      }
      p << "[[network.collective]]\nkind = \"" << collective_name(m.kind) << "\"\nranks = " << m.ranks << "\n"
        << "bytes = " << list(bytes) << "\nseconds = " << list(seconds) << "\nbus_efficiency = " << list(bus) << "\n";
    }
  }
  p << "\n# Per-op curves: StepGraph FLOPs (matrix ops) or bytes (memory-bound ops) against the op's\n"
    << "# measured median time, relative to peak_flops or memory_bandwidth_Bps (may exceed 1).\n";
  auto write_curves = [&](const std::string& table, const OpPoints& points) {
    for (const auto& [name, pts] : points) {
      Curve c;
      c.set(merge_curve(pts, 1e-4, 100.0));
      p << "[" << table << "." << name << "]\nsizes = " << list(c.sizes) << "\nefficiency = " << list(c.values) << "\n";
    }
  };
  write_curves("ops", op_points_);
  if (!alone_points_.empty()) {
    p << "\n# The same for one rank alone on the host with speedup_threads threads (still relative to\n"
      << "# peak_flops and memory_bandwidth_Bps of one rank at `threads`): one-rank runs with that many threads.\n";
    write_curves("ops_alone", alone_points_);
  }
  return p.str();
}

std::string Calibrator::summary() const {
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << "calibrated " << ranks_ << " rank(s) x " << threads_
    << " thread(s): peak " << peak_ / 1e9 << " GFLOP/s, memory " << bandwidth_ / 1e9 << " GB/s";
  if (ranks_ > 1)
    s << ", link " << link_bw_ / 1e9 << " GB/s, latency " << std::setprecision(2) << link_lat_ * 1e6 << " us";
  s << ", " << op_points_.size() << " op curves";
  if (busy_W_ > 0) s << std::setprecision(0) << ", GPU power " << idle_W_ << " W idle, " << busy_W_ << " W busy";
  if (!o_.out.empty()) s << " -> " << o_.out;
  return s.str();
}

}  // namespace

int run_calibrate(const CalibrateOptions& o, Communicator& comm, std::ostream& out) {
  Calibrator c(o, comm);
  c.measure_power();
  c.measure_products();
  c.measure_memory();
  c.measure_network();
  c.measure_op_curves();
  c.measure_one_rank_alone();
  if (comm.rank() == 0) {
    if (o.out.empty()) out << c.profile_text();
    else write_file_atomically(o.out, c.profile_text());
    (o.out.empty() ? std::cerr : out) << c.summary() << "\n";
  }
  comm.barrier();
  return 0;
}

}  // namespace glam::exec
