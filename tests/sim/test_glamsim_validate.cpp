// End-to-end: `glamsim validate` on hand-written run records (the executor's own records are
// validated in tests/calibration).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "model_config.h"
#include "support/run_command.h"

namespace glam {
namespace {

namespace fs = std::filesystem;
using testing::read_whole_file;
using testing::run_command;

const fs::path kDir = fs::temp_directory_path() / ("glam-validate-" + std::to_string(::getpid()));

nlohmann::json record(const std::string& model_file, double step_s) {
  return {{"schema", "glam-run-record/1"},
          {"model", {{"id", "glam-8b-64e"}, {"file", model_file}, {"layers_run", 2}}},
          {"plan", {{"ranks", 1}, {"dp", 1}, {"ep", 1}, {"tp", 1}}},
          {"device", {{"kind", "cpu"}, {"name", "test"}, {"threads", 2}}},
          {"global_batch_tokens", 2048},
          {"step_time_s", {{"median", step_s}, {"p10", step_s}, {"p90", step_s}}},
          {"ops", {{{"id", "L0.attn_qkv.fwd"}, {"median_s", 0.01}}, {{"id", "L9.not_an_op.fwd"}, {"median_s", 0.01}}}},
          {"moe_layers", nlohmann::json::array({{{"layer", 1}, {"expert_load", std::vector<int>(64, 10)}}})}};
}

// record("", 0.5) with one edit, as text: a bad record of the table below.
std::string edited_record(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = record("", 0.5);
  edit(j);
  return j.dump();
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

const char* kProfile = R"(device = "cpu"
[measured]
peak_flops = 5e10
memory_bandwidth_Bps = 1e10
threads = 2
[compute]
matmul_flops = [1e6, 1e9]
matmul_efficiency = [0.5, 0.9]
[memory]
bytes = [1e4, 1e8]
efficiency = [0.5, 0.9]
[ops.attn_softmax]
sizes = [1e5]
efficiency = [2.5]
)";

class GlamsimValidate : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::remove_all(kDir);
    write(kDir / "profile.toml", kProfile);
    write(kDir / "gpu.toml", std::string(kProfile).replace(10, 3, "h200"));
    write(kDir / "collective.toml", std::string(kProfile) +
                                        "[[network.collective]]\nkind = \"broadcast\"\nranks = 2\nbytes = [1e3]\n"
                                        "bus_efficiency = [0.5]\n");
    // seconds = [2e-7] would give bus_efficiency 0.5 (bus factor 1 x 1e3 bytes / 2e-7 s / 1e10 B/s)
    const std::string measured_all_reduce =
        "[network]\nlink_bandwidth_Bps = 1e10\n[[network.collective]]\nkind = \"all_reduce\"\nranks = 2\n"
        "bytes = [1e3]\nbus_efficiency = [0.5]\n";
    write(kDir / "seconds.toml", std::string(kProfile) + measured_all_reduce + "seconds = [4e-7]\n");
    write(kDir / "typo.toml", std::string(kProfile) + measured_all_reduce + "second = [2e-7]\n");
    write(kDir / "a.json", record("", 0.5).dump());
    write(kDir / "hugepeak.toml", std::string(kProfile).replace(std::string(kProfile).find("5e10"), 4, "1e300"));
    write(kDir / "speedup.toml", std::string(kProfile).replace(std::string(kProfile).find("threads = 2"), 11,
                                                               "threads = 2\nspeedup_threads = 1000000"));
  }
  void TearDown() override { fs::remove_all(kDir); }
};

TEST_F(GlamsimValidate, ComparesStepAndOpsAndWritesTheReport) {
  auto r = run_command("glamsim validate " + (kDir / "a.json").string() + " --calibration " +
                       (kDir / "profile.toml").string() + " --format json --out " + (kDir / "report").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["records"].size(), 1u);
  const auto& rec = j["records"][0];
  const double measured = rec["measured_step_s"], simulated = rec["simulated_step_s"];
  EXPECT_DOUBLE_EQ(measured, 0.5);
  EXPECT_GT(simulated, 0);
  EXPECT_NEAR(rec["step_error"].get<double>(), (simulated - measured) / measured, 1e-12);
  EXPECT_NEAR(j["median_abs_step_error"].get<double>(), std::fabs(rec["step_error"].get<double>()), 1e-12);
  ASSERT_EQ(rec["ops"].size(), 1u);
  EXPECT_EQ(rec["ops"][0]["id"], "L0.attn_qkv.fwd");
  EXPECT_EQ(rec["unmatched_ops"][0], "L9.not_an_op.fwd");
  for (const char* f : {"report.md", "plot.svg", "validation.json"}) EXPECT_TRUE(fs::exists(kDir / "report" / f)) << f;
  EXPECT_NE(read_whole_file(kDir / "report/plot.svg").find("<circle"), std::string::npos);
}

