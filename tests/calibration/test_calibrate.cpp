// glamexec calibrate: the per-op points invert the simulator's op-time formula, curves merge into
// strictly increasing sizes, the MoE loads match the StepGraph's uniform ones when routing is
// uniform; bad input exits 2; a one-rank profile is read back by glamsim validate.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "calibrate/op_curves.h"
#include "device.h"
#include "model_config.h"
#include "moe_load.h"
#include "step_graph.h"
#include "support/run_command.h"

namespace glam::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using exec::CurvePoint;

TEST(Calibrate, MergeCurveSortsAndTakesMedians) {
  auto c = exec::merge_curve({{100, 0.5}, {10, 0.2}, {100, 0.7}, {100, 0.9}, {1000, 300}, {10.005, 0.4}}, 1e-4, 100);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_DOUBLE_EQ(c[0].size, 10);
  EXPECT_DOUBLE_EQ(c[0].efficiency, 0.3);  // median of two
  EXPECT_DOUBLE_EQ(c[1].efficiency, 0.7);
  EXPECT_DOUBLE_EQ(c[2].efficiency, 100);  // clamped
}

json record_for(const std::string& model, int64_t global_tokens, int64_t dp, int64_t ep) {
  return {{"schema", "glam-run-record/1"},
          {"model", {{"id", model}, {"layers_run", 4}}},
          {"plan", {{"ranks", dp}, {"dp", dp}, {"ep", ep}, {"tp", 1}}},
          {"device", {{"kind", "cpu"}, {"threads", 1}}},
          {"global_batch_tokens", global_tokens},
          {"ops", json::array()}};
}

TEST(Calibrate, OpPointsInvertTheComputeModel) {
  json r = record_for("glam-tiny", 512, 1, 1);
  ModelConfig m = load_model("glam-tiny");
  m.activation_precision = "float32";
  StepShape s;
  s.tokens_per_rank = 512;
  StepGraph g = build_step_graph(m, s);
  const double peak = 1e10, bw = 1e10;
  // Forward and backward kernels get different efficiencies: their curves must stay apart.
  auto eff = [](const StepOp& op) {
    const bool bwd = op.phase == StepPhase::kBackward;
    return op.kind == OpKind::kElementwise ? (bwd ? 0.4 : 0.25) : (bwd ? 0.3 : 0.5);
  };
  for (const auto& op : g.ops) {
    if (op.kind == OpKind::kCollective) continue;
    const double t = op.kind == OpKind::kElementwise ? op.bytes / (bw * eff(op)) : op.flops / (peak * eff(op));
    r["ops"].push_back({{"id", op.id}, {"median_s", t}});
  }
  r["ops"].push_back({{"id", "grad_allreduce"}, {"median_s", 1e-3}});  // not in the graph: skipped
  std::map<std::string, std::vector<CurvePoint>> pts;
  exec::add_op_points(r, "test", peak, bw, pts);
  auto expect_curve = [&](const std::string& key, double e) {
    ASSERT_TRUE(pts.count(key)) << key;
    for (const auto& p : pts[key]) EXPECT_NEAR(p.efficiency, e, 1e-12) << key;
  };
  for (const char* name : {"attn_qkv", "attn_scores", "ffn_in", "logits"}) {
    expect_curve(std::string(name) + ".fwd", 0.5);
    expect_curve(std::string(name) + ".bwd", 0.3);
  }
  for (const char* name : {"attn_softmax", "ffn_act", "embed"}) {
    expect_curve(std::string(name) + ".fwd", 0.25);
    expect_curve(std::string(name) + ".bwd", 0.4);
  }
  expect_curve("loss.fwd", 0.25);  // the loss and its gradient are one forward op
  expect_curve("optimizer.opt", 0.25);
  EXPECT_FALSE(pts.count("ffn_in"));  // no curve mixes the phases
  // 4 layers of one size each merge into one point per phase
  EXPECT_EQ(pts["ffn_in.fwd"].size(), 4u);
  EXPECT_EQ(exec::merge_curve(pts["ffn_in.fwd"], 1e-4, 100).size(), 1u);
}

