#include "calibrate/calibrate.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>
#include <thread>

#include <sched.h>

#include <nlohmann/json.hpp>

#include "calibrate/microbench.h"
#include "calibrate/op_curves.h"
#include "common/atomic_output.h"
#include "common/errors.h"
#include "core/device_session.h"
#include "device.h"
#include "model_config.h"
#include "train/run_record.h"
#include "train/trainer.h"

namespace glam::exec {
namespace fs = std::filesystem;

namespace {

int local_ranks() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (const char* s = std::getenv(v)) return std::max(1, std::atoi(s));
  return 1;
}

// The chip kind a GPU's name stands for in the simulator's catalogue (topologies/chips/).
std::string gpu_chip_kind(const std::string& name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* kind : {"h200", "h100", "a100"})
    if (lower.find(kind) != std::string::npos) return kind;
  return "gpu";
}

const char* precision_name(kernels::GemmPrecision p) {
  switch (p) {
    case kernels::GemmPrecision::kFp32: return "fp32";
    case kernels::GemmPrecision::kTf32: return "tf32";
    case kernels::GemmPrecision::kBf16: return "bf16";
  }
  return "?";
}

// CPUs this process may run on (mpirun pins ranks to cores by default).
int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return static_cast<int>(std::thread::hardware_concurrency());
  return CPU_COUNT(&set);
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

}  // namespace