// The collectives per kind and axis are in every output, not only the Markdown report.
TEST_F(GlamsimValidate, CollectivesPerKindInTextAndJson) {
  const std::string args = std::string("glamsim validate ") + GLAM_SOURCE_DIR +
                           "/reports/validation/records/glam-tiny-8e-2rank.json --calibration " + GLAM_SOURCE_DIR +
                           "/reports/validation/profile-cpu.toml";
  auto text = run_command(args);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  auto json = run_command(args + " --format json");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto collectives = nlohmann::json::parse(json.out)["records"][0]["collectives"];
  ASSERT_TRUE(collectives.contains("all_to_all over ep")) << collectives.dump();
  EXPECT_NE(text.out.find("collectives per step, summed over their op ids:"), std::string::npos) << text.out;
  std::vector<double> errors;
  for (const auto& [kind, t] : collectives.items()) {
    EXPECT_GT(t["measured_s"].get<double>(), 0) << kind;
    EXPECT_GT(t["simulated_s"].get<double>(), 0) << kind;
    EXPECT_NE(text.out.find(kind), std::string::npos) << kind << "\n" << text.out;
    errors.push_back(std::fabs(t["simulated_s"].get<double>() / t["measured_s"].get<double>() - 1));
  }
  // Their errors are summarised as the steps' are: the median and the largest.
  ASSERT_EQ(errors.size(), 2u);  // all_reduce over dp, all_to_all over ep
  const auto summary = nlohmann::json::parse(json.out);
  EXPECT_NEAR(summary["median_abs_collective_error"].get<double>(), (errors[0] + errors[1]) / 2, 1e-9);
  EXPECT_NEAR(summary["max_abs_collective_error"].get<double>(), std::max(errors[0], errors[1]), 1e-9);
  EXPECT_NE(text.out.find("median |collective error| "), std::string::npos) << text.out;
}

// Without --calibration a GPU record is set against its chip kind's defaults, which are no profile of
// any machine: nothing to note about the profile's machine then.
TEST_F(GlamsimValidate, DefaultsAreNotAProfileWithoutAMachine) {
  write(kDir / "gpu-record.json", edited_record([](nlohmann::json& j) {
          j["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H100 80GB HBM3"}};
        }));
  auto r = run_command("glamsim validate " + (kDir / "gpu-record.json").string() + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto notes = nlohmann::json::parse(r.out)["records"][0]["notes"];
  EXPECT_FALSE(notes.empty()) << "the record's unmatched op is still noted";
  EXPECT_EQ(notes.dump().find("names no machine"), std::string::npos) << notes.dump();
}

TEST_F(GlamsimValidate, AFasterHostSimulatesAFasterStep) {
  auto slow = nlohmann::json::parse(run_command("glamsim validate " + (kDir / "a.json").string() +
                                                " --calibration " + (kDir / "profile.toml").string() + " --format json")
                                        .out);
  std::string fast_profile = kProfile;
  fast_profile.replace(fast_profile.find("5e10"), 4, "1e11");
  write(kDir / "fast.toml", fast_profile);
  auto fast = nlohmann::json::parse(run_command("glamsim validate " + (kDir / "a.json").string() +
                                                " --calibration " + (kDir / "fast.toml").string() + " --format json")
                                        .out);
  EXPECT_LT(fast["records"][0]["simulated_step_s"].get<double>(), slow["records"][0]["simulated_step_s"].get<double>());
}