// A record in 2 micro-batches and 2 pipeline stages (and 2 tensor slices): its ops meet the StepGraph
// ops of one micro-batch ("mb1." and the stages' "s1." ids too) and of one slice, not those of the
// whole batch or the whole matrices at twice the FLOPs.
TEST(Calibrate, OpPointsOfMicroBatchedPipelinedRecords) {
  for (int64_t tp : {1, 2}) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    json r = record_for("glam-tiny", 1024, 1, 1);
    r["plan"]["ranks"] = 2 * tp, r["plan"]["pp"] = 2, r["plan"]["microbatches"] = 2, r["plan"]["tp"] = tp;
    ModelConfig m = load_model("glam-tiny");
    m.activation_precision = "float32";
    StepShape s;
    s.tokens_per_rank = 1024, s.pp = 2, s.microbatches = 2, s.layers_run = 4, s.tp = tp;
    s.overlap_grad_reduction = false, s.narrow_weight_copy = true;
    const double peak = 1e10, bw = 1e10;
    size_t matrix_ops = 0;
    for (const auto& op : build_step_graph(m, s).ops) {
      if (op.kind == OpKind::kCollective) continue;
      const double t = op.kind == OpKind::kElementwise ? op.bytes / (bw * 0.25) : op.flops / (peak * 0.5);
      r["ops"].push_back({{"id", op.id}, {"median_s", t}});
      matrix_ops += op.kind != OpKind::kElementwise && op.flops > 0 ? 1 : 0;
    }
    std::map<std::string, std::vector<CurvePoint>> pts;
    exec::add_op_points(r, "test", peak, bw, pts);
    size_t matrix_points = 0;
    for (const auto& [key, curve] : pts)
      for (const auto& p : curve) {
        const bool elementwise = std::abs(p.efficiency - 0.25) < 1e-12;
        EXPECT_TRUE(elementwise || std::abs(p.efficiency - 0.5) < 1e-12) << key << ": " << p.efficiency;
        matrix_points += elementwise ? 0 : 1;
      }
    EXPECT_EQ(matrix_points, matrix_ops);  // every micro-batch's products, both stages' (a slice's, with tp)
    EXPECT_GT(matrix_ops, 0u);
  }
}

TEST(Calibrate, UniformHistogramGivesTheUniformLoad) {
  json r = record_for("glam-tiny-8e", 1024, 2, 2);
  r["moe_layers"] = json::array();
  for (int l : {1, 3}) r["moe_layers"].push_back({{"layer", l}, {"expert_load", std::vector<double>(8, 100.0)}});
  ModelConfig m = load_model("glam-tiny-8e");
  m.moe_dispatch = "kept";  // (padded dispatch costs every slot whatever the histogram)
  StepShape s;
  s.tokens_per_rank = 512, s.dp = 2, s.ep = 2;
  auto loads = exec::record_moe_loads(m, s, r, "r.json");
  ASSERT_EQ(loads.size(), 2u);
  MoeLayerLoad u = uniform_moe_load(m, s);
  EXPECT_NEAR(loads[0].expert_tokens, u.expert_tokens, 1e-9);
  EXPECT_NEAR(loads[0].a2a_send_tokens, u.a2a_send_tokens, 1e-9);
  EXPECT_NEAR(loads[1].dest_share[0], 0.5, 1e-12);
}

class CalibrateCommand : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("glam-calibrate-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }
  static inline fs::path dir_;
};