int run_calibrate(const CalibrateOptions& o, Communicator& comm, std::ostream& out) {
  const int ranks = comm.size(), rank = comm.rank();
  // ---- everything is checked before the first measurement ----
  const bool cuda = o.device == "cuda";
  if (o.device != "cpu" && !cuda) throw UsageError("--device " + o.device + ": unknown device (expected cpu or cuda)");
  if (cuda && !kernels::cuda_built())
    throw UsageError("--device cuda: this build has no CUDA backend (configure with nvcc present, -DGLAM_CUDA=ON; "
                     "expected --device cpu)");
  if (cuda && kernels::cuda_device_count() == 0)
    throw UsageError("--device cuda: no CUDA device is visible on this host (expected --device cpu)");
  if (cuda && ranks > 1 && comm.name() != "nccl")
    throw UsageError("--device cuda on " + std::to_string(ranks) + " ranks needs the NCCL communicator (a CUDA build with NCCL)");
  if (cuda && o.threads > 0) throw UsageError("--threads " + std::to_string(o.threads) + ": only for --device cpu");
  const kernels::GemmPrecision precision = parse_gemm_precision(o.precision.empty() ? (cuda ? "bf16" : "fp32") : o.precision, cuda);
  if (!o.out.empty()) {
    fs::path p(o.out);
    fs::path parent = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    if (!fs::is_directory(parent))
      throw UsageError("--out " + o.out + ": folder " + parent.string() + " does not exist");
    if (fs::is_directory(p)) throw UsageError("--out " + o.out + ": is a folder (expected a profile file name)");
  }
  if (o.threads < 0) throw UsageError("--threads " + std::to_string(o.threads) + ": expected a positive count");
  if (o.steps < 0 || o.steps == 1) throw UsageError("--steps " + std::to_string(o.steps) + ": expected at least 2");
  if (o.layers < 0) throw UsageError("--layers " + std::to_string(o.layers) + ": expected 0 (all) or more");
  // GPUs need larger steps to fill them: the 0.1B configs at up to 32k tokens per rank.
  const std::vector<std::string> models = !o.models.empty() ? o.models
                                          : cuda ? std::vector<std::string>{"glam-0.1b", "glam-0.1b-64e"}
                                                 : std::vector<std::string>{"glam-tiny", "glam-tiny-8e"};
  const std::vector<int64_t> tokens = !o.tokens.empty() ? o.tokens
                                      : cuda ? (o.quick ? std::vector<int64_t>{2048, 8192}
                                                        : std::vector<int64_t>{2048, 8192, 16384, 32768})
                                      : o.quick ? std::vector<int64_t>{256, 512}
                                                : std::vector<int64_t>{384, 768, 1536, 3072};
  for (const auto& id : models) {
    ModelConfig m = load_model(id);  // ConfigError on an unknown model
    if (o.layers > m.layers)
      throw UsageError("--layers " + std::to_string(o.layers) + ": " + m.id + " has " + std::to_string(m.layers) + " layers");
    for (int64_t t : tokens) {
      const int64_t unit = m.is_moe() ? std::lcm(m.seq_len, m.group_tokens) : m.seq_len;
      if (t <= 0 || t % unit != 0)
        throw UsageError("--tokens " + std::to_string(t) + ": tokens per rank must be a positive multiple of " +
                         std::to_string(unit) + " for " + m.id);
    }
    if (m.is_moe() && m.experts % ranks != 0)
      throw UsageError(std::to_string(ranks) + " ranks do not divide the " + std::to_string(m.experts) + " experts of " +
                       m.id);
  }
  std::vector<std::pair<std::string, nlohmann::json>> extra;
  for (const auto& f : o.records) {
    std::ifstream in(f);
    if (!in) throw ConfigError(f, "no such file (expected an executor run record)");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::parse_error& e) {
      throw ConfigError(f, std::string("not valid JSON: ") + e.what());
    }
    if (j.value("schema", "") != "glam-run-record/1")
      throw ConfigError(f, "schema", j.value("schema", "(missing)"), "\"glam-run-record/1\" (an executor run record)");
    if (!j.contains("device") || j["device"].value("kind", "") != o.device)
      throw ConfigError(f, "device.kind", j.contains("device") ? j["device"].value("kind", "(missing)") : "(missing)",
                        "\"" + o.device + "\" (records of the device being calibrated)");
    record_step_graph(j, f);  // the model and plan must be readable
    extra.emplace_back(f, std::move(j));
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = cuda ? 1 : o.threads > 0 ? o.threads : std::max(1, cores / local_ranks());
  if (!cuda && rank == 0 && local_ranks() * threads > cores)
    std::cerr << "glamexec calibrate: warning: " << local_ranks() << " rank(s) x " << threads << " thread(s) on "
              << cores << " cores: the profile measures an oversubscribed host\n";

  kernels::KernelContext ctx;
  kernels::set_cpu_threads(ctx, threads);
  const kernels::Backend backend = cuda ? kernels::Backend::kCuda : kernels::Backend::kCpu;
  DeviceSession gpu(ctx, cuda);
  ctx.gemm_precision = precision;
  const double t_min = o.quick ? 0.02 : 0.15;
  auto say = [&](const std::string& s) {
    if (rank == 0 && !o.quiet) std::cerr << "calibrate: " << s << "\n" << std::flush;
  };

  // ---- matrix products: peak and the efficiency curve ----
  std::vector<GemmShape> squares;
  const std::vector<int64_t> square_sizes = cuda ? std::vector<int64_t>{256, 512, 1024, 2048, 4096, 8192}
                                                 : std::vector<int64_t>{32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536};
  for (int64_t n : square_sizes)
    if (!o.quick || n <= (cuda ? 2048 : 512)) squares.push_back({n, n, n});
  std::vector<GemmShape> model_shapes;
  for (const auto& id : models) {
    ModelConfig m = load_model(id);
    // On GPUs at most 8,192 tokens: the logits product of 32,768 would need a 34 GB output.
    const int64_t t = std::min<int64_t>(*std::max_element(tokens.begin(), tokens.end()), cuda ? 8192 : INT64_MAX);
    const int64_t d = m.d_model, a = m.attention_width(), h = m.ffn_hidden;
    for (GemmShape s : {GemmShape{t, 3 * a, d}, GemmShape{t, 2 * h, d}, GemmShape{t, d, h}, GemmShape{t, m.vocab_size, d},
                        GemmShape{d, h, t, 1, true, false}, GemmShape{t, d, m.vocab_size}})
      model_shapes.push_back(s);
  }
  say("matrix products (" + std::to_string(squares.size() + model_shapes.size()) + " shapes)");
  double peak = 0;
  std::vector<CurvePoint> matmul_points;
  for (const auto& s : squares) {
    double r = mean_over_ranks(comm, gemm_rate(ctx, s, t_min));
    peak = std::max(peak, r);
    matmul_points.push_back({s.flops(), r});
  }
  std::vector<double> model_rates;
  for (const auto& s : model_shapes) {
    model_rates.push_back(mean_over_ranks(comm, gemm_rate(ctx, s, t_min)));
    peak = std::max(peak, model_rates.back());
  }
  for (auto& p : matmul_points) p.efficiency /= peak;
  // attention-shaped batched products (scores: S x S x dh per head and sequence; context: S x dh x S)
  std::vector<CurvePoint> attention_points;
  {
    ModelConfig m = load_model(models.front());
    const int64_t S = m.seq_len, dh = m.head_dim;
    for (int64_t seqs : {1, 2, 4, 8, 16}) {
      if (o.quick && seqs > 4) break;
      GemmShape scores{S, S, dh, seqs * m.heads, false, true}, context{S, dh, S, seqs * m.heads};
      attention_points.push_back({scores.flops(), mean_over_ranks(comm, gemm_rate(ctx, scores, t_min)) / peak});
      attention_points.push_back({context.flops(), mean_over_ranks(comm, gemm_rate(ctx, context, t_min)) / peak});
    }
  }

  // ---- memory ----
  say("memory bandwidth");
  std::vector<double> mem_sizes;
  if (cuda)
    for (double b = 1 << 20; b <= (o.quick ? 64 << 20 : 1 << 30); b *= 4) mem_sizes.push_back(b);
  else
    for (double b = 48e3; b <= (o.quick ? 50e6 : 400e6); b *= 4) mem_sizes.push_back(b);
  // CPU: STREAM triad (and copy) with the rank's threads; GPU: device-to-device copies.
  std::vector<double> triad;
  for (double b : mem_sizes)
    triad.push_back(mean_over_ranks(comm, cuda ? device_copy_rate(b, t_min) : triad_rate(threads, b, t_min)));
  const double copy_large = cuda ? *std::max_element(triad.begin(), triad.end())
                                 : mean_over_ranks(comm, copy_rate(threads, mem_sizes.back(), t_min));
  const double bandwidth = std::max(*std::max_element(triad.begin(), triad.end()), copy_large);
  std::vector<CurvePoint> memory_points;
  for (size_t i = 0; i < mem_sizes.size(); ++i) memory_points.push_back({mem_sizes[i], triad[i] / bandwidth});

  // ---- collectives (several ranks) ----
  // The link: latency and bandwidth of the world all-to-all. Then every collective kind over groups
  // of 2, 4, ... ranks and all of them, all groups at once (as the groups of a step run).
  double link_bw = 0, link_lat = 0;
  std::vector<CurvePoint> network_points;
  struct MeasuredCollective {
    CollectiveKind kind;
    int ranks;
    std::vector<CollectivePoint> points;
  };
  std::vector<MeasuredCollective> collectives;
  if (ranks > 1) {
    std::vector<double> buffers;
    const double largest = cuda ? (o.quick ? 16 << 20 : 256 << 20) : (o.quick ? 1 << 20 : 64 << 20);
    for (double b = 64; b <= largest; b *= 4) buffers.push_back(b);
    const double min_s = o.quick ? 0.02 : 0.1;
    say("all-to-all between " + std::to_string(ranks) + " ranks");
    auto pts = collective_times(comm, CollectiveKind::kAllToAll, buffers, min_s, backend);
    // Latency: the fastest of the small exchanges (a rank descheduled on a busy host spikes one size).
    link_lat = pts.front().seconds;
    for (const auto& p : pts)
      if (p.buffer_bytes <= 1024.0 * ranks) link_lat = std::min(link_lat, p.seconds);
    // Bandwidth: the best of the large buffers, never dividing by less than half the measured time.
    const double remote = bus_factor(CollectiveKind::kAllToAll, ranks);  // share of the buffer leaving the rank
    for (const auto& p : pts)
      if (p.buffer_bytes >= 65536.0 * ranks)
        link_bw = std::max(link_bw, remote * p.buffer_bytes / std::max(p.seconds - link_lat, 0.5 * p.seconds));
    for (const auto& p : pts) {
      // The simulator's generic curve, by bytes per destination: wire time / (time - latency).
      const double wire = remote * p.buffer_bytes / link_bw;
      const double eff = p.seconds > link_lat ? wire / (p.seconds - link_lat) : 1.0;
      network_points.push_back({p.buffer_bytes / ranks, std::clamp(eff, 1e-4, 1.0)});
    }
    std::vector<int> group_sizes;
    for (int g = 2; g < ranks; g *= 2) group_sizes.push_back(g);
    group_sizes.push_back(ranks);
    for (int g : group_sizes) {
      say("collectives over groups of " + std::to_string(g) + " ranks");
      // Ranks past the last whole group sit out (color -1); rank 0 is always in the first group.
      const int color = (rank / g + 1) * g <= ranks ? rank / g : -1;
      std::unique_ptr<Communicator> group = g == ranks ? nullptr : comm.split(color);
      Communicator* c = g == ranks ? &comm : group.get();
      for (CollectiveKind kind : {CollectiveKind::kAllToAll, CollectiveKind::kAllReduce,
                                  CollectiveKind::kReduceScatter, CollectiveKind::kAllGather}) {
        if (c) collectives.push_back({kind, g, collective_times(*c, kind, buffers, min_s, backend)});
        comm.barrier();
      }
    }
  }

  // ---- per-op curves from training steps ----
  // Every rank at once with `threads` threads; then, when the host has more cores than that, rank 0
  // alone with every core (the other ranks asleep), as a one-rank run would use them: BLAS threading
  // speeds large products up and barely helps small batched ones, so each op gets its own curve.
  std::map<std::string, std::vector<CurvePoint>> op_points, alone_points;
  int runs = 0;
  auto train_points = [&](Communicator& c, const std::string& id, int64_t tokens_per_rank, int run_threads,
                          std::map<std::string, std::vector<CurvePoint>>& points) {
    TrainOptions to;
    to.device = o.device;
    to.precision = o.precision.empty() ? (cuda ? "bf16" : "fp32") : o.precision;
    to.model = id;
    to.layers = o.layers;
    to.batch_tokens = tokens_per_rank * c.size();
    to.steps = o.steps > 0 ? o.steps : o.quick ? 3 : 8;
    to.warmup = o.quick ? 1 : 2;
    to.threads = run_threads;
    to.format = "json";
    to.random_tokens = true;
    to.seed = o.seed;
    to.quiet = true;
    std::ostringstream record_text;
    run_train(to, c, record_text);
    if (c.rank() == 0) {
      auto record = nlohmann::json::parse(record_text.str());
      add_op_points(record, "calibration run " + id + " " + std::to_string(tokens_per_rank), peak, bandwidth, points);
    }
  };
  for (const auto& id : models)
    for (int64_t t : tokens) {
      say("training steps: " + id + ", " + std::to_string(t) + " tokens per rank");
      train_points(comm, id, t, threads, op_points);
      ++runs;
    }
  // ---- one rank alone with every core ----
  // A record may give one rank every core of the host: how much faster do the calibration configs'
  // products run that way (the other ranks idle) than at `threads` threads with every rank busy?
  // BLAS threading pays off little on small products, so this is measured, not assumed; right before
  // the one-rank training steps below, so that both see the host in the same state.
  double thread_speedup = 1;
  int speedup_threads = threads;
  if (!cuda && cores > threads) {
    say("matrix products with " + std::to_string(cores) + " threads in one rank");
    comm.barrier();
    if (rank == 0 && allowed_cpus() < cores)
      std::cerr << "glamexec calibrate: warning: this rank may run on " << allowed_cpus() << " of the " << cores
                << " cores (an MPI launcher pinned it; mpirun --bind-to none lifts that): thread_speedup measures "
                   "the pinned rank, not the host\n";
    if (rank == 0) {
      kernels::KernelContext wide;
      kernels::set_cpu_threads(wide, cores);
      std::vector<double> ratios;
      for (size_t i = 0; i < model_shapes.size(); ++i) ratios.push_back(gemm_rate(wide, model_shapes[i], t_min) / model_rates[i]);
      std::sort(ratios.begin(), ratios.end());
      thread_speedup = ratios[ratios.size() / 2];
      kernels::set_cpu_threads(ctx, threads);
    }
    speedup_threads = cores;  // on every rank: the ranks decide on it together below
    // The other ranks sleep through the measurement instead of taking a core.
    comm.idle_barrier();
  }
  if (speedup_threads > threads) {
    say("training steps of rank 0 alone with " + std::to_string(speedup_threads) + " threads");
    if (rank == 0) {
      auto alone = make_single_communicator();
      for (const auto& id : models)
        for (int64_t t : tokens) train_points(*alone, id, t, speedup_threads, alone_points);
    }
    comm.idle_barrier();
  }
  if (rank == 0)
    for (const auto& [f, j] : extra) {
      // A record made with other threads per rank: rates scale with the threads (as in validation).
      const int rt = j["device"].value("threads", threads);
      const double scale = rt > 0 ? static_cast<double>(rt) / threads : 1.0;
      add_op_points(j, f, peak * scale, bandwidth * scale, op_points);
    }

  // ---- the profile ----
  if (rank == 0) {
    Curve matmul, attention, memory, network;
    matmul.set(merge_curve(matmul_points, 1e-4, 1.0));
    attention.set(merge_curve(attention_points, 1e-4, 1.0));
    memory.set(merge_curve(memory_points, 1e-4, 1.0));
    network.set(merge_curve(network_points, 1e-4, 1.0));
    std::ostringstream p;
    p << "# Calibration profile written by `glamexec calibrate --device " << o.device << "` (" << utc_now() << ").\n"
      << "# host: " << comment_text(host_name()) << "\n"
      << "# cpu: " << comment_text(cpu_model_name()) << " (" << cores << " hardware threads)\n";
    if (cuda)
      p << "# gpu: " << comment_text(kernels::cuda_device_name(ctx.device)) << ", products in " << precision_name(precision)
        << ", collectives through " << comm.name() << "\n";
    p
      << "# measured with " << ranks << " rank(s) x " << threads << " thread(s), every rank at once"
      << (o.quick ? " (--quick)" : "") << "\n"
      << "# per-op curves: " << runs << " training run(s) of " << comment_text([&] {
           std::string s;
           for (const auto& id : models) s += (s.empty() ? "" : ", ") + id;
           return s;
         }()) << " at tokens per rank";
    for (int64_t t : tokens) p << " " << t;
    if (!o.records.empty()) p << ", plus " << o.records.size() << " run record(s)";
    p << "\ndevice = \"" << (cuda ? gpu_chip_kind(kernels::cuda_device_name(ctx.device)) : "cpu") << "\"\n\n"
      << "[measured]\n"
      << "peak_flops = " << num(peak) << "            # best product rate of one rank (kernels::gemm)\n"
      << "memory_bandwidth_Bps = " << num(bandwidth)
      << (cuda ? "  # device-to-device copies, bytes read + written\n" : "  # streaming copy/triad of one rank\n")
      << "threads = " << threads << "\n"
      << "speedup_threads = " << speedup_threads << "\n"
      << "thread_speedup = " << num(thread_speedup)
      << "     # products of one rank with speedup_threads threads, the others idle, over `threads` threads\n\n"
      << "[compute]\n"
      << "# square products n x n x n\n"
      << "matmul_flops = " << list(matmul.sizes) << "\n"
      << "matmul_efficiency = " << list(matmul.values) << "\n"
      << "# attention-shaped batched products (seq x seq x head_dim and seq x head_dim x seq per head)\n"
      << "attention_flops = " << list(attention.sizes) << "\n"
      << "attention_efficiency = " << list(attention.values) << "\n\n"
      << "[memory]\n"
      << (cuda ? "# device-to-device copies of this many bytes\n" : "# triad a = b + s*c (STREAM counting) over this many bytes\n")
      << "bytes = " << list(memory.sizes) << "\n"
      << "efficiency = " << list(memory.values) << "\n";
    if (ranks > 1) {
      p << "\n[network]\n"
        << "# all-to-all between " << ranks << " ranks: latency = time of the smallest exchanges, bandwidth = the best\n"
        << "# (ranks-1) x block / (time - latency); the efficiency curve is by bytes per destination.\n"
        << "link_bandwidth_Bps = " << num(link_bw) << "\n"
        << "link_latency_s = " << num(link_lat) << "\n"
        << "# The host cluster of `glamsim validate` routes rank to rank through a switch vertex, two links\n"
        << "# each carrying link_latency_s: the factor makes the route's latency the measured one.\n"
        << "latency_factor = 0.5\n"
        << "bytes = " << list(network.sizes) << "\n"
        << "bandwidth_efficiency = " << list(network.values) << "\n\n"
        << "# Collectives over groups of `ranks` ranks, all groups at once: median seconds of one by per-rank\n"
        << "# buffer bytes (as the StepGraph counts them), and the bus efficiency the simulator uses in place of\n"
        << "# bandwidth_efficiency and route latencies: bus factor x bytes / seconds / link_bandwidth_Bps, with\n"
        << "# NCCL-tests' bus factors (2(n-1)/n for all_reduce, (n-1)/n for the others).\n";
      for (const auto& m : collectives) {
        std::vector<double> bytes, seconds, bus;
        for (const auto& pt : m.points) {
          bytes.push_back(pt.buffer_bytes), seconds.push_back(pt.seconds);
          bus.push_back(std::clamp(bus_factor(m.kind, m.ranks) * pt.buffer_bytes / pt.seconds / link_bw, 1e-6, 1.0));
        }
        p << "[[network.collective]]\nkind = \"" << collective_name(m.kind) << "\"\nranks = " << m.ranks << "\n"
          << "bytes = " << list(bytes) << "\nseconds = " << list(seconds) << "\nbus_efficiency = " << list(bus) << "\n";
      }
    }
    p << "\n# Per-op curves: StepGraph FLOPs (matrix ops) or bytes (memory-bound ops) against the op's\n"
      << "# measured median time, relative to peak_flops or memory_bandwidth_Bps (may exceed 1).\n";
    auto write_curves = [&](const std::string& table, const std::map<std::string, std::vector<CurvePoint>>& points) {
      for (const auto& [name, pts] : points) {
        Curve c;
        c.set(merge_curve(pts, 1e-4, 100.0));
        p << "[" << table << "." << name << "]\nsizes = " << list(c.sizes) << "\nefficiency = " << list(c.values) << "\n";
      }
    };
    write_curves("ops", op_points);
    if (!alone_points.empty()) {
      p << "\n# The same for one rank alone on the host with speedup_threads threads (still relative to\n"
        << "# peak_flops and memory_bandwidth_Bps of one rank at `threads`): one-rank runs with that many threads.\n";
      write_curves("ops_alone", alone_points);
    }
    if (o.out.empty()) out << p.str();
    else write_file_atomically(o.out, p.str());
    std::ostringstream s;
    s << std::fixed << std::setprecision(1) << "calibrated " << ranks << " rank(s) x " << threads
      << " thread(s): peak " << peak / 1e9 << " GFLOP/s, memory " << bandwidth / 1e9 << " GB/s";
    if (ranks > 1)
      s << ", link " << link_bw / 1e9 << " GB/s, latency " << std::setprecision(2) << link_lat * 1e6 << " us";
    s << ", " << op_points.size() << " op curves";
    if (!o.out.empty()) s << " -> " << o.out;
    (o.out.empty() ? std::cerr : out) << s.str() << "\n";
  }
  comm.barrier();
  return 0;
}

}  // namespace glam::exec