// A record of two pipeline stages (glam-8b-64e's first 2 blocks, one per stage, 2 micro-batches): its
// stage-named ops are found in the pipelined StepGraph, and each stage's busy time is its own ops'.
TEST_F(GlamsimValidate, PipelinedRecordsAreComparedStageByStage) {
  nlohmann::json r = record("", 0.5);
  r["plan"] = {{"ranks", 2}, {"dp", 1}, {"ep", 1}, {"tp", 1}, {"pp", 2}, {"microbatches", 2}};
  r["ops"] = {{{"id", "L0.attn_qkv.fwd"}, {"median_s", 0.01}},  {{"id", "L1.moe_router.fwd"}, {"median_s", 0.02}},
              {{"id", "s0.pp_send.fwd"}, {"median_s", 0.001}}, {{"id", "mb1.s1.pp_send.bwd"}, {"median_s", 0.002}},
              {{"id", "s1.loss.fwd"}, {"median_s", 0.03}},     {{"id", "s0.optimizer"}, {"median_s", 0.04}},
              {{"id", "s0.embed_tie_allreduce.bwd"}, {"median_s", 0.001}},
              {{"id", "s1.embed_tie_allreduce.bwd"}, {"median_s", 0.001}},
              {{"id", "pp_send.fwd"}, {"median_s", 0.001}}};  // unstaged: a one-stage id
  write(kDir / "pp.json", r.dump());
  write(kDir / "net.toml", std::string(kProfile) + "[network]\nlink_bandwidth_Bps = 1e10\nlink_latency_s = 1e-6\n");
  auto out = run_command("glamsim validate " + (kDir / "pp.json").string() + " --calibration " +
                         (kDir / "net.toml").string() + " --format json --out " + (kDir / "pp-report").string());
  ASSERT_EQ(out.exit_code, 0) << out.err;
  const auto rec = nlohmann::json::parse(out.out)["records"][0];
  EXPECT_EQ(rec["unmatched_ops"], nlohmann::json::array({"pp_send.fwd"}));
  ASSERT_EQ(rec["ops"].size(), 8u);
  std::map<std::string, int> stage;
  std::map<std::string, double> simulated;
  for (const auto& op : rec["ops"]) {
    stage[op["id"].get<std::string>()] = op["stage"].get<int>();
    simulated[op["id"].get<std::string>()] = op["simulated_s"].get<double>();
  }
  // The tied embedding's sum: the last stage finishes its backward passes first and waits in it for
  // stage 0 (the executor times that wait as part of the op); stage 0 does not wait.
  EXPECT_GT(simulated["s1.embed_tie_allreduce.bwd"], 2 * simulated["s0.embed_tie_allreduce.bwd"]);
  EXPECT_EQ(stage["L0.attn_qkv.fwd"], 0);
  EXPECT_EQ(stage["L1.moe_router.fwd"], 1);
  EXPECT_EQ(stage["mb1.s1.pp_send.bwd"], 1);
  EXPECT_EQ(stage["s0.optimizer"], 0);
  ASSERT_EQ(rec["pipeline_stages"].size(), 2u);
  EXPECT_NEAR(rec["pipeline_stages"][0]["measured_busy_s"].get<double>(), 0.01 + 0.001 + 0.04 + 0.001, 1e-12);
  EXPECT_NEAR(rec["pipeline_stages"][1]["measured_busy_s"].get<double>(), 0.02 + 0.002 + 0.03 + 0.001, 1e-12);
  EXPECT_NEAR(rec["pipeline_stages"][1]["measured_idle_s"].get<double>(), 0.5 - 0.053, 1e-12);
  double simulated_ops = 0;
  for (const auto& op : rec["ops"])
    if (op["stage"] == 1) simulated_ops += op["simulated_s"].get<double>();
  EXPECT_NEAR(rec["pipeline_stages"][1]["simulated_busy_s"].get<double>(), simulated_ops, 1e-12);
  EXPECT_NE(read_whole_file(kDir / "pp-report/report.md").find("| stage | ops measured (ms)"), std::string::npos);
  // Stages cut the blocks the record ran (--layers 3 in 3 stages), not the model's 32.
  nlohmann::json three = r;
  three["model"]["layers_run"] = 3;
  three["plan"]["ranks"] = 3, three["plan"]["pp"] = 3;
  three["ops"] = {{{"id", "L2.attn_qkv.fwd"}, {"median_s", 0.01}}, {{"id", "s2.loss.fwd"}, {"median_s", 0.03}}};
  write(kDir / "pp-first3.json", three.dump());
  out = run_command("glamsim validate " + (kDir / "pp-first3.json").string() + " --calibration " +
                    (kDir / "net.toml").string() + " --format json");
  ASSERT_EQ(out.exit_code, 0) << out.err;
  EXPECT_EQ(nlohmann::json::parse(out.out)["records"][0]["unmatched_ops"], nlohmann::json::array());
  // A plan whose stages do not multiply to the ranks is the record's error.
  r["plan"]["ranks"] = 3;
  write(kDir / "pp3.json", r.dump());
  out = run_command("glamsim validate " + (kDir / "pp3.json").string() + " --calibration " + (kDir / "net.toml").string());
  EXPECT_EQ(out.exit_code, 2);
  EXPECT_NE(out.err.find("key 'plan.ranks' = 3: expected dp x tp x pp = 1 x 1 x 2 ranks"), std::string::npos) << out.err;
}

struct BadValidate {
  std::string name, record_text, profile, expected;
};

