// glamexec-bench: how well the training step uses the CPU's matrix products.
// Runs training steps of a model (random tokens, one process), logs every matrix product the
// step makes (shape and time), then times each distinct shape in isolation with OpenBLAS and
// reports: tokens/s, GFLOP/s, the share of the step spent in products, and the products'
// efficiency = (isolated time of the same products) / (their time inside the step).
#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>
#include <thread>
#include <tuple>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "accounting.h"
#include "comm/communicator.h"
#include "common/cli_checks.h"
#include "common/errors.h"
#include "gemm.h"
#include "model/transformer.h"
#include "optim/adafactor_optimizer.h"

namespace {

using glam::kernels::GemmRecord;
using Shape = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t>;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Median seconds of one call of this product shape, in isolation (fresh operands, warm).
double isolated_seconds(const Shape& s, const glam::kernels::KernelContext& ctx) {
  auto [ta, tb, m, n, k, batch] = s;
  std::vector<float> a(static_cast<size_t>(m * k * batch), 0.5f), b(static_cast<size_t>(k * n * batch), 0.25f),
      c(static_cast<size_t>(m * n * batch), 0.f);
  auto once = [&] {
    glam::kernels::gemm_strided_batched<float>(ctx, ta, tb, m, n, k, 1.f, a.data(), ta ? m : k, m * k, b.data(),
                                               tb ? k : n, k * n, 0.f, c.data(), n, m * n, batch);
  };
  once();
  std::vector<double> t;
  double start = now();
  while (t.size() < 5 || (now() - start < 0.05 && t.size() < 200)) {
    double t0 = now();
    once();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"glamexec-bench: matrix-product efficiency and time share of the CPU training step"};
  std::string model_id = "glam-tiny-8e", format = "text";
  int64_t batch_tokens = 2048, steps = 5, warmup = 2;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  using glam::cli_checks::integer_at_least;
  app.add_option("--model", model_id, "Model id or TOML file")->capture_default_str();
  app.add_option("--batch-tokens", batch_tokens, "Tokens per step, a multiple of the model's seq_len")
      ->transform(integer_at_least(1))
      ->capture_default_str();
  app.add_option("--steps", steps, "Timed steps")->transform(integer_at_least(1))->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed steps first")->transform(integer_at_least(0))->capture_default_str();
  app.add_option("--threads", threads, "BLAS threads (default: the host's cores)")->transform(integer_at_least(1));
  app.add_option("--format", format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return glam::cli_checks::report_parse_error(app, e, "glamexec-bench");
  }
  try {
    glam::ModelConfig m = glam::load_model(model_id);
    if (batch_tokens % m.seq_len != 0)
      throw glam::UsageError("--batch-tokens " + std::to_string(batch_tokens) + ": expected a multiple of " + m.id +
                             "'s seq_len " + std::to_string(m.seq_len));
    auto comm = glam::exec::make_single_communicator();
    glam::kernels::KernelContext ctx;
    glam::kernels::set_cpu_threads(ctx, threads);
    glam::exec::ExecShape shape;
    shape.seq_len = m.seq_len;
    shape.seqs = batch_tokens / m.seq_len;
    glam::exec::Transformer<float> model(m, shape, *comm, ctx);
    model.init_params(1);
    glam::exec::AdafactorOptimizer<float> opt(model.layout());
    std::mt19937_64 gen(1);
    std::vector<int32_t> in(static_cast<size_t>(shape.tokens())), tg(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = static_cast<int32_t>(gen() % static_cast<uint64_t>(m.vocab_size));
      tg[i] = static_cast<int32_t>(gen() % static_cast<uint64_t>(m.vocab_size));
    }
    std::vector<GemmRecord> log;
    std::vector<double> step_s;
    for (int64_t i = 0; i < warmup + steps; ++i) {
      ctx.gemm_log = i >= warmup ? &log : nullptr;
      double t0 = now();
      model.run(in.data(), tg.data(), i + 1, true);
      opt.update(ctx, model.params(), model.grads(), i + 1);
      if (i >= warmup) step_s.push_back(now() - t0);
    }
    ctx.gemm_log = nullptr;
    double step_total = 0, gemm_total = 0, gemm_flops = 0, iso_total = 0;
    for (double s : step_s) step_total += s;
    std::map<Shape, std::pair<int64_t, double>> shapes;  // calls, in-step seconds
    for (const auto& g : log) {
      auto& e = shapes[{g.trans_a, g.trans_b, g.m, g.n, g.k, g.batch}];
      e.first++;
      e.second += g.seconds;
      gemm_total += g.seconds;
      gemm_flops += g.flops();
    }
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& [s, e] : shapes) {
      double iso = isolated_seconds(s, ctx);
      iso_total += iso * static_cast<double>(e.first);
      auto [ta, tb, mm, nn, kk, bb] = s;
      double fl = 2.0 * static_cast<double>(mm * nn * kk * bb);
      rows.push_back({{"trans_a", ta}, {"trans_b", tb}, {"m", mm}, {"n", nn}, {"k", kk}, {"batch", bb},
                      {"calls", e.first}, {"in_step_s", e.second}, {"isolated_s", iso * static_cast<double>(e.first)},
                      {"in_step_gflops", fl * static_cast<double>(e.first) / e.second / 1e9},
                      {"isolated_gflops", fl / iso / 1e9}});
    }
    const double n_steps = static_cast<double>(steps);
    const double tokens = static_cast<double>(shape.tokens());
    const double model_flops = glam::flops_per_token(m).train() * tokens;
    nlohmann::json r = {
        {"model", m.id},
        {"batch_tokens", shape.tokens()},
        {"threads", threads},
        {"step_s", step_total / n_steps},
        {"tokens_per_s", tokens * n_steps / step_total},
        {"model_gflops_per_s", model_flops * n_steps / step_total / 1e9},
        {"matmul_gflops_per_s_in_step", gemm_flops / gemm_total / 1e9},
        {"matmul_gflops_per_s_isolated", gemm_flops / iso_total / 1e9},
        {"matmul_share_of_step", gemm_total / step_total},
        {"matmul_efficiency_vs_isolated", iso_total / gemm_total},
        {"shapes", rows}};
    if (format == "json") {
      std::cout << r.dump(2) << "\n";
      return 0;
    }
    std::cout << std::fixed << std::setprecision(1) << m.id << ", " << shape.tokens() << " tokens per step, " << threads
              << " BLAS thread(s)\n"
              << "  step " << r["step_s"].get<double>() * 1e3 << " ms, " << std::setprecision(0)
              << r["tokens_per_s"].get<double>() << " tokens/s, " << std::setprecision(1)
              << r["model_gflops_per_s"].get<double>() << " GFLOP/s (model FLOPs)\n"
              << "  matrix products: " << r["matmul_gflops_per_s_in_step"].get<double>() << " GFLOP/s in the step, "
              << r["matmul_gflops_per_s_isolated"].get<double>() << " GFLOP/s in isolation\n"
              << "  products' share of the step: " << 100 * r["matmul_share_of_step"].get<double>() << " %\n"
              << "  products' efficiency vs isolated OpenBLAS: " << 100 * r["matmul_efficiency_vs_isolated"].get<double>()
              << " %\n";
  } catch (const glam::ConfigError& e) {
    std::cerr << "glamexec-bench: error: " << e.what() << "\n";
    return glam::kExitBadInput;
  } catch (const glam::UsageError& e) {
    std::cerr << "glamexec-bench: error: " << e.what() << "\n";
    return glam::kExitBadInput;
  }
  return 0;
}
