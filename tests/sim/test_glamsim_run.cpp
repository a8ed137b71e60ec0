// End-to-end: `glamsim run`, its outputs and its errors.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/text_table.h"
#include "support/run_command.h"

namespace glam {
namespace {

namespace fs = std::filesystem;
using testing::read_whole_file;
using testing::run_command;

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

TEST(GlamsimRun, JsonHasTheDocumentedFields) {
  auto r = run_command("glamsim run --model glam-8b-64e --cluster tpu-v4-64 --batch-tokens 262144 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"step_time_s", "compute_s", "exposed_comm_s", "alltoall_s", "alltoall_bytes", "mfu",
                          "memory_per_chip_bytes", "fits_memory", "plan", "wall_time_s"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_GT(j["step_time_s"].get<double>(), j["alltoall_s"].get<double>() * 0);
  EXPECT_GE(j["step_time_s"].get<double>(), j["compute_s"].get<double>());
  EXPECT_GT(j["mfu"].get<double>(), 0.05);
  EXPECT_LT(j["mfu"].get<double>(), 0.8);
  EXPECT_TRUE(j["fits_memory"].get<bool>());
  EXPECT_EQ(j["plan"]["dp"].get<int>() * j["plan"]["tp"].get<int>(), 64);
}

TEST(GlamsimRun, OutputFolderIsCompleteAndDeterministic) {
  fs::path a = fresh_dir("glam-run-a"), b = fresh_dir("glam-run-b");
  const std::string cmd = "glamsim run --model glam-8b-64e --cluster tpu-v4-64 --batch-tokens 262144 --quiet --out ";
  ASSERT_EQ(run_command(cmd + a.string()).exit_code, 0);
  ASSERT_EQ(run_command(cmd + b.string()).exit_code, 0);
  for (const char* f : {"config.json", "stats.txt", "trace.json", "layers.csv"}) EXPECT_TRUE(fs::exists(a / f)) << f;
  EXPECT_EQ(read_whole_file(a / "stats.txt"), read_whole_file(b / "stats.txt"));
  EXPECT_EQ(read_whole_file(a / "layers.csv"), read_whole_file(b / "layers.csv"));
  std::string stats = read_whole_file(a / "stats.txt");
  EXPECT_NE(stats.find("step.time"), std::string::npos);
  EXPECT_NE(stats.find("collective.all_to_all.ep.time"), std::string::npos);
  EXPECT_NE(stats.find("# Simulated time of one training step (s)"), std::string::npos);
  auto trace = nlohmann::json::parse(read_whole_file(a / "trace.json"));
  EXPECT_GT(trace["traceEvents"].size(), 100u);
  auto config = nlohmann::json::parse(read_whole_file(a / "config.json"));
  EXPECT_EQ(config["model"]["moe"]["experts"], 64);
  EXPECT_TRUE(config["cluster"].is_object());
  // 32 blocks plus the rows outside them
  std::string csv = read_whole_file(a / "layers.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 32 + 1);
  fs::remove_all(a);
  fs::remove_all(b);
}

// With ep = 1 the all-to-all stays on the chip: the summary, the statistics and layers.csv all count
// none of its bytes, and the statistics' bytes are the rows' bytes.
TEST(GlamsimRun, AnAllToAllOnOneChipMovesNoBytes) {
  const fs::path out = fresh_dir("glam-run-ep1");
  auto r = run_command("glamsim run --model glam-tiny-8e --cluster dgx-a100-8 --dp 8 --tp 1 --ep 1 --quiet --out " +
                       out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("0 B sent per chip"), std::string::npos) << r.out;
  std::istringstream stats(read_whole_file(out / "stats.txt"));
  double stats_bytes = 0;
  bool saw_all_to_all = false;
  for (std::string name, value, rest; stats >> name >> value && std::getline(stats, rest);) {
    if (name.rfind("collective.", 0) != 0 || name.size() < 6 || name.substr(name.size() - 6) != ".bytes") continue;
    stats_bytes += std::stod(value);
    if (name == "collective.all_to_all.ep.bytes") {
      saw_all_to_all = true;
      EXPECT_EQ(std::stod(value), 0);
    }
  }
  EXPECT_TRUE(saw_all_to_all);
  EXPECT_GT(stats_bytes, 0);  // the gradient all-reduces over dp = 8
  std::istringstream csv(read_whole_file(out / "layers.csv"));
  double csv_bytes = 0;
  std::string line;
  std::getline(csv, line);  // header; comm_bytes is the 8th column
  while (std::getline(csv, line)) {
    std::istringstream cells(line);
    std::string cell;
    for (int column = 0; column < 8; ++column) std::getline(cells, cell, ',');
    csv_bytes += std::stod(cell);
  }
  EXPECT_DOUBLE_EQ(csv_bytes, stats_bytes);
  fs::remove_all(out);
}

// One step's energy from `run` is the unit `plan` multiplies by the number of steps: the two
// commands must agree on it, part by part.
TEST(GlamsimRun, StepEnergyIsThePlansEnergyPerStep) {
  const std::string layout = " --model glam-8b-64e --cluster tpu-v4-64 --dp 16 --tp 4 --ep 16 --quiet --format json";
  auto run = run_command("glamsim run" + layout);
  auto plan = run_command("glamsim plan --tokens 1e9" + layout);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const auto e = nlohmann::json::parse(run.out)["energy"];
  const auto p = nlohmann::json::parse(plan.out);
  const double steps = p["steps"].get<double>(), J_per_MWh = 3.6e9;
  EXPECT_NEAR(e["total_J"].get<double>() * steps / J_per_MWh, p["facility_energy_MWh"].get<double>(),
              1e-9 * p["facility_energy_MWh"].get<double>());
  EXPECT_NEAR(e["host_J"].get<double>() * steps / J_per_MWh, p["energy_breakdown"]["host_MWh"].get<double>(),
              1e-9 * p["energy_breakdown"]["host_MWh"].get<double>());
  EXPECT_NEAR(e["average_power_per_chip_W"].get<double>(), p["average_power_per_chip_W"].get<double>(), 1e-9);
  // The parts add up, and the chips draw between their idle and their busy power.
  EXPECT_NEAR(e["it_J"].get<double>(), e["chip_compute_J"].get<double>() + e["chip_idle_J"].get<double>() +
                                           e["host_J"].get<double>() + e["network_J"].get<double>(),
              1e-9 * e["it_J"].get<double>());
  EXPECT_GT(e["chip_compute_J"].get<double>(), 0);
}

// A plan that fits with under 1% of a TPU's HBM to spare, where nothing is kept back for the runtime,
// says how little is left and how to keep some back.
TEST(GlamsimRun, AlmostFullHbmIsSaid) {
  auto tight = run_command("glamsim run --model glam-1.7b-256e --cluster tpu-v4-64 --format json");
  ASSERT_EQ(tight.exit_code, 0) << tight.err;
  const auto j = nlohmann::json::parse(tight.out);
  const double used = j["memory_per_chip_bytes"].get<double>(), usable = j["usable_hbm_bytes"].get<double>();
  ASSERT_TRUE(j["fits_memory"].get<bool>());
  ASSERT_LT(usable - used, 0.01 * usable) << "the catalogue case this test needs: the chooser's plan within 1%";
  auto text = run_command("glamsim run --model glam-1.7b-256e --cluster tpu-v4-64");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find(" spare, none kept back for the runtime)"), std::string::npos) << text.out;
  auto roomy = run_command("glamsim run --model glam-8b-64e --cluster tpu-v4-64");  // 30.76 of 32 GiB
  ASSERT_EQ(roomy.exit_code, 0) << roomy.err;
  EXPECT_NE(roomy.out.find(" (fits)"), std::string::npos) << roomy.out;
}

TEST(GlamsimRun, CalibrationTargetGlam64b64eOnTpuV4) {
  // GLaM: 574 hours for 280B tokens in 2^20-token batches is 7.74 s per step (7.38 s for 10^6), in a
  // layout like GLaM's (GSPMD 2D sharding, no pipeline).
  auto r = run_command("glamsim run --model glam-64b-64e --cluster tpu-v4-1024 --dp 256 --tp 4 --ep 64 --shard-weights "
                       "--recompute --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  double step = nlohmann::json::parse(r.out)["step_time_s"].get<double>();
  EXPECT_NEAR(step, 7.74, 0.774);
}

// GLaM's capacity (cf 2, top-2) is what uniform routing sends an expert on average, so it drops only
// what a group sends beyond it (7% with 64 experts), and skew drops copies rather than overloading a
// rank. With spare capacity, padded dispatch (GShard's, the default) still
// sends and computes every slot, so skew changes nothing; when only kept copies travel, skew makes the
// hot rank a straggler.
TEST(GlamsimRun, SkewedRoutingDropsAtCapacityAndStragglesAboveIt) {
  const std::string base = " --cluster tpu-v4-64 --dp 64 --ep 64 --tp 1 --batch-tokens 262144 --allow-oom --format json";
  auto uniform = nlohmann::json::parse(run_command("glamsim run --model glam-8b-64e" + base).out);
  auto skewed = nlohmann::json::parse(run_command("glamsim run --model glam-8b-64e --routing skew=1.2" + base).out);
  EXPECT_GT(uniform["mean_dropped_fraction"].get<double>(), 0.06);
  EXPECT_LT(uniform["mean_dropped_fraction"].get<double>(), 0.08);
  EXPECT_GT(skewed["mean_dropped_fraction"].get<double>(), uniform["mean_dropped_fraction"].get<double>() + 0.05);
  EXPECT_LE(skewed["alltoall_s"].get<double>(), uniform["alltoall_s"].get<double>() * (1 + 1e-9));
  // The text report says so, with the skew as it was written.
  const std::string text_base = " --cluster tpu-v4-64 --dp 64 --ep 64 --tp 1 --batch-tokens 262144 --allow-oom";
  const std::string skewed_text = run_command("glamsim run --model glam-8b-64e --routing skew=1.2" + text_base).out;
  char dropped_row[80];
  std::snprintf(dropped_row, sizeof dropped_row, "%.1f%% of token copies\n",
                100 * skewed["mean_dropped_fraction"].get<double>());
  EXPECT_NE(skewed_text.find(dropped_row), std::string::npos) << skewed_text;
  // The slots beside the copies they take (GLaM's convention: 2 x S / E, for top-2's 2 S / E copies),
  // and an MFU that counts the many dropped copies says so.
  EXPECT_NE(skewed_text.find("32 slots for 32 copies per 1024-token group (glam, factor 2)"), std::string::npos)
      << skewed_text;
  EXPECT_NE(skewed_text.find("(its model FLOPs count the dropped copies)"), std::string::npos) << skewed_text;
  EXPECT_NE(skewed_text.find("routing skew=1.2\n"), std::string::npos) << skewed_text;

  auto roomy = fs::temp_directory_path() / "glam-8b-64e-cf8.toml";
  std::string text = read_whole_file(fs::path(GLAM_SOURCE_DIR) / "models/glam-8b-64e.toml");
  text.replace(text.find("capacity_factor = 2.0"), 21, "capacity_factor = 8.0");
  std::ofstream(roomy) << text;
  auto u8 = nlohmann::json::parse(run_command("glamsim run --model " + roomy.string() + base).out);
  auto s8 = nlohmann::json::parse(run_command("glamsim run --model " + roomy.string() + " --routing skew=1.2" + base).out);
  EXPECT_LT(u8["mean_dropped_fraction"].get<double>(), 1e-6);  // C = 4x the mean, 17 standard deviations above
  EXPECT_NEAR(s8["alltoall_s"].get<double>(), u8["alltoall_s"].get<double>(), 1e-9 * u8["alltoall_s"].get<double>());
  EXPECT_NEAR(s8["compute_s"].get<double>(), u8["compute_s"].get<double>(), 1e-9 * u8["compute_s"].get<double>());
  EXPECT_GT(u8["alltoall_s"].get<double>(), 3 * uniform["alltoall_s"].get<double>()) << "4x the slots, padded";
  text.replace(text.find("[moe]"), 5, "[moe]\ndispatch = \"kept\"");
  std::ofstream(roomy) << text;
  auto k8 = nlohmann::json::parse(run_command("glamsim run --model " + roomy.string() + base).out);
  auto ks8 = nlohmann::json::parse(run_command("glamsim run --model " + roomy.string() + " --routing skew=1.2" + base).out);
  EXPECT_GT(ks8["alltoall_s"].get<double>(), 1.5 * k8["alltoall_s"].get<double>());
  EXPECT_GT(ks8["compute_s"].get<double>(), k8["compute_s"].get<double>());
  EXPECT_NEAR(k8["alltoall_s"].get<double>(), uniform["alltoall_s"].get<double>(), 0.01 * uniform["alltoall_s"].get<double>())
      << "uniform routing keeps 2 copies per token, whatever the spare capacity";
  fs::remove(roomy);
}

// layers.csv accounts for the whole step: the blocks' forward + backward (the waits for weight gathers and
// gradient reductions included) add up to step.time, their exposed communication to step.exposed_comm.
TEST(GlamsimRun, LayerRowsAddUpToTheStep) {
  const fs::path out = fresh_dir("glam-run-layers");
  ASSERT_EQ(run_command("glamsim run --model glam-64b-64e --cluster tpu-v4-1024 --dp 256 --tp 4 --ep 64 --shard-weights "
                        "--recompute --quiet --out " + out.string()).exit_code, 0);
  auto stat = [&](const std::string& name) {
    std::istringstream in(read_whole_file(out / "stats.txt"));
    for (std::string line; std::getline(in, line);)
      if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size()));
    ADD_FAILURE() << name;
    return 0.0;
  };
  std::istringstream csv(read_whole_file(out / "layers.csv"));
  std::string line;
  std::getline(csv, line);  // header
  double fwd_bwd = 0, exposed = 0;
  while (std::getline(csv, line)) {
    std::vector<std::string> f;
    std::istringstream cells(line);
    for (std::string c; std::getline(cells, c, ',');) f.push_back(c);
    ASSERT_EQ(f.size(), 10u) << line;
    fwd_bwd += std::stod(f[2]) + std::stod(f[3]);
    exposed += std::stod(f[6]);
  }
  const double step = stat("step.time"), step_exposed = stat("step.exposed_comm");
  EXPECT_GT(step_exposed, 0.1 * step) << "a case with exposed communication";
  EXPECT_NEAR(fwd_bwd, step, 1e-6 * step);
  EXPECT_NEAR(exposed, step_exposed, 1e-6 * step);
  fs::remove_all(out);
}

// With pipeline stages every output speaks of them: the table's bubble, the stats, a trace process
// per stage, and layers.csv rows per stage whose forward, backward and pipeline wait add up to the step.
TEST(GlamsimRun, PipelineStagesInEveryOutput) {
  for (int v : {1, 2}) {
    SCOPED_TRACE("virtual stages " + std::to_string(v));
    const fs::path out = fresh_dir("glam-run-pipeline");
    auto r = run_command("glamsim run --model glam-1.7b --cluster dgx-h100-64 --dp 4 --tp 4 --pp 4 --microbatches 8 --quiet "
                         "--virtual-stages " + std::to_string(v) + " --out " + out.string());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("plan: dp 4 x tp 4 x pp 4"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("pipeline bubble"), std::string::npos) << r.out;
    std::map<std::string, double> stats;
    std::istringstream in(read_whole_file(out / "stats.txt"));
    for (std::string line; std::getline(in, line);) {
      std::istringstream cells(line);
      std::string name;
      double value = 0;
      if (cells >> name >> value) stats[name] = value;
    }
    ASSERT_TRUE(stats.count("step.pipeline_bubble"));
    EXPECT_GT(stats["step.pipeline_bubble"], 0.05 * stats["step.time"]);
    std::istringstream csv(read_whole_file(out / "layers.csv"));
    std::string line;
    std::getline(csv, line);
    std::map<int, double> per_stage, exposed, waits;
    std::map<int, std::set<int>> blocks;
    while (std::getline(csv, line)) {
      std::vector<std::string> f;
      std::istringstream cells(line);
      for (std::string c; std::getline(cells, c, ',');) f.push_back(c);
      ASSERT_EQ(f.size(), 10u) << line;
      per_stage[std::stoi(f[8])] += std::stod(f[2]) + std::stod(f[3]) + std::stod(f[9]);
      exposed[std::stoi(f[8])] += std::stod(f[6]);
      waits[std::stoi(f[8])] += std::stod(f[9]);
      if (std::stoi(f[0]) >= 0) blocks[std::stoi(f[8])].insert(std::stoi(f[0]));
    }
    ASSERT_EQ(per_stage.size(), 4u);
    // The stage the figures describe: its rows' exposed communication and pipeline waits are the step's.
    const int busiest = static_cast<int>(stats["step.pipeline_stage"]);
    EXPECT_NEAR(exposed[busiest], stats["step.exposed_comm"], 1e-6 * stats["step.time"]);
    EXPECT_NEAR(waits[busiest], stats["step.pipeline_bubble"], 1e-6 * stats["step.time"]);
    for (const auto& [stage, total] : per_stage) {
      EXPECT_NEAR(total, stats["step.time"], 1e-6 * stats["step.time"]) << "stage " << stage;
      EXPECT_EQ(blocks[stage].size(), 6u);
      for (int block : blocks[stage]) EXPECT_EQ(block / (6 / v) % 4, stage) << block;  // chunks of 6 / v blocks
    }
    auto trace = nlohmann::json::parse(read_whole_file(out / "trace.json"));
    std::set<int> processes;
    for (const auto& e : trace["traceEvents"])
      if (e["ph"] == "X") processes.insert(e["pid"].get<int>());
    EXPECT_EQ(processes, (std::set<int>{1, 2, 3, 4}));
    fs::remove_all(out);
  }
}

// --out replaces a folder as a whole: a folder holding anything it does not write (a user's files, the
// current folder) is refused before the simulation, and left as it was; an earlier output is replaced.
TEST(GlamsimRun, OutputFolderNeverReplacesOtherFiles) {
  const fs::path out = fresh_dir("glam-run-keep");
  fs::create_directories(out / "sub");
  std::ofstream(out / "precious.txt") << "keep";
  const std::string args = "glamsim run --model glam-tiny-8e --cluster dgx-h100-8 --out ";
  auto r = run_command(args + out.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("holds "), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(fs::exists(out / "precious.txt"));
  EXPECT_TRUE(fs::exists(out / "sub"));
  r = run_command(args + ".");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--out .: expected the name of a new folder"), std::string::npos) << r.err;
  const fs::path again = fresh_dir("glam-run-again");
  ASSERT_EQ(run_command(args + again.string()).exit_code, 0);
  EXPECT_EQ(run_command(args + again.string() + "/").exit_code, 0) << "an earlier output is replaced, named with a slash";
  EXPECT_TRUE(fs::exists(again / "stats.txt"));
  // a folder where the command writes a file is named as such, not as a file the command does not write
  fs::remove(again / "stats.txt");
  fs::create_directories(again / "stats.txt");
  r = run_command(args + again.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("holds stats.txt, a folder or a link where this command writes a file"), std::string::npos)
      << r.err;
  fs::remove_all(out);
  fs::remove_all(again);
}

// Output that standard output does not take (a full disk) is an error, not a silent success; nor is an
// empty --out a way to write nothing, and an --out under a file says so.
TEST(GlamsimRun, OutputThatCannotBeWrittenIsAnError) {
  if (fs::exists("/dev/full"))
    for (const char* command :
         {"glamsim models", "glamsim run --model glam-tiny-8e --cluster dgx-h100-8 --format json", "glamsim --help"}) {
      auto r = run_command(std::string("sh -c '") + command + " >/dev/full'");
      EXPECT_EQ(r.exit_code, 1) << command;
      EXPECT_NE(r.err.find("glamsim: error: could not write the output to standard output"), std::string::npos) << r.err;
    }
  auto r = run_command("glamsim run --model glam-tiny-8e --cluster dgx-h100-8 --out ''");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--out: got '', expected a folder name"), std::string::npos) << r.err;
  const fs::path file = fs::temp_directory_path() / ("glam-out-file-" + std::to_string(::getpid()));
  std::ofstream(file) << "a file\n";
  r = run_command("glamsim run --model glam-tiny-8e --cluster dgx-h100-8 --out " + (file / "x").string());
  fs::remove(file);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(file.string() + " is a file, not a folder"), std::string::npos) << r.err;
}

// A plan file's layout that cannot be built is named by the file.
TEST(GlamsimRun, PlanFileErrorsNameTheFile) {
  const fs::path plan = fs::temp_directory_path() / ("glam-plan-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(plan) << "dp = 4\nep = 8\ntp = 2\n";
  auto r = run_command("glamsim run --model glam-tiny-8e --cluster dgx-h100-8 --plan " + plan.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(plan.string() + ": ep = 8 must divide dp = 4"), std::string::npos) << r.err;
  // A batch in the file and another on the command line: refused, not one silently taken over the other.
  std::ofstream(plan) << "dp = 8\nep = 8\ntp = 1\nbatch_tokens = 2048\n";
  const std::string cmd = "glamsim run --model glam-tiny-8e --cluster dgx-h100-8 --quiet --plan " + plan.string();
  r = run_command(cmd + " --batch-tokens 4096");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--batch-tokens 4096: the plan file " + plan.string() + " sets batch_tokens = 2048"),
            std::string::npos)
      << r.err;
  r = run_command(cmd + " --batch-tokens 2048");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  fs::remove(plan);
}

// Recomputation and sharded weights asked for are in the plan the chooser picks (it picks neither for
// this model and batch by itself, with a pipeline of whole weights), and a layout given without ep is
// the layout given with the ep it defaults to (the largest that divides dp and the experts).
TEST(GlamsimRun, ChosenPlansKeepWhatWasAskedFor) {
  const std::string base = "glamsim run --model glam-8b-64e --cluster tpu-v4-64 --batch-tokens 262144 --format json";
  auto plan_of = [&](const std::string& extra) {
    auto r = run_command(base + extra);
    EXPECT_EQ(r.exit_code, 0) << extra << ": " << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json() : j;
  };
  const auto chosen = plan_of("");
  ASSERT_TRUE(chosen.contains("plan"));
  // The chosen plan's step reports the routing it did (the search's shared routes are the search's).
  EXPECT_GT(chosen["routed_flows"].get<double>(), 0);
  EXPECT_GT(chosen["collective_schedules"].get<int>(), 0);
  const auto recompute = plan_of(" --recompute"), sharded = plan_of(" --shard-weights --pp 2");
  EXPECT_TRUE(recompute["plan"]["recompute"].get<bool>());
  EXPECT_TRUE(sharded["plan"]["shard_weights"].get<bool>());
  EXPECT_EQ(sharded["plan"]["pp"].get<int>(), 2);
  const auto pipeline = plan_of(" --pp 2");
  EXPECT_FALSE(pipeline["plan"]["shard_weights"].get<bool>()) << "the chooser's own pipelines keep whole weights";
  const auto no_ep = plan_of(" --dp 8 --tp 4 --pp 2"), with_ep = plan_of(" --dp 8 --tp 4 --pp 2 --ep 8");
  EXPECT_EQ(no_ep["plan"], with_ep["plan"]);
  EXPECT_EQ(no_ep["step_time_s"].get<double>(), with_ep["step_time_s"].get<double>());
  EXPECT_EQ(no_ep["plan"]["virtual_stages"].get<int>(), 1);
  // A plan file without ep is that layout too (it took ep 1, all experts on every chip).
  const fs::path plan = fs::temp_directory_path() / ("glam-plan-ep-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(plan) << "dp = 8\ntp = 4\npp = 2\n";
  const auto from_file = plan_of(" --plan " + plan.string());
  fs::remove(plan);
  EXPECT_EQ(from_file["plan"], with_ep["plan"]);
}

// --sequence-parallel: each tp chip sends 1/tp of the all-to-all and holds 1/tp of the activations;
// the step is faster; the plan says so; without tp it changes nothing. On GPU clusters an MoE model
// is sequence parallel unless --no-sequence-parallel says otherwise (Megatron-Core's rule); on TPU
// pods only when asked.
TEST(GlamsimRun, SequenceParallelismSplitsTheAllToAllAndTheActivations) {
  const std::string layout =
      "glamsim run --model glam-1.7b-64e --cluster dgx-h100-64 --dp 8 --tp 8 --ep 8 --microbatches 4 --format json";
  auto plain = run_command(layout + " --no-sequence-parallel"), sp = run_command(layout + " --sequence-parallel");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(sp.exit_code, 0) << sp.err;
  const auto a = nlohmann::json::parse(plain.out), b = nlohmann::json::parse(sp.out);
  EXPECT_FALSE(a["plan"]["sequence_parallel"].get<bool>());
  EXPECT_TRUE(b["plan"]["sequence_parallel"].get<bool>());
  auto gpu_default = run_command(layout);
  ASSERT_EQ(gpu_default.exit_code, 0) << gpu_default.err;
  EXPECT_EQ(nlohmann::json::parse(gpu_default.out)["step_time_s"], b["step_time_s"]);
  auto tpu_default = run_command("glamsim run --model glam-1.7b-64e --cluster tpu-v4-64 --dp 8 --tp 8 --format json");
  ASSERT_EQ(tpu_default.exit_code, 0) << tpu_default.err;
  EXPECT_FALSE(nlohmann::json::parse(tpu_default.out)["plan"]["sequence_parallel"].get<bool>());
  EXPECT_EQ(run_command(layout + " --sequence-parallel --no-sequence-parallel").exit_code, 2);
  // A plan file without the key takes the cluster's convention; with it, what it says.
  const fs::path dir = fs::temp_directory_path() / ("glam-sp-plan-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "absent.toml") << "dp = 8\ntp = 8\nep = 8\nmicrobatches = 4\n";
  std::ofstream(dir / "off.toml") << "dp = 8\ntp = 8\nep = 8\nmicrobatches = 4\nsequence_parallel = false\n";
  auto from_file = [&](const std::string& file) {
    auto r = run_command("glamsim run --model glam-1.7b-64e --cluster dgx-h100-64 --format json --plan " + (dir / file).string());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 && nlohmann::json::parse(r.out)["plan"]["sequence_parallel"].get<bool>();
  };
  EXPECT_TRUE(from_file("absent.toml"));
  EXPECT_FALSE(from_file("off.toml"));
  fs::remove_all(dir);
  EXPECT_DOUBLE_EQ(b["alltoall_bytes"].get<double>(), a["alltoall_bytes"].get<double>() / 8);
  EXPECT_LT(b["step_time_s"].get<double>(), a["step_time_s"].get<double>());
  // (the split itself is counted by hand in Accounting.TensorParallelismSplitsTheHeadsAndTheHiddenActivations)
  EXPECT_LT(b["memory_breakdown_bytes"]["activations"].get<double>(),
            a["memory_breakdown_bytes"]["activations"].get<double>());
  auto text = run_command("glamsim run --model glam-1.7b-64e --cluster dgx-h100-64 --dp 8 --tp 8 --ep 8 --microbatches 4 "
                          "--sequence-parallel");
  EXPECT_NE(text.out.find("tp 8, ep 8, sequence parallel, 4 micro-batches, fused attention;"), std::string::npos)
      << text.out;
  auto no_tp = run_command("glamsim run --model glam-1.7b-64e --cluster dgx-h100-64 --dp 64 --tp 1 --format json --no-sequence-parallel");
  auto no_tp_sp = run_command("glamsim run --model glam-1.7b-64e --cluster dgx-h100-64 --dp 64 --tp 1 --format json --sequence-parallel");
  EXPECT_EQ(nlohmann::json::parse(no_tp.out)["step_time_s"], nlohmann::json::parse(no_tp_sp.out)["step_time_s"]);
}

// GPU clusters run attention fused (FlashAttention) unless told otherwise, TPU pods as three ops over
// the [S, S] scores: fused, the step is faster and keeps fewer activations, and the plan says so.
TEST(GlamsimRun, GpuPlansFuseAttentionUnlessToldOtherwise) {
  const std::string layout =
      "glamsim run --model glam-1.7b --cluster dgx-h100-8 --dp 8 --tp 1 --microbatches 16 --format json";
  auto fused = run_command(layout), materialised = run_command(layout + " --attention materialised");
  ASSERT_EQ(fused.exit_code, 0) << fused.err;
  ASSERT_EQ(materialised.exit_code, 0) << materialised.err;
  const auto a = nlohmann::json::parse(fused.out), b = nlohmann::json::parse(materialised.out);
  EXPECT_EQ(a["plan"]["attention"], "fused");
  EXPECT_EQ(b["plan"]["attention"], "materialised");
  EXPECT_LT(a["step_time_s"].get<double>(), b["step_time_s"].get<double>());
  EXPECT_LT(a["memory_breakdown_bytes"]["activations"].get<double>(),
            b["memory_breakdown_bytes"]["activations"].get<double>());
  EXPECT_EQ(nlohmann::json::parse(run_command(layout + " --attention fused").out)["step_time_s"], a["step_time_s"]);
  auto tpu = run_command("glamsim run --model glam-1.7b --cluster tpu-v4-64 --dp 64 --tp 1 --format json");
  ASSERT_EQ(tpu.exit_code, 0) << tpu.err;
  EXPECT_EQ(nlohmann::json::parse(tpu.out)["plan"]["attention"], "materialised");
  auto text = run_command("glamsim run --model glam-1.7b --cluster dgx-h100-8 --dp 8 --tp 1 --microbatches 16");
  EXPECT_NE(text.out.find("dp 8 x tp 1, 16 micro-batches, fused attention;"), std::string::npos) << text.out;
  EXPECT_EQ(run_command(layout + " --attention flash").exit_code, 2);
  // A comparison whose rows differ in attention says so (the plan labels do not).
  const std::string compare = "glamsim plan --model glam-1.7b --compare dgx-h100-64 tpu-v4-64 --tokens 1e10";
  auto mixed = run_command(compare), alike = run_command(compare + " --attention materialised");
  ASSERT_EQ(mixed.exit_code, 0) << mixed.err;
  EXPECT_NE(mixed.out.find("\nattention: fused on dgx-h100-64; materialised on tpu-v4-64;"), std::string::npos) << mixed.out;
  ASSERT_EQ(alike.exit_code, 0) << alike.err;
  EXPECT_EQ(alike.out.find("\nattention:"), std::string::npos) << alike.out;
  // A plan file's key, checked with the others.
  const fs::path plan = fs::temp_directory_path() / ("glam-attention-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(plan) << "dp = 8\ntp = 1\nmicrobatches = 16\nattention = \"materialised\"\n";
  auto from_file = run_command("glamsim run --model glam-1.7b --cluster dgx-h100-8 --format json --plan " + plan.string());
  ASSERT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_EQ(nlohmann::json::parse(from_file.out)["step_time_s"], b["step_time_s"]);
  // Beside --plan, where --attention is refused, the note points at the file's key.
  std::ofstream(plan) << "dp = 8\ntp = 8\n";
  auto mixed_from_file = run_command(compare + " --plan " + plan.string());
  ASSERT_EQ(mixed_from_file.exit_code, 0) << mixed_from_file.err;
  EXPECT_NE(mixed_from_file.out.find("materialised on tpu-v4-64; the plan file's attention key sets it for all"),
            std::string::npos)
      << mixed_from_file.out;
  std::ofstream(plan) << "dp = 8\ntp = 1\nattention = \"flash\"\n";
  auto bad = run_command("glamsim run --model glam-1.7b --cluster dgx-h100-8 --plan " + plan.string());
  fs::remove(plan);
  EXPECT_NE(bad.exit_code, 0);
  for (const char* part : {"attention", "flash", "fused", "materialised"})
    EXPECT_NE(bad.err.find(part), std::string::npos) << bad.err;
}

// GPU clusters keep a bf16 copy of the float32 weights (Megatron-LM's model in bf16; the optimizer
// writes it): 6 bytes of weights per 4 of gradients. TPU pods fuse the casts into the products (XLA).
TEST(GlamsimRun, GpuPlansHoldABf16CopyOfTheWeights) {
  auto weights_over_gradients = [](const std::string& cluster) {
    auto r = run_command("glamsim run --model glam-1.7b-64e --cluster " + cluster + " --dp 8 --tp 8 --format json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out)["memory_breakdown_bytes"];
    return j["weights"].get<double>() / j["gradients"].get<double>();
  };
  EXPECT_DOUBLE_EQ(weights_over_gradients("dgx-h100-64"), 1.5);
  EXPECT_DOUBLE_EQ(weights_over_gradients("tpu-v4-64"), 1.0);
}

// The text report breaks the memory down as the JSON does and names the calibration behind its
// figures: a chip kind's defaults with their efficiencies, or the profile's file.
TEST(GlamsimRun, TextNamesItsCalibrationAndMemoryParts) {
  const std::string layout = " --model glam-1.7b-64e --cluster dgx-h100-64 --dp 8 --tp 8";
  auto text = run_command("glamsim run" + layout);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("\ncalibration: default for h100 (large products at 49.0% of peak, HBM-bound ops at 80%"),
            std::string::npos) << text.out;
  const auto parts = nlohmann::json::parse(run_command("glamsim run" + layout + " --format json").out)["memory_breakdown_bytes"];
  EXPECT_NE(text.out.find("  weights, gradients, optimizer"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(format_bytes(parts["activations"].get<double>()) + ", " +
                          format_bytes(parts["working"].get<double>()) + "\n"),
            std::string::npos) << text.out;
  const fs::path profile = fs::temp_directory_path() / "glamsim-run-h100-profile.toml";
  std::ofstream(profile) << "device = \"h100\"\n[measured]\ndevice_name = \"NVIDIA H100 80GB HBM3\"\n"
                            "[compute]\nmatmul_flops = [1e6, 1e12]\nmatmul_efficiency = [0.3, 0.7]\n"
                            "[memory]\nbytes = [1e4, 1e9]\nefficiency = [0.5, 0.9]\n";
  auto measured = run_command("glamsim run --model glam-tiny --cluster dgx-h100-8 --calibration " + profile.string());
  ASSERT_EQ(measured.exit_code, 0) << measured.err;
  EXPECT_NE(measured.out.find("\ncalibration: " + profile.string() + " (NVIDIA H100 80GB HBM3)\n"), std::string::npos)
      << measured.out;
  fs::remove(profile);
}

// A plan file that does not fit is told its own keys, since the flags are refused beside --plan.
TEST(GlamsimRun, APlanFileThatDoesNotFitIsToldItsKeys) {
  const fs::path plan = fs::temp_directory_path() / "glamsim-run-unfit-plan.toml";
  std::ofstream(plan) << "dp = 64\ntp = 1\nep = 64\nbatch_tokens = 1048576\n";
  auto r = run_command("glamsim run --model glam-8b-64e --cluster tpu-v4-64 --plan " + plan.string());
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find("; shard_weights = true or shard_optimizer = true, or recompute = true in the plan file may make it fit, or "
                       "leave out --plan for a layout glamsim chooses to fit; --allow-oom simulates it anyway"),
            std::string::npos) << r.err;
  fs::remove(plan);
}

// A flow run whose phases exceed --flow-max-flows says how many were costed analytically; one
// that plays them all has no such row.
TEST(GlamsimRun, FlowPhasesCostedAnalyticallyAreCounted) {
  const std::string base = "glamsim run --model glam-tiny-8e --cluster dgx-a100-8 --fidelity flow --quiet";
  const auto j = nlohmann::json::parse(run_command(base + " --flow-max-flows 4 --format json").out);
  ASSERT_GT(j["flow_phases_analytical"].get<int>(), 0);
  const auto capped = run_command(base + " --flow-max-flows 4");
  EXPECT_NE(capped.out.find(std::to_string(j["flow_phases_simulated"].get<int>()) + " played in SimGrid, " +
                            std::to_string(j["flow_phases_analytical"].get<int>()) +
                            " costed analytically (more than --flow-max-flows 4 flows each)"),
            std::string::npos) << capped.out;
  EXPECT_EQ(run_command(base).out.find("flow phases"), std::string::npos);
}

// An edited copy of a catalogue model that keeps its id is said to be the copy, in run and plan; the
// catalogue's own file, given by path, is not.
TEST(GlamsimRun, AnEditedCopyOfACatalogueModelIsSaidToBeOne) {
  const fs::path copy = fs::temp_directory_path() / "glamsim-run-edited-copy.toml";
  std::string text = read_whole_file(fs::path(GLAM_SOURCE_DIR) / "models/glam-tiny.toml");
  std::ofstream(copy) << text << "\n";
  const std::string note = "model: glam-tiny read from " + copy.string() + ", not the catalogue's glam-tiny";
  auto run = run_command("glamsim run --model " + copy.string() + " --cluster dgx-h100-8");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find(note), std::string::npos) << run.out;
  auto plan = run_command("glamsim plan --model " + copy.string() + " --cluster dgx-h100-8 --tokens 1e9");
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_NE(plan.out.find(note), std::string::npos) << plan.out;
  const fs::path own = fs::path(GLAM_SOURCE_DIR) / "models/glam-tiny.toml";
  EXPECT_EQ(run_command("glamsim run --model " + own.string() + " --cluster dgx-h100-8").out.find("model: "),
            std::string::npos);
  fs::remove(copy);
}

// Both programs spell their text output "text" (glamexec's word) or "table" (glamsim's first word).
TEST(GlamsimRun, FormatTextAndTableAreTheSame) {
  for (const char* command : {"glamsim models glam-tiny", "glamsim topo dgx-h100-8", "glamexec describe --model glam-tiny"}) {
    auto text = run_command(std::string(command) + " --format text"), table = run_command(std::string(command) + " --format table");
    EXPECT_EQ(text.exit_code, 0) << command << ": " << text.err;
    EXPECT_EQ(table.exit_code, 0) << command << ": " << table.err;
    EXPECT_FALSE(text.out.empty()) << command;
    EXPECT_EQ(text.out, table.out) << command;
  }
}

// A run of the first blocks says so, in the text and the JSON.
TEST(GlamsimRun, PartOfAModelIsLabelled) {
  auto text = run_command("glamsim run --model glam-1.7b-64e --cluster tpu-v4-64 --layers 2 --batch-tokens 262144");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("glam-1.7b-64e (its first 2 of 24 blocks) on tpu-v4-64"), std::string::npos) << text.out;
  auto json = run_command("glamsim run --model glam-1.7b-64e --cluster tpu-v4-64 --layers 2 --batch-tokens 262144 --format json");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out)["blocks"].get<int>(), 2);
  // glam-1.7b-64e's first block is dense: no all-to-all or expert capacity rows for a run of it alone.
  auto dense = run_command("glamsim run --model glam-1.7b-64e --cluster tpu-v4-64 --layers 1 --batch-tokens 262144");
  ASSERT_EQ(dense.exit_code, 0) << dense.err;
  EXPECT_EQ(dense.out.find("all-to-all"), std::string::npos) << dense.out;
  EXPECT_EQ(dense.out.find("expert capacity"), std::string::npos) << dense.out;
  EXPECT_NE(text.out.find("expert capacity"), std::string::npos) << text.out;
}

// An output folder that cannot be made is bad input found before the simulation, not an internal
// error after it (a folder is tried beside it and removed).
TEST(GlamsimRun, AnOutputFolderThatCannotBeMadeIsBadInput) {
  auto r = run_command("glamsim run --model glam-tiny --cluster dgx-h100-8 --out /proc/glam-no-such-folder/out");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("--out /proc/glam-no-such-folder/out: cannot make a folder in /proc"), std::string::npos)
      << r.err;
}