TEST_F(GlamsimValidate, BadInputExitsTwoNamingTheFile) {
  auto other_schema = record("", 0.5);
  other_schema["schema"] = "glam-run-record/0";
  auto missing_model = record((kDir / "gone.toml").string(), 0.5);
  const std::vector<BadValidate> cases = {
      {"schema.json", other_schema.dump(), "profile.toml", "key 'schema' = \"glam-run-record/0\""},
      {"model.json", missing_model.dump(), "profile.toml", "key 'model.file'"},
      {"device.json", record("", 0.5).dump(), "gpu.toml", "measured on a h200 device"},
      {"nojson.json", "{ not json", "profile.toml", "not valid JSON"},
      {"collective.json", record("", 0.5).dump(), "collective.toml", "key 'network.collective[0].kind' = \"broadcast\""},
      {"seconds.json", record("", 0.5).dump(), "seconds.toml",
       "seconds.toml: key 'network.collective[0].bus_efficiency[0]' = 0.5: expected 0.25, what seconds[0] = 4e-07 s "
       "gives for 1000 bytes over 2 ranks (its bus factor) at link_bandwidth_Bps 1e+10 (the simulator reads "
       "bus_efficiency: edit both, or delete "
       "seconds)"},
      {"typo.json", record("", 0.5).dump(), "typo.toml",
       "typo.toml: key 'network.collective[0].second' = [2e-07]: expected one of kind, ranks, bytes, seconds and bus_efficiency"},
      {"noprofile.json", record("", 0.5).dump(), "", "calibration profile"},
      {"array.json", "[1, 2]", "profile.toml", "(top level)"},
      {"layers.json", edited_record([](nlohmann::json& j) { j["model"]["layers_run"] = 99; }),
       "profile.toml", "key 'model.layers_run' = 99"},
      {"precision.json", edited_record([](nlohmann::json& j) { j["device"]["gemm_precision"] = 0; }),
       "profile.toml", "key 'device.gemm_precision' = 0: expected \"fp32\", \"tf32\" or \"bf16\""},
      {"noops.json", edited_record([](nlohmann::json& j) { j["ops"] = nlohmann::json::array(); }),
       "profile.toml", "key 'ops' = []"},
      {"zerostep.json", record("", 0.0).dump(), "profile.toml", "key 'step_time_s.median'"},
      {"opstring.json", edited_record([](nlohmann::json& j) { j["ops"][0]["median_s"] = "fast"; }),
       "profile.toml", "key 'ops[0].median_s' = \"fast\""},
      // 2^32 + 1 cores read as 1 once narrowed to int
      {"cores.json", edited_record([](nlohmann::json& j) { j["device"]["host_cores"] = 4294967297; }),
       "profile.toml", "key 'device.host_cores' = 4294967297"},
      // ep 1.9 was cast to 1 and simulated
      {"fraction.json", edited_record([](nlohmann::json& j) { j["plan"]["ep"] = 1.9; }),
       "profile.toml", "key 'plan.ep' = 1.9: expected an integer"},
      {"hugestep.json", record("", 1e300).dump(), "profile.toml", "key 'step_time_s.median' = 1e+300"},
      // Fields that contradict each other: each rank's batch against the global one, the model's
      // sequence length, an op timed twice, a thread count of 0.
      {"batch.json", edited_record([](nlohmann::json& j) { j["batch_tokens"] = 1024; }),
       "profile.toml", "key 'batch_tokens' = 1024: expected global_batch_tokens / plan.dp = 2048 / 1"},
      {"seqlen.json", edited_record([](nlohmann::json& j) { j["seq_len"] = 3; }),
       "profile.toml", "key 'seq_len' = 3: expected 1024, the sequence length of glam-8b-64e"},
      {"twice.json", edited_record([](nlohmann::json& j) { j["ops"].push_back(j["ops"][0]); }),
       "profile.toml", "expected an op id not timed before in the record"},
      {"layersfloat.json", edited_record([](nlohmann::json& j) {
         j["model"]["layers_run"] = 2.5;
         j["model_config"] = nlohmann::json::object();
       }),
       "profile.toml", "key 'model.layers_run' = 2.5: expected a non-negative integer"},
      {"threads.json", edited_record([](nlohmann::json& j) { j["device"]["threads"] = 0; }),
       "profile.toml", "key 'device.threads' = 0: expected 1 to 4096 threads per rank"},
      // A profile's bad figure is the profile's, not the record's host cluster's.
      {"peak.json", record("", 0.5).dump(), "hugepeak.toml", "hugepeak.toml: key 'measured.peak_flops'"},
      // A million threads passed and slowed the one-rank products (299 -> 437 ms).
      {"speedup.json", record("", 0.5).dump(), "speedup.toml",
       "speedup.toml: key 'measured.speedup_threads' = 1000000: expected 0 (not measured) or a value in [1, 4096]"},
  };
  for (const auto& c : cases) {
    write(kDir / c.name, c.record_text);
    std::string cmd = "glamsim validate " + (kDir / c.name).string() + " --out " + (kDir / "out").string();
    if (!c.profile.empty()) cmd += " --calibration " + (kDir / c.profile).string();
    auto r = run_command(cmd);
    EXPECT_EQ(r.exit_code, 2) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.name << ": " << r.err;
    const bool profile_at_fault = c.name == "noprofile.json" || c.name == "device.json" || c.name == "collective.json" ||
                                  c.name == "peak.json" || c.name == "seconds.json" || c.name == "typo.json" ||
                                  c.name == "speedup.json";
    if (!profile_at_fault) {
      EXPECT_NE(r.err.find(c.name), std::string::npos) << "error should name the record: " << r.err;
    }
    EXPECT_FALSE(fs::exists(kDir / "out")) << c.name;
  }
  // The same record twice (by another path too) would count twice in the medians.
  write(kDir / "sub" / "once.json", record("", 0.5).dump());
  auto r = run_command("glamsim validate " + (kDir / "sub" / "once.json").string() + " " +
                       (kDir / "sub" / ".." / "sub" / "once.json").string() + " --calibration " +
                       (kDir / "profile.toml").string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("is given twice: each record once"), std::string::npos) << r.err;
}


// A record names its model file as glamexec saw it (relative to the folder it ran in). From anywhere
// else, a catalogue model whose configuration is the record's own is found by its id; one whose
// configuration changed since is not.
TEST_F(GlamsimValidate, CatalogueModelsAreFoundFromAnyFolder) {
  auto j = record("./somewhere-else/models/glam-8b-64e.toml", 0.5);
  j["model_config"] = model_to_json(first_layers(load_model("glam-8b-64e"), 2));
  write(kDir / "moved.json", j.dump());
  const std::string cmd = "glamsim validate " + (kDir / "moved.json").string() + " --calibration " +
                          (kDir / "profile.toml").string();
  auto r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  j["model_config"]["architecture"]["d_model"] = 1024;
  write(kDir / "moved.json", j.dump());
  r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'model_config'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("architecture.d_model 4096 (record: 1024)"), std::string::npos) << r.err;
}