TEST_F(CalibrateCommand, BadInputExits2) {
  auto r = run_command("glamexec calibrate --device tpu --out " + path("p.toml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown device"), std::string::npos) << r.err;
  if (kernels::cuda_device_count() == 0) {  // CI: a CUDA build without a device, or a CPU-only build
    r = run_command("glamexec calibrate --device cuda --out " + path("p.toml"));
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_TRUE(r.err.find("--device cuda: no CUDA device is visible") != std::string::npos ||
                r.err.find("--device cuda: this build has no CUDA backend") != std::string::npos)
        << r.err;
  }
  r = run_command("glamexec calibrate --device tpu --out " + path("p.toml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--device tpu: unknown device (expected cpu or cuda)"), std::string::npos) << r.err;
  r = run_command("glamexec calibrate --device cpu --precision tf32 --out " + path("p.toml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--precision tf32: TF32 is a GPU tensor-core format"), std::string::npos) << r.err;
  r = run_command("glamexec calibrate --device cpu --out " + path("missing/p.toml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  r = run_command("glamexec calibrate --device cpu --model no-such-model --out " + path("p.toml"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = run_command("glamexec calibrate --device cpu --model glam-tiny --tokens 100 --out " + path("p.toml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("multiple of 128"), std::string::npos) << r.err;
  // --records: JSON that is not a record, or a record with a value of the wrong type, is named before any
  // measurement (these aborted with the JSON library's exception).
  std::ofstream(path("array.json")) << "[1, 2]";
  r = run_command("glamexec calibrate --device cpu --quick --records " + path("array.json") + " --out " + path("p.toml"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("array.json"), std::string::npos) << r.err;
  r = run_command("glamexec calibrate --device cpu --steps 0 --out " + path("p.toml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--steps: got '0', expected a whole number of at least 2"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("p.toml")));
}

TEST_F(CalibrateCommand, OneRankProfileReadsBack) {
  auto r = run_command("glamexec calibrate --device cpu --quick --quiet --threads 1 --model glam-tiny --tokens 128 "
                       "--steps 2 --out " + path("one.toml"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(path("one.toml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("# cpu: "), std::string::npos);
  EXPECT_NE(text.find("[measured]"), std::string::npos);
  EXPECT_NE(text.find("[ops.ffn_in.fwd]"), std::string::npos);
  EXPECT_NE(text.find("[ops.ffn_in.bwd]"), std::string::npos);
  EXPECT_EQ(text.find("[network]"), std::string::npos);  // one rank: no link figures
  r = run_command("glamexec train --quiet --model glam-tiny --random-tokens --threads 1 --steps 3 --batch-tokens 256 "
                  "--record " + path("rec.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // --records takes what validate takes: a record of another arithmetic, or with a negative time, is
  // refused before any measurement (they were taken, the bad points silently dropped)
  const std::string calibrate = "glamexec calibrate --device cpu --quick --quiet --out " + path("never.toml") + " ";
  r = run_command(calibrate + "--precision bf16 --records " + path("rec.json"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'device.gemm_precision' = \"fp32\": expected \"bf16\""), std::string::npos) << r.err;
  {
    json edited = json::parse(std::ifstream(path("rec.json")));
    edited["ops"][0]["median_s"] = -5;
    std::ofstream(path("negative.json")) << edited.dump();
  }
  r = run_command(calibrate + "--records " + path("negative.json"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'ops[0].median_s' = -5: expected a time from 0 to 1e6 s"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("never.toml")));
  r = run_command("glamsim validate " + path("rec.json") + " --calibration " + path("one.toml") + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json v = json::parse(r.out);
  ASSERT_EQ(v["records"].size(), 1u);
  EXPECT_GT(v["records"][0]["simulated_step_s"].get<double>(), 0);
  EXPECT_GT(v["records"][0]["ops"].size(), 30u);
  auto other_machine_notes = [](const json& validation) {
    int n = 0;
    for (const auto& note : validation["records"][0]["notes"])
      n += note.get<std::string>().find("measured another machine") != std::string::npos;
    return n;
  };
  EXPECT_EQ(other_machine_notes(v), 0);  // the same host measured both
  // A profile of another host: validation says its times are that host's.
  const size_t host_at = text.find("\nhost = \"");
  ASSERT_NE(host_at, std::string::npos) << text;
  std::string moved = text;
  moved.replace(host_at + 1, text.find('\n', host_at + 1) - host_at - 1, "host = \"elsewhere\"");
  std::ofstream(path("elsewhere.toml")) << moved;
  r = run_command("glamsim validate " + path("rec.json") + " --calibration " + path("elsewhere.toml") + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v = json::parse(r.out);
  EXPECT_EQ(other_machine_notes(v), 1) << v["records"][0]["notes"].dump();
  EXPECT_NE(v["records"][0]["notes"].dump().find("against the profile's 'elsewhere'"), std::string::npos);
  // A profile that names no machine cannot be checked against the record's: validation says so.
  std::string anonymous;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("host = ", 0) != 0 && line.rfind("device_name = ", 0) != 0) anonymous += line + "\n";
  std::ofstream(path("anonymous.toml")) << anonymous;
  r = run_command("glamsim validate " + path("rec.json") + " --calibration " + path("anonymous.toml") + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v = json::parse(r.out);
  EXPECT_EQ(other_machine_notes(v), 0);
  EXPECT_NE(v["records"][0]["notes"].dump().find("the calibration profile names no machine"), std::string::npos)
      << v["records"][0]["notes"].dump();
}

}  // namespace
}  // namespace glam::testing