// A relative output folder under folders that do not exist yet: they are made (the check before the
// work climbs to the working folder to try).
TEST(GlamsimRun, ARelativeOutputFolderGetsItsMissingParents) {
  const fs::path work = fresh_dir("glam-run-relative");
  fs::create_directories(work);
  auto r = run_command("sh -c 'cd " + work.string() +
                       " && glamsim run --model glam-tiny --cluster dgx-h100-8 --out results/a/run1 --quiet'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(work / "results/a/run1/stats.txt"));
  size_t entries = 0;  // no probe left beside the results
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(work)) ++entries;
  EXPECT_EQ(entries, 1u);
  fs::remove_all(work);
}

struct BadRun {
  std::string args, expected;
};

class GlamsimRunBadInput : public ::testing::TestWithParam<BadRun> {};

TEST_P(GlamsimRunBadInput, ExitsTwoAndWritesNothing) {
  fs::path out = fresh_dir("glam-run-bad");
  auto r = run_command("glamsim run " + GetParam().args + " --out " + out.string());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find(GetParam().expected), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
}

std::string case_name(const ::testing::TestParamInfo<BadRun>& info) { return "case" + std::to_string(info.index); }

INSTANTIATE_TEST_SUITE_P(
    Cases, GlamsimRunBadInput,
    ::testing::Values(
        BadRun{"--model glam-8b-64e --cluster tpu-v4-64 --dp 24 --tp 2 --ep 8", "do not multiply to the chip count"},
        BadRun{"--model glam-8b --cluster tpu-v4-64 --dp 64 --tp 2", "dp x tp = 64 x 2 = 128 do not multiply"},
        BadRun{"--model glam-1.7b-32e --cluster tpu-v4-64 --dp 64 --tp 1 --ep 64", "not divisible by ep"},
        BadRun{"--model glam-8b-64e --cluster tpu-v4-64 --dp 64 --tp 1 --ep 64 --batch-tokens 4096",
               "smaller than the data-parallel width"},
        BadRun{"--model glam-8b-64e --cluster tpu-v4-64 --fidelity exact", "--fidelity exact: expected analytical or flow"},
        BadRun{"--model glam-8b-64e --cluster tpu-v4-64 --format xml", "--format: got 'xml', expected text (or table) or json"},
        BadRun{"--model glam-8b-64e --cluster tpu-v4-64 --routing /nonexistent.json", "/nonexistent.json"},
        BadRun{"--model glam-8b-64e --cluster tpu-v4-64 --routing skew=x", "skew=X"},
        // A fixed layout that does not fit: the savings it does not use, glamsim's choice, --allow-oom.
        BadRun{"--model glam-8b-64e --cluster tpu-v4-64 --dp 64 --tp 1 --ep 64 --batch-tokens 1048576",
               "; --shard-weights or --shard-optimizer, or --recompute may make it fit, or leave out --dp/--tp "
               "for a layout glamsim chooses to fit; --allow-oom simulates it anyway"},
        BadRun{"--model glam-64b-64e --cluster tpu-v4-64 --dp 64 --tp 1 --ep 64 --shard-weights --recompute",
               "; leave out --dp/--tp for a layout glamsim chooses to fit"},
        BadRun{"--model glam-64b-64e --cluster tpu-v4-64", "fits"},
        BadRun{"--model nope --cluster tpu-v4-64", "unknown model id 'nope'"},
        BadRun{"--model glam-8b-64e --cluster nope", "unknown cluster id 'nope'"},
        BadRun{"--model glam-tiny-8e --cluster dgx-h100-8 --layers 100", "--layers 100: glam-tiny-8e has 4 blocks"},
        BadRun{"--model glam-8b --cluster dgx-h100-8 --routing skew=2", "glam-8b is dense"},
        BadRun{"--model glam-8b --cluster dgx-h100-8 --batch-tokens 1e6", "--batch-tokens: got '1e6'"},
        // The batch itself is the problem, whatever dp the chooser tried.
        BadRun{"--model glam-64b-64e --cluster tpu-v4-1024 --batch-tokens 1000000",
               "batch of 1000000 tokens is no whole number of 1024-token sequences (glam-64b-64e's seq_len)"},
        BadRun{"--model glam-tiny --cluster dgx-h100-8 --dp 3", "dp x tp x pp must be the 8 chips"},
        BadRun{"--model glam-1.7b --cluster dgx-h100-64 --dp 4 --tp 4 --pp 4 --layers 2", "use pp = 1"},
        BadRun{"--model glam-tiny --cluster dgx-h100-8 --virtual-stages 2 --layers 2", "virtual_stages = 1"},
        BadRun{"--model glam-tiny --cluster dgx-h100-8 --hbm-headroom 0.95", "expected a number from 0 to 0.9"},
        BadRun{"--model glam-64b-64e --cluster tpu-v4-1024 --hbm-headroom 0.9", "(32.00 GiB of HBM less 90% headroom (28.80 GiB))"},
        BadRun{"--model glam-64b-64e --cluster tpu-v4-4096 --dp 512 --tp 1 --ep 64 --pp 8 --virtual-stages 2",
               "each dp rank has 2 sequences"},
        BadRun{"--model glam-1.7b --cluster dgx-h100-64 --dp 4 --tp 1 --pp 16", "pp = 16 must divide the 24 blocks"},
        BadRun{"--model glam-1.7b --cluster dgx-h100-64 --dp 4 --tp 4 --pp 0", "--pp: got '0'"},
        // Past 4,096 passes the plan's products overflowed (a SIGFPE) and a step took minutes.
        BadRun{"--model glam-tiny-8e --cluster dgx-h100-8 --microbatches 4611686018427387904", "from 1 to 4096"},
        // dp x tp overflowed to the chip count's neighbourhood: an internal error.
        BadRun{"--model glam-tiny-8e --cluster tpu-v4-64 --dp 4611686018427387920 --tp 4 --ep 1",
               "dp = 4611686018427387920 is wider than the 64 chips"}),
    case_name);

}  // namespace
}  // namespace glam