// A model file edited since the run is not simulated in its place: the record's model_config
// decides. The file glamexec named (relative to the folder it ran in) is tried first, then the one
// beside the record; the first holding the run's configuration is used, and when none does the
// error names the field that changed.
TEST_F(GlamsimValidate, AModelFileEditedSinceTheRunIsRefused) {
  // A user's model, not the catalogue's (whose glam-tiny would be the run's configuration).
  std::string toml = read_whole_file(fs::path(GLAM_SOURCE_DIR) / "models" / "glam-tiny.toml");
  const std::string id_line = "id = \"glam-tiny\"";
  toml.replace(toml.find(id_line), id_line.size(), "id = \"my-tiny\"");
  auto j = record("tiny.toml", 0.5);
  j["model"]["id"] = "my-tiny";
  j["model_config"] = model_to_json(first_layers(parse_model(toml, "tiny.toml"), 2));
  j["moe_layers"] = nlohmann::json::array();
  write(kDir / "records" / "tiny.json", j.dump());
  std::string edited = toml;
  const std::string ffn_line = "ffn_hidden = 512";
  edited.replace(edited.find(ffn_line), ffn_line.size(), "ffn_hidden = 2048");
  write(kDir / "records" / "tiny.toml", edited);
  const std::string cmd = "env -C " + kDir.string() + " glamsim validate records/tiny.json --calibration profile.toml";
  auto r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("records/tiny.toml's first 2 layers now have architecture.ffn_hidden 2048 (record: 512)"), std::string::npos)
      << r.err;
  // The run's own file in the folder glamexec ran in: used, beside an edited one.
  write(kDir / "tiny.toml", toml);
  r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Words are not the configuration: a new description is still the model the run used.
  std::string reworded = toml;
  const size_t line = reworded.find("description = ");
  reworded.replace(line, reworded.find('\n', line) - line, "description = \"other words\"");
  write(kDir / "tiny.toml", reworded);
  r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // A model_config that is no object is named.
  j["model_config"] = "oops";
  write(kDir / "records" / "tiny.json", j.dump());
  r = run_command(cmd);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'model_config' = \"oops\""), std::string::npos) << r.err;
}

// Per-op curves are per phase: a slow forward curve slows the forward op only; a curve without a
// phase (older profiles) applies to every phase; an unknown op or phase is an error naming the key.
TEST_F(GlamsimValidate, OpCurvesApplyToTheirPhase) {
  auto qkv_fwd_s = [&](const std::string& extra) {
    write(kDir / "phase.toml", std::string(kProfile) + extra);
    auto r = run_command("glamsim validate " + (kDir / "a.json").string() + " --calibration " +
                         (kDir / "phase.toml").string() + " --format json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)["records"][0]["ops"][0]["simulated_s"].get<double>();
  };
  const double base = qkv_fwd_s("");
  const double slow_fwd = qkv_fwd_s("[ops.attn_qkv.fwd]\nsizes = [1e5]\nefficiency = [0.01]\n");
  const double slow_bwd = qkv_fwd_s("[ops.attn_qkv.bwd]\nsizes = [1e5]\nefficiency = [0.01]\n");
  const double slow_all = qkv_fwd_s("[ops.attn_qkv]\nsizes = [1e5]\nefficiency = [0.01]\n");
  EXPECT_GT(slow_fwd, 10 * base);
  EXPECT_DOUBLE_EQ(slow_bwd, base);
  EXPECT_DOUBLE_EQ(slow_all, slow_fwd);
  write(kDir / "phase.toml", std::string(kProfile) + "[ops.attn_qkv.sideways]\nsizes = [1e5]\nefficiency = [0.5]\n");
  auto r = run_command("glamsim validate " + (kDir / "a.json").string() + " --calibration " +
                       (kDir / "phase.toml").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("ops.attn_qkv.sideways"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("phase.toml"), std::string::npos) << r.err;
  // A misspelt op, or a phase its op never runs in, would be read and never used: both are refused.
  auto refused = [&](const std::string& table, const std::string& expected) {
    write(kDir / "phase.toml", std::string(kProfile) + table + "\nsizes = [1e5]\nefficiency = [0.5]\n");
    auto bad = run_command("glamsim validate " + (kDir / "a.json").string() + " --calibration " +
                           (kDir / "phase.toml").string());
    EXPECT_EQ(bad.exit_code, 2) << table;
    EXPECT_NE(bad.err.find(expected), std::string::npos) << bad.err;
  };
  refused("[ops.attn_contxt.bwd]", "'ops.attn_contxt'");
  refused("[ops.attn_contxt.bwd]", "attn_context");
  refused("[ops_alone.ffn_inn]", "'ops_alone.ffn_inn'");
  refused("[ops.loss.bwd]", "ops.loss.bwd");
  refused("[ops.optimizer.fwd]", "(opt)");
}


// What a comparison leaves out is said beside its figures: measured ops the simulation does not
// have, and uniform routing for a record without histograms. Histograms that cannot be the run's
// (a dense block's, more tokens than were routed) are refused.
TEST_F(GlamsimValidate, OmissionsAreNotedAndImpossibleRoutingRefused) {
  const std::string profile = " --calibration " + (kDir / "profile.toml").string();
  auto r = run_command("glamsim validate " + (kDir / "a.json").string() + profile);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 measured op(s) not in the simulated step, not compared: L9.not_an_op.fwd"), std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("routing simulated uniform"), std::string::npos) << r.out;
  auto j = record("", 0.5);
  j["moe_layers"] = nlohmann::json::array();
  write(kDir / "uniform.json", j.dump());
  r = run_command("glamsim validate " + (kDir / "uniform.json").string() + profile + " --out " + (kDir / "report").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("routing simulated uniform over the experts"), std::string::npos) << r.out;
  const std::string report = read_whole_file(kDir / "report" / "report.md");
  EXPECT_NE(report.find("routing simulated uniform"), std::string::npos);
  EXPECT_NE(report.find("Generated by `glamsim validate " + (kDir / "uniform.json").string() + profile + "`"),
            std::string::npos) << report;
  const auto summary = nlohmann::json::parse(read_whole_file(kDir / "report" / "validation.json"));
  EXPECT_EQ(summary["calibration"], (kDir / "profile.toml").string());
  EXPECT_EQ(summary["fidelity"], "analytical");
  // the unmatched op, a profile that names no machine, the softmax ops the profile measured at 1e5
  // bytes only, and uniform routing
  ASSERT_EQ(summary["records"][0]["notes"].size(), 4u);
  EXPECT_NE(summary["records"][0]["notes"][1].get<std::string>().find("the calibration profile names no machine"),
            std::string::npos)
      << summary["records"][0]["notes"];
  EXPECT_NE(summary["records"][0]["notes"][2].get<std::string>().find(
                "op(s) are more than 2x larger or smaller than any size the profile measured them at"),
            std::string::npos)
      << summary["records"][0]["notes"];

  j = record("", 0.5);
  j["moe_layers"][0]["layer"] = 0;  // glam-8b-64e's block 0 is dense
  write(kDir / "dense.json", j.dump());
  r = run_command("glamsim validate " + (kDir / "dense.json").string() + profile);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'moe_layers[0].layer' = 0: expected 1, MoE block number 1 of glam-8b-64e"), std::string::npos)
      << r.err;
  j = record("", 0.5);
  j["moe_layers"][0]["routed_tokens"] = 100;  // 64 experts x 10 tokens counted
  write(kDir / "overfull.json", j.dump());
  r = run_command("glamsim validate " + (kDir / "overfull.json").string() + profile);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'moe_layers[0].expert_load' = 640 copies in all"), std::string::npos) << r.err;
}

// A profile measured in one arithmetic does not time a run in another: a CPU's bf16 products run
// at another rate than its fp32 ones. Profiles without the key (older ones) are taken as they are.
TEST_F(GlamsimValidate, AProfileOfOtherProductsIsRefused) {
  auto with_precision = [&](const std::string& precision) {
    std::string text = kProfile;
    text.insert(text.find("peak_flops"), "precision = \"" + precision + "\"\n");
    write(kDir / "precision.toml", text);
    return run_command("glamsim validate " + (kDir / "a.json").string() + " --calibration " +
                       (kDir / "precision.toml").string());
  };
  EXPECT_EQ(with_precision("fp32").exit_code, 0);  // a.json has no gemm_precision: fp32
  auto r = with_precision("bf16");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("measured with bf16 products, but run record"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--precision fp32"), std::string::npos) << r.err;
  r = with_precision("fp16");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'measured.precision' = \"fp16\""), std::string::npos) << r.err;
}

// A GPU record is simulated with its products' arithmetic (the H200's bf16, tf32 or fp32 peak); a
// precision the executor does not have is an error.
TEST_F(GlamsimValidate, GpuRecordsUseTheirProductPrecision) {
  auto op_times = [&](const std::string& precision) {
    auto rec = record("", 0.5);
    rec["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H200"}, {"threads", 1}, {"gemm_precision", precision}};
    rec["ops"] = {{{"id", "L0.attn_qkv.fwd"}, {"median_s", 0.01}}, {{"id", "L0.attn_norm.fwd"}, {"median_s", 0.01}}};
    write(kDir / ("gpu-" + precision + ".json"), rec.dump());
    auto r = run_command("glamsim validate " + (kDir / ("gpu-" + precision + ".json")).string() + " --format json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::map<std::string, double> t;
    if (r.exit_code != 0) return t;
    const auto j = nlohmann::json::parse(r.out);
    for (const auto& op : j["records"][0]["ops"]) t[op["id"]] = op["simulated_s"];
    return t;
  };
  auto bf16 = op_times("bf16"), tf32 = op_times("tf32"), fp32 = op_times("fp32");
  ASSERT_EQ(bf16.size(), 2u);
  // Products: 989 TFLOP/s bf16, half that in tf32, 67 TFLOP/s fp32 (the roofline, same efficiency curve).
  EXPECT_NEAR(tf32["L0.attn_qkv.fwd"] / bf16["L0.attn_qkv.fwd"], 2.0, 0.2);
  EXPECT_GT(fp32["L0.attn_qkv.fwd"] / bf16["L0.attn_qkv.fwd"], 8.0);
  // A memory-bound op does not depend on the products' arithmetic.
  EXPECT_DOUBLE_EQ(fp32["L0.attn_norm.fwd"], bf16["L0.attn_norm.fwd"]);
  // A GPU record's host threads (glamexec writes the host's cores there) do not scale its products:
  // 16 of them against a GPU profile measured with 1 simulated the step 16 times faster.
  auto gpu_step = [&](int threads) {
    auto rec = record("", 0.5);
    rec["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H200"}, {"threads", threads}, {"gemm_precision", "bf16"}};
    write(kDir / "gpu-threads.json", rec.dump());
    auto r = run_command("glamsim validate " + (kDir / "gpu-threads.json").string() + " --calibration " +
                         (kDir / "gpu.toml").string() + " --format json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out)["records"][0]["simulated_step_s"].get<double>() : 0.0;
  };
  EXPECT_DOUBLE_EQ(gpu_step(16), gpu_step(1));
  EXPECT_GT(gpu_step(1), 0);
  auto bad = record("", 0.5);
  bad["device"]["gemm_precision"] = "fp8";
  write(kDir / "fp8.json", bad.dump());
  auto r = run_command("glamsim validate " + (kDir / "fp8.json").string() + " --calibration " +
                       (kDir / "profile.toml").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'device.gemm_precision' = \"fp8\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fp8.json"), std::string::npos) << r.err;
}

// A record's device.activation_precision (bf16 with glamexec --precision bf16) sets the bytes of its
// memory-bound ops: half those of float32 activations. Older records without it ran in float32.
TEST_F(GlamsimValidate, RecordsUseTheirActivationPrecision) {
  auto op_times = [&](const std::string& activations) {
    auto rec = record("", 0.5);
    rec["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H200"}, {"threads", 1}, {"gemm_precision", "bf16"}};
    if (!activations.empty()) rec["device"]["activation_precision"] = activations;
    rec["ops"] = {{{"id", "L0.attn_norm.fwd"}, {"median_s", 0.01}}};
    const fs::path file = kDir / ("act-" + (activations.empty() ? std::string("none") : activations) + ".json");
    write(file, rec.dump());
    auto r = run_command("glamsim validate " + file.string() + " --format json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return 0.0;
    return nlohmann::json::parse(r.out)["records"][0]["ops"][0]["simulated_s"].get<double>();
  };
  const double f32 = op_times("float32"), b16 = op_times("bfloat16"), unset = op_times("");
  EXPECT_DOUBLE_EQ(unset, f32);
  EXPECT_LT(b16, 0.75 * f32);  // half the bytes (the fixed launch latency keeps it above one half)
  auto bad = record("", 0.5);
  bad["device"]["activation_precision"] = "float16";
  write(kDir / "f16.json", bad.dump());
  auto r = run_command("glamsim validate " + (kDir / "f16.json").string() + " --calibration " +
                       (kDir / "profile.toml").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("key 'device.activation_precision' = \"float16\""), std::string::npos) << r.err;
}

// A record with the GPUs' measured energy gets the energy model's chip power beside it (between the
// H200's idle 70 W and busy 700 W) and its error against the measurement; a record without has none.
TEST_F(GlamsimValidate, GpuEnergyIsComparedWithTheEnergyModel) {
  auto power = [&](double step_s, double measured_W, const std::string& name, int steps = 20) {  // in 10 s
    auto rec = record("", step_s);
    rec["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H200"}, {"threads", 1}, {"gemm_precision", "bf16"},
                     {"energy", {{"joules", measured_W * 10}, {"seconds", 10}, {"gpus", 1}, {"mean_power_W", measured_W},
                                 {"timed_steps", steps}}}};
    write(kDir / name, rec.dump());
    auto r = run_command("glamsim validate " + (kDir / name).string() + " --format json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return nlohmann::json();
    return nlohmann::json::parse(r.out)["records"][0];
  };
  const auto j = power(0.5, 500, "e.json");
  ASSERT_TRUE(j.contains("simulated_chip_power_W"));
  EXPECT_EQ(j["measured_power_W"].get<double>(), 500);
  const double sim_W = j["simulated_chip_power_W"].get<double>();
  EXPECT_GT(sim_W, 70);
  EXPECT_LT(sim_W, 700);
  // steps that fill half the window (the rest waiting, as op-timed steps do) draw less above idle
  const double half_W = power(0.5, 500, "e-half.json", 10)["simulated_chip_power_W"].get<double>();
  EXPECT_LT(half_W, sim_W);
  EXPECT_GT(half_W, 70);
  // the text output reports it
  auto t = run_command("glamsim validate " + (kDir / "e.json").string());
  EXPECT_NE(t.out.find("GPU power measured 500 W, simulated"), std::string::npos) << t.out;
  // a record without energy has none
  auto plain = record("", 0.5);
  plain["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H200"}, {"threads", 1}};
  write(kDir / "plain.json", plain.dump());
  auto p = run_command("glamsim validate " + (kDir / "plain.json").string() + " --format json");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_TRUE(nlohmann::json::parse(p.out)["records"][0]["measured_power_W"].is_null());
  // a GPU profile with measured power ([power] from glamexec calibrate) replaces the chip kind's figures
  write(kDir / "gpu-power.toml", std::string(kProfile).replace(10, 3, "h200") + "[power]\nidle_W = 200\nbusy_W = 300\n");
  auto w = run_command("glamsim validate " + (kDir / "e.json").string() + " --calibration " +
                       (kDir / "gpu-power.toml").string() + " --format json");
  ASSERT_EQ(w.exit_code, 0) << w.err;
  const double measured_profile_W = nlohmann::json::parse(w.out)["records"][0]["simulated_chip_power_W"].get<double>();
  EXPECT_GE(measured_profile_W, 200);
  EXPECT_LE(measured_profile_W, 300);
  for (const auto& [table, key] : {std::pair<std::string, std::string>{"idle_W = 200\n", "power.busy_W"},
                                   {"idle_W = 300\nbusy_W = 200\n", "power.busy_W"}}) {
    write(kDir / "gpu-bad-power.toml", std::string(kProfile).replace(10, 3, "h200") + "[power]\n" + table);
    auto e = run_command("glamsim validate " + (kDir / "e.json").string() + " --calibration " +
                         (kDir / "gpu-bad-power.toml").string());
    EXPECT_EQ(e.exit_code, 2) << table;
    EXPECT_NE(e.err.find(key), std::string::npos) << e.err;
  }
  // a negative power is a bad record
  auto bad = record("", 0.5);
  bad["device"]["energy"] = {{"mean_power_W", -5}, {"seconds", 1}, {"timed_steps", 2}};
  write(kDir / "bad-energy.json", bad.dump());
  auto b = run_command("glamsim validate " + (kDir / "bad-energy.json").string() + " --calibration " +
                       (kDir / "profile.toml").string());
  EXPECT_EQ(b.exit_code, 2);
  EXPECT_NE(b.err.find("device.energy.mean_power_W"), std::string::npos) << b.err;
}

// At flow fidelity SimGrid holds one platform per process: records of two host sizes are simulated
// in a child process each, with the figures each gives when validated alone (it was refused).
TEST_F(GlamsimValidate, FlowFidelityValidatesRecordsOfSeveralHostSizes) {
  for (int ranks : {2, 4}) {  // one rank runs no collective, so it would load no SimGrid platform
    auto rec = record("", 0.5);
    rec["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H200"}, {"threads", 1}, {"gemm_precision", "bf16"}};
    rec["plan"] = {{"ranks", ranks}, {"dp", ranks}, {"ep", ranks}, {"tp", 1}};
    rec["global_batch_tokens"] = 2048 * ranks;
    write(kDir / ("gpu-" + std::to_string(ranks) + ".json"), rec.dump());
  }
  auto steps = [&](const std::string& files) {
    auto r = run_command("glamsim validate " + files + " --fidelity flow --format json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<double> out;
    if (r.exit_code != 0) return out;
    const auto j = nlohmann::json::parse(r.out);
    for (const auto& rec : j["records"]) out.push_back(rec["simulated_step_s"].get<double>());
    return out;
  };
  const std::string one = (kDir / "gpu-2.json").string(), two = (kDir / "gpu-4.json").string();
  const auto both = steps(one + " " + two), first = steps(one), second = steps(two);
  ASSERT_EQ(both.size(), 2u);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_DOUBLE_EQ(both[0], first[0]);
  EXPECT_DOUBLE_EQ(both[1], second[0]);
  EXPECT_NE(both[0], both[1]);
}

// A GPU record's device memory (total, and free before the step's buffers) shows what the runtime held,
// beside what plans keep back for it on the simulated chip; free above total is a bad record.
TEST_F(GlamsimValidate, GpuRuntimeMemoryIsShownBesideThePlansReserve) {
  auto rec = record("", 0.5);
  rec["device"] = {{"kind", "cuda"}, {"name", "NVIDIA H200"}, {"threads", 1}, {"gemm_precision", "bf16"},
                   {"memory", {{"step_buffers_bytes", 1 << 30}, {"free_bytes_before", 150754820096 - 786432000},
                               {"total_bytes", 150754820096}}}};
  write(kDir / "mem.json", rec.dump());
  auto r = run_command("glamsim validate " + (kDir / "mem.json").string() + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out)["records"][0];
  EXPECT_EQ(j["measured_runtime_held_bytes"].get<int64_t>(), 786432000);
  EXPECT_EQ(j["chip_runtime_reserved_bytes"].get<double>(), 2147483648.0);
  auto t = run_command("glamsim validate " + (kDir / "mem.json").string());
  EXPECT_NE(t.out.find("the GPU's runtime held 750.00 MiB of 140.40 GiB before the step's buffers (CUDA context, "
                       "cuBLAS): within the 2.00 GiB plans keep back (h200's runtime_reserved_bytes)"),
            std::string::npos)
      << t.out;
  // more than the reserve is said so
  rec["device"]["memory"]["free_bytes_before"] = int64_t{150754820096} - (int64_t{5} << 30);
  write(kDir / "mem-more.json", rec.dump());
  auto more = run_command("glamsim validate " + (kDir / "mem-more.json").string());
  EXPECT_NE(more.out.find("held 5.00 GiB of 140.40 GiB before the step's buffers (CUDA context, cuBLAS): more than "
                          "the 2.00 GiB plans keep back"),
            std::string::npos)
      << more.out;
  rec["device"]["memory"]["free_bytes_before"] = int64_t{150754820097};
  write(kDir / "mem-bad.json", rec.dump());
  auto b = run_command("glamsim validate " + (kDir / "mem-bad.json").string());
  EXPECT_EQ(b.exit_code, 2);
  EXPECT_NE(b.err.find("'device.memory.free_bytes_before' = 150754820097"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("at most device.memory.total_bytes (150754820096)"), std::string::npos) << b.err;
}

}  // namespace
}  // namespace glam
