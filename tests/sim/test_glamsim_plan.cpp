// End-to-end: `glamsim plan` against the GLaM paper's published training cost.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/run_command.h"

namespace glam {
namespace {

using testing::run_command;

nlohmann::json plan_json(const std::string& args) {
  auto r = run_command("glamsim plan " + args + " --format json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
}

// GLaM paper: 280B tokens in 574 hours and 213 MWh on 1,024 TPU v4 chips; the full 600B-token
// run 456 MWh and 40.2 tCO2e.
// In a layout like GLaM's (GSPMD 2D sharding: tensor-parallel groups of 4, experts over 64 chips, weights
// sharded over data parallelism; no pipeline), not the one glamsim would choose.
const std::string kGlamLayout = " --dp 256 --tp 4 --ep 64 --shard-weights --recompute";

// The published hours are a real run's wall clock, which also holds what training steps do not
// (evaluation, checkpoint writes, restarts after failures, none of them published), so the plan's
// steps alone may come in below them: down to 10% below, and at most 5% above.
void expect_within_published(double planned, double published, const char* what) {
  EXPECT_GE(planned, 0.90 * published) << what;
  EXPECT_LE(planned, 1.05 * published) << what;
}

TEST(GlamsimPlan, ReproducesTheGlamTrainingCost) {
  auto j = plan_json("--model glam-64b-64e --cluster tpu-v4-1024 --tokens 280e9" + kGlamLayout);
  expect_within_published(j["train_hours"].get<double>(), 574, "hours for 280B tokens");
  expect_within_published(j["facility_energy_MWh"].get<double>(), 213, "MWh for 280B tokens");
  EXPECT_NEAR(j["average_power_per_chip_W"].get<double>(), 326, 0.10 * 326);
  auto full = plan_json("--model glam-64b-64e --cluster tpu-v4-1024 --tokens 600e9" + kGlamLayout);
  expect_within_published(full["facility_energy_MWh"].get<double>(), 456, "MWh for 600B tokens");
  expect_within_published(full["tco2e"].get<double>(), 40.2, "tCO2e for 600B tokens");
}

// A run that draws under 1 MWh is shown in kWh (and kgCO2e), not as 0.0 MWh; the JSON stays in MWh.
TEST(GlamsimPlan, SmallRunsInKilowattHours) {
  const std::string args = "--model glam-1.7b --cluster h200-1 --tokens 1e9";
  const auto j = plan_json(args);
  const double kWh = j["facility_energy_MWh"].get<double>() * 1000;
  ASSERT_GT(kWh, 1);
  ASSERT_LT(kWh, 1000);
  auto r = run_command("glamsim plan " + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("on h200-1 (1 chip)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MWh"), std::string::npos) << r.out;
  std::ostringstream want;
  want << std::fixed << std::setprecision(1) << kWh << " kWh";
  EXPECT_NE(r.out.find(want.str()), std::string::npos) << want.str() << " in\n" << r.out;
  EXPECT_NE(r.out.find(" kgCO2e\n"), std::string::npos) << r.out;
}

// A comparison of small runs gives its energy and emissions columns in kWh and kgCO2e (the largest
// row's unit), as its verdict does, rather than rows of 0.1 MWh and 0.0 t.
TEST(GlamsimPlan, SmallComparisonsInKilowattHours) {
  const std::string args = "--model glam-1.7b-64e --compare dgx-h100-8 tpu-v4-64 --tokens 10e9 --days 5 --quiet";
  const auto j = plan_json(args);
  ASSERT_EQ(j["plans"].size(), 2u);
  auto r = run_command("glamsim plan " + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("facility kWh"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kgCO2e"), std::string::npos) << r.out;
  for (const auto& p : j["plans"]) {
    std::ostringstream kWh;
    kWh << std::fixed << std::setprecision(1) << p["facility_energy_MWh"].get<double>() * 1000;
    EXPECT_NE(r.out.find(" " + kWh.str() + " "), std::string::npos) << kWh.str() << " in\n" << r.out;
  }
  const std::string least = j["least_energy_in_time"];
  EXPECT_NE(r.out.find("least energy on " + least + " ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" kWh, "), std::string::npos) << r.out;
}

// Token budgets as the output prints them: 600B, 1.6T.
TEST(GlamsimPlan, TokenBudgetsTakeDecimalSuffixes) {
  const std::string args = "--model glam-1.7b-64e --cluster tpu-v4-64 --quiet --tokens ";
  EXPECT_EQ(plan_json(args + "600B")["tokens"], plan_json(args + "600e9")["tokens"]);
  EXPECT_DOUBLE_EQ(plan_json(args + "1.6T")["tokens"].get<double>(), 1.6e12);
  EXPECT_DOUBLE_EQ(plan_json(args + "500M")["tokens"].get<double>(), 5e8);
}

// The plan's memory by part adds up to its footprint, in the JSON and in the table.
TEST(GlamsimPlan, MemoryByPartAddsUpToTheFootprint) {
  const std::string args = "--model glam-8b-64e --cluster tpu-v4-64 --tokens 1e10 --dp 64 --ep 64 --shard-weights --recompute";
  const auto j = plan_json(args);
  double sum = 0;
  for (const char* part : {"weights", "gradients", "optimizer", "activations", "working", "communication"})
    sum += j["memory_breakdown_bytes"][part].get<double>();
  EXPECT_NEAR(sum, j["memory_per_chip_bytes"].get<double>(), 1e-9 * sum);
  EXPECT_GT(j["memory_breakdown_bytes"]["working"].get<double>(), 0);
  auto text = run_command("glamsim plan --quiet " + args);
  EXPECT_NE(text.out.find("activations, working buffers"), std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("all-to-all channels"), std::string::npos) << "none on a TPU pod\n" << text.out;
  // On GPUs an MoE plan also holds NCCL's all-to-all channels, a part of its own.
  const std::string gpu = "--model glam-1.7b-64e --cluster dgx-h100-8 --tokens 1e10 --dp 8 --ep 8";
  const auto g = plan_json(gpu);
  double gpu_sum = 0;
  for (const auto& [part, bytes] : g["memory_breakdown_bytes"].items()) gpu_sum += bytes.get<double>();
  EXPECT_NEAR(gpu_sum, g["memory_per_chip_bytes"].get<double>(), 1e-9 * gpu_sum);
  EXPECT_GT(g["memory_breakdown_bytes"]["communication"].get<double>(), 0);
  EXPECT_NE(run_command("glamsim plan --quiet " + gpu).out.find("all-to-all channels (NCCL)"), std::string::npos);
}

// A pipelined plan reports its bubble (JSON and table) and the HBM the runtime reserve and the headroom
// leave.
TEST(GlamsimPlan, PipelinedPlanShowsItsBubbleAndUsableMemory) {
  const std::string args = "--model glam-1.7b --cluster dgx-h100-64 --dp 2 --tp 8 --tokens 1e10 --hbm-headroom 0.1";
  auto j = plan_json(args);
  EXPECT_EQ(j["plan"]["pp"], 4);
  EXPECT_GT(j["pipeline_bubble_s"].get<double>(), 0.05 * j["step_time_s"].get<double>());
  EXPECT_LT(j["pipeline_bubble_s"].get<double>(), j["step_time_s"].get<double>());
  // H100: 81,559 MiB, less the runtime's 2 GiB, less 10% of the rest
  EXPECT_EQ(j["runtime_reserved_bytes"].get<double>(), 2048.0 * (1 << 20));
  EXPECT_NEAR(j["usable_hbm_bytes"].get<double>(), 0.9 * (81559.0 - 2048.0) * (1 << 20), 1);
  auto text = run_command("glamsim plan --quiet " + args);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("pipeline bubble"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("kept back of 79.65 GiB HBM"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("2.00 GiB runtime reserve, 10% headroom (7.76 GiB)"), std::string::npos) << text.out;
}

TEST(GlamsimPlan, BreakdownAddsUpAndOverridesApply) {
  auto j = plan_json("--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e10 --batch-tokens 262144 --pue 1.5 "
                     "--carbon-intensity 0.4 --price-per-kwh 0.12");
  const auto& b = j["energy_breakdown"];
  double it = b["chip_compute_MWh"].get<double>() + b["chip_idle_MWh"].get<double>() + b["host_MWh"].get<double>() +
              b["network_MWh"].get<double>();
  EXPECT_NEAR(it, j["it_energy_MWh"].get<double>(), 1e-9 * it);
  EXPECT_NEAR(it + b["facility_overhead_MWh"].get<double>(), j["facility_energy_MWh"].get<double>(), 1e-9 * it);
  EXPECT_NEAR(j["facility_energy_MWh"].get<double>(), 1.5 * it, 1e-9 * it);
  EXPECT_NEAR(j["tco2e"].get<double>(), 0.4 * j["facility_energy_MWh"].get<double>(), 1e-9);
  EXPECT_NEAR(j["electricity_cost"].get<double>(), 0.12 * 1000 * j["facility_energy_MWh"].get<double>(), 1e-9);
  EXPECT_TRUE(plan_json("--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e10 --batch-tokens 262144")["electricity_cost"]
                  .is_null());
  for (const char* key : {"steps", "step_time_s", "train_hours", "chip_hours", "it_energy_MWh", "facility_energy_MWh",
                          "tco2e", "mfu", "energy_breakdown"})
    EXPECT_TRUE(j.contains(key)) << key;
}

TEST(GlamsimPlan, CompareGivesOneRowPerCluster) {
  auto r = run_command("glamsim plan --model glam-1.7b-64e --compare tpu-v4-64 dgx-h100-64 --tokens 1e11 "
                       "--batch-tokens 262144 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["plans"].size(), 2u);
  EXPECT_EQ(j["plans"][0]["cluster"], "tpu-v4-64");
  EXPECT_EQ(j["plans"][1]["cluster"], "dgx-h100-64");
  auto text = run_command("glamsim plan --model glam-1.7b-64e --compare tpu-v4-64 dgx-h100-64 --tokens 1e11 "
                          "--batch-tokens 262144");
  EXPECT_NE(text.out.find("dgx-h100-64"), std::string::npos);
  // The facility figures behind each row's MWh and tCO2e, from the JSON: the cluster files' differ.
  const auto& tpu = j["plans"][0];
  const auto& dgx = j["plans"][1];
  ASSERT_NE(tpu["carbon_kg_per_kWh"], dgx["carbon_kg_per_kWh"]);
  auto fixed = [](double v, int digits) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(digits) << v;
    return o.str();
  };
  const std::string note = "tpu-v4-64 " + fixed(tpu["pue"].get<double>(), 2) + " and " +
                           fixed(tpu["carbon_kg_per_kWh"].get<double>(), 3) + "; dgx-h100-64 " +
                           fixed(dgx["pue"].get<double>(), 2) + " and " +
                           fixed(dgx["carbon_kg_per_kWh"].get<double>(), 3) + "\n";
  EXPECT_NE(text.out.find("facility: PUE and kgCO2e/kWh differ"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(note), std::string::npos) << note << " in\n" << text.out;
  auto same = run_command("glamsim plan --model glam-1.7b-64e --compare tpu-v4-64 dgx-h100-64 --tokens 1e11 "
                          "--batch-tokens 262144 --pue 1.3 --carbon-intensity 0.2 --price-per-kwh 0.1");
  EXPECT_NE(same.out.find("facility: PUE 1.30 and 0.200 kgCO2e/kWh for every cluster\n"), std::string::npos)
      << same.out;
  EXPECT_NE(same.out.find("  electricity $\n"), std::string::npos) << "a priced comparison has a cost column\n" << same.out;
  EXPECT_EQ(text.out.find("electricity $"), std::string::npos) << text.out;
}

// --days: each plan says whether it finishes in time; of those that do, the comparison names the one
// drawing the least facility energy and the one using the fewest chip-hours. The deadline is set
// between the clusters' own durations, so the answer depends on the figures, not on the flag alone.
TEST(GlamsimPlan, DeadlineNamesTheCheapestClusterThatFinishesInTime) {
  const std::string compare = "--model glam-1.7b-64e --compare tpu-v4-64 dgx-h100-64 dgx-a100-64 --tokens 1e11 --quiet";
  const auto plain = plan_json(compare);
  ASSERT_EQ(plain["plans"].size(), 3u);
  std::vector<double> days;
  for (const auto& p : plain["plans"]) days.push_back(p["train_days"].get<double>());
  std::vector<double> sorted = days;
  std::sort(sorted.begin(), sorted.end());
  ASSERT_LT(sorted[1] * 1.01, sorted[2]);
  // Two of the three finish in time (as written on the command line).
  const double deadline = std::stod(std::to_string((sorted[1] + sorted[2]) / 2));
  const auto j = plan_json(compare + " --days " + std::to_string(deadline));
  EXPECT_DOUBLE_EQ(j["deadline_days"].get<double>(), deadline);
  std::string least_energy, least_emissions, fewest_chip_hours, fastest;
  double energy = 1e300, emissions = 1e300, chip_hours = 1e300, quickest = 1e300;
  for (size_t i = 0; i < 3; ++i) {
    const auto& p = j["plans"][i];
    EXPECT_EQ(p["meets_deadline"].get<bool>(), days[i] <= deadline) << p["cluster"];
    if (p["train_days"].get<double>() < quickest) quickest = p["train_days"], fastest = p["cluster"];
    if (!p["meets_deadline"].get<bool>()) continue;
    if (p["facility_energy_MWh"].get<double>() < energy) energy = p["facility_energy_MWh"], least_energy = p["cluster"];
    if (p["tco2e"].get<double>() < emissions) emissions = p["tco2e"], least_emissions = p["cluster"];
    if (p["chip_hours"].get<double>() < chip_hours) chip_hours = p["chip_hours"], fewest_chip_hours = p["cluster"];
  }
  EXPECT_EQ(j["least_energy_in_time"], least_energy);
  EXPECT_EQ(j["least_emissions_in_time"], least_emissions);
  EXPECT_EQ(j["fewest_chip_hours_in_time"], fewest_chip_hours);
  EXPECT_EQ(j["fastest"], fastest);
  auto text = run_command("glamsim plan " + compare + " --days " + std::to_string(deadline));
  EXPECT_NE(text.out.find("least energy on " + least_energy), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("least emissions on " + least_emissions), std::string::npos) << text.out;
  // Too short for any: the comparison says so and names the fastest; one cluster says by how much.
  const auto none = plan_json(compare + " --days " + std::to_string(sorted[0] / 2));
  EXPECT_TRUE(none["least_energy_in_time"].is_null());
  EXPECT_EQ(none["fastest"], fastest);
  auto single = run_command("glamsim plan --model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e11 --quiet --days 0.01");
  EXPECT_NE(single.out.find("MISSED by"), std::string::npos) << single.out;
  // ... and about how many chips would finish in time at its throughput per chip.
  const auto single_j = plan_json("--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e11 --quiet --days 0.01");
  // (rounded up to two significant figures: 14,640 chips read "about 15000")
  const double exact = 64 * single_j["train_days"].get<double>() / 0.01;
  ASSERT_GT(exact, 1000);
  const double unit = std::pow(10, std::floor(std::log10(exact)) - 1);
  const double chips = std::ceil(exact / unit) * unit;
  EXPECT_NE(single.out.find("(about " + std::to_string(static_cast<int64_t>(chips)) + " chips at this throughput"),
            std::string::npos) << chips << " in\n" << single.out;
  // A plan simulated with --allow-oom that does not fit is never in time, however fast; nor is a
  // cluster too small for any plan.
  const auto oom = plan_json("--model glam-8b-64e --compare dgx-a100-8 dgx-h100-64 --tokens 1e10 --days 1000 --allow-oom --quiet");
  ASSERT_FALSE(oom["plans"][0]["fits_memory"].get<bool>());
  EXPECT_LT(oom["plans"][0]["train_days"].get<double>(), 1000);
  EXPECT_FALSE(oom["plans"][0]["meets_deadline"].get<bool>());
  EXPECT_EQ(oom["least_energy_in_time"], "dgx-h100-64");
  const auto small = plan_json("--model glam-8b-64e --compare dgx-a100-8 dgx-h100-64 --tokens 1e10 --days 1000 --quiet");
  EXPECT_FALSE(small["plans"][0]["meets_deadline"].get<bool>());
}

// --compare patterns: each expands to the catalogue's matching clusters, smallest first by the
// numbers in their ids; a cluster named twice is one row; a pattern matching nothing is refused.
// A user's file that kept a catalogue cluster's id cannot share a comparison with it: both rows would
// have one name.
TEST(GlamsimPlan, CompareRefusesTwoClustersOfOneId) {
  namespace fs = std::filesystem;
  const fs::path copy = fs::temp_directory_path() / ("glam-compare-copy-" + std::to_string(::getpid()) + ".toml");
  fs::copy_file(fs::path(GLAM_SOURCE_DIR) / "topologies/tpu-v4-64.toml", copy, fs::copy_options::overwrite_existing);
  auto r = run_command("glamsim plan --model glam-1.7b-64e --compare tpu-v4-64 " + copy.string() +
                       " --tokens 1e11 --batch-tokens 262144");
  fs::remove(copy);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("--compare tpu-v4-64 and " + copy.string() + ": both are cluster 'tpu-v4-64'"),
            std::string::npos)
      << r.err;
}

TEST(GlamsimPlan, ComparePatternsExpandOverTheCatalogue) {
  const auto j = plan_json("--model glam-0.1b --compare 'tpu-v4-[25]*' 'dgx-*-8' dgx-h100-8 --tokens 1e10 --quiet");
  std::vector<std::string> clusters;
  for (const auto& p : j["plans"]) clusters.push_back(p["cluster"]);
  EXPECT_EQ(clusters, (std::vector<std::string>{"tpu-v4-256", "tpu-v4-512", "dgx-a100-8", "dgx-h100-8", "dgx-h200-8"}));
  // A pattern matching one cluster still gives a comparison: a table of rows, JSON's "plans".
  const auto one = plan_json("--model glam-0.1b --compare 'tpu-v4-2*' --tokens 1e10 --quiet");
  ASSERT_EQ(one["plans"].size(), 1u);
  EXPECT_EQ(one["plans"][0]["cluster"], "tpu-v4-256");
  auto one_text = run_command("glamsim plan --model glam-0.1b --compare 'tpu-v4-2*' --tokens 1e10 --quiet");
  EXPECT_NE(one_text.out.find("Training plans: glam-0.1b"), std::string::npos) << one_text.out;
  auto none = run_command("glamsim plan --model glam-0.1b --compare 'tpu-v9-*' --tokens 1e10");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("--compare 'tpu-v9-*': matches nothing in the catalogue (dgx-a100-1024"), std::string::npos)
      << none.err;
}

// A cluster too small for the model is a row of the comparison that says so, not the end of it; when
// none fits, the command is refused.
TEST(GlamsimPlan, CompareKeepsGoingPastAClusterThatIsTooSmall) {
  auto j = plan_json("--model glam-8b-64e --compare dgx-h100-64 dgx-a100-8 --tokens 1e11");
  ASSERT_EQ(j["plans"].size(), 2u);
  EXPECT_TRUE(j["plans"][0]["fits_memory"].get<bool>());
  EXPECT_GT(j["plans"][0]["train_hours"].get<double>(), 0);
  EXPECT_FALSE(j["plans"][1]["fits_memory"].get<bool>());
  EXPECT_GT(j["plans"][1]["memory_per_chip_bytes"].get<double>(), j["plans"][1]["usable_hbm_bytes"].get<double>());
  // usable: the A100's 80 GiB less the runtime's 2 GiB
  EXPECT_EQ(j["plans"][1]["runtime_reserved_bytes"].get<double>(), 2147483648.0);
  EXPECT_EQ(j["plans"][1]["usable_hbm_bytes"].get<double>(), 78.0 * (1 << 30));
  auto text = run_command("glamsim plan --model glam-8b-64e --compare dgx-h100-64 dgx-a100-8 --tokens 1e11");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("does not fit:"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("of 78.00 GiB usable per chip"), std::string::npos) << text.out;
  auto none = run_command("glamsim plan --model glam-64b-64e --compare dgx-a100-8 h200-1 --tokens 1e11");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("fits none of the clusters compared"), std::string::npos) << none.err;
}

// A layout given that one cluster compared cannot run (dp x tp x pp not its chips) is that cluster's row,
// with the reason under the table; the others are planned with it. Applying nowhere is an error that
// gives every cluster's reason.
TEST(GlamsimPlan, CompareKeepsGoingPastAClusterTheLayoutGivenDoesNotFit) {
  const std::string args = "--model glam-1.7b --compare dgx-h100-8 dgx-h100-64 dgx-a100-8 --tokens 1e10 --dp 8 --tp 1 --pp 1";
  auto j = plan_json(args + " --days 3");
  ASSERT_EQ(j["plans"].size(), 3u);
  EXPECT_FALSE(j["plans"][1]["layout_applies"].get<bool>());
  EXPECT_NE(j["plans"][1]["reason"].get<std::string>().find("chip count of dgx-h100-64 (64)"), std::string::npos);
  EXPECT_FALSE(j["plans"][1]["meets_deadline"].get<bool>());
  EXPECT_TRUE(j["plans"][1]["fits_memory"].is_null());
  for (int i : {0, 2}) {
    EXPECT_EQ(j["plans"][i]["plan"]["dp"], 8);
    EXPECT_TRUE(j["plans"][i]["layout_applies"].get<bool>());
    EXPECT_TRUE(j["plans"][i]["meets_deadline"].get<bool>());
  }
  auto text = run_command("glamsim plan " + args);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("dgx-h100-64     64  layout given does not apply (below)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("\ndgx-h100-64: plan axes dp x tp = 8 x 1 = 8 do not multiply"), std::string::npos) << text.out;
  auto nowhere = run_command("glamsim plan --model glam-1.7b --compare dgx-h100-64 tpu-v4-256 --tokens 1e10 --dp 8 --tp 1 --pp 1");
  EXPECT_EQ(nowhere.exit_code, 2);
  EXPECT_NE(nowhere.err.find("the layout given applies to none of the clusters compared: on dgx-h100-64, "),
            std::string::npos)
      << nowhere.err;
  EXPECT_NE(nowhere.err.find("; on tpu-v4-256, "), std::string::npos) << nowhere.err;
  EXPECT_TRUE(nowhere.out.empty()) << nowhere.out;
  // When no cluster runs the layout for want of memory, the error says which it does not apply to.
  auto too_big = run_command("glamsim plan --model glam-64b-64e --compare dgx-h100-64 dgx-a100-8 --tokens 1e10 --dp 8 --tp 8");
  EXPECT_EQ(too_big.exit_code, 2);
  EXPECT_NE(too_big.err.find("fits none of the clusters it applies to (it does not apply to dgx-a100-8): on dgx-h100-64"),
            std::string::npos)
      << too_big.err;
}

// The same without a layout given: a cluster on which no layout of the chooser's is valid (too few
// sequences in the batch for its chips' dp, a tp the heads do not divide) is that cluster's row.
TEST(GlamsimPlan, CompareKeepsGoingPastAClusterWithNoValidLayout) {
  const auto j = plan_json("--model glam-0.1b --compare dgx-h100-8 dgx-h100-64 --tokens 1e10 --batch-tokens 2048 --quiet");
  ASSERT_EQ(j["plans"].size(), 2u);
  EXPECT_TRUE(j["plans"][0]["layout_applies"].get<bool>());
  EXPECT_GT(j["plans"][0]["train_hours"].get<double>(), 0);
  EXPECT_FALSE(j["plans"][1]["layout_applies"].get<bool>());
  EXPECT_NE(j["plans"][1]["reason"].get<std::string>().find("no parallel layout of glam-0.1b on dgx-h100-64 is valid"),
            std::string::npos);
  auto text = run_command("glamsim plan --model glam-0.1b --compare dgx-h100-8 dgx-h100-64 --tokens 1e10 --batch-tokens 2048 --quiet");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("dgx-h100-64     64  no valid layout (below)"), std::string::npos) << text.out;
}

// What does not depend on the cluster stays an error of the whole comparison, layout given or not.
TEST(GlamsimPlan, CompareRefusesWhatNoClusterChanges) {
  auto dense = run_command("glamsim plan --model glam-1.7b --compare dgx-h100-8 dgx-h100-64 --tokens 1e10 --dp 8 --tp 1 --routing skew=1.2");
  EXPECT_EQ(dense.exit_code, 2);
  EXPECT_NE(dense.err.find("--routing skew=1.2: glam-1.7b is dense"), std::string::npos) << dense.err;
  EXPECT_TRUE(dense.out.empty()) << dense.out;
  // A calibration profile for one cluster's chips, not the other's, is refused, not made that cluster's row.
  namespace fs = std::filesystem;
  std::ifstream cpu(fs::path(GLAM_SOURCE_DIR) / "reports/validation/profile-cpu.toml");
  std::stringstream text;
  text << cpu.rdbuf();
  std::string h100 = text.str();
  const auto device = h100.find("device = \"cpu\"");
  ASSERT_NE(device, std::string::npos);
  h100.replace(device, 14, "device = \"h100\"");
  const fs::path profile = fs::temp_directory_path() / ("glam-h100-profile-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(profile) << h100;
  const std::string args = "glamsim plan --model glam-1.7b --compare dgx-h100-8 dgx-a100-8 --tokens 1e10 --calibration " +
                           profile.string();
  auto other_chip = run_command(args + " --dp 8 --tp 1");
  auto chosen = run_command(args);
  fs::remove(profile);
  for (const auto& r : {other_chip, chosen}) {
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_NE(r.err.find("describes h100 chips, but dgx-a100-8 has a100-80gb chips"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

// Interruptions: the run's hours, chip-hours and energy grow by the checkpoints, restarts and lost work
// the model expects; the table shows them; a deadline is judged on the expected hours; a cluster whose
// failures come too often for the run to finish is a row that says so.
TEST(GlamsimPlan, InterruptionsLengthenTheRunAndItsEnergy) {
  const std::string base = "--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e11 --quiet";
  const std::string failures = " --chip-mtbf-hours 2000 --checkpoint-GBps 10 --restart-minutes 5";
  const auto plain = plan_json(base);
  const auto j = plan_json(base + failures);
  ASSERT_TRUE(j.contains("interruptions")) << j.dump();
  EXPECT_FALSE(plain.contains("interruptions"));
  const auto& run = j["interruptions"];
  EXPECT_NEAR(run["compute_hours"].get<double>(), plain["train_hours"].get<double>(), 1e-9 * plain["train_hours"].get<double>());
  EXPECT_DOUBLE_EQ(j["train_hours"].get<double>(), run["wall_hours"].get<double>());
  EXPECT_NEAR(run["system_mtbf_hours"].get<double>(), 2000.0 / 64, 1e-9);
  EXPECT_TRUE(run["checkpoint_interval_is_optimum"].get<bool>());
  const double goodput = run["goodput"].get<double>();
  EXPECT_GT(goodput, 0.5);
  EXPECT_LT(goodput, 1);
  EXPECT_NEAR(j["train_hours"].get<double>() * goodput, plain["train_hours"].get<double>(), 1e-6 * j["train_hours"].get<double>());
  EXPECT_NEAR(j["chip_hours"].get<double>(), 64 * j["train_hours"].get<double>(), 1e-6 * j["chip_hours"].get<double>());
  EXPECT_GT(j["facility_energy_MWh"].get<double>(), plain["facility_energy_MWh"].get<double>());
  double parts = 0;
  for (const auto& [name, mwh] : j["energy_breakdown"].items()) parts += mwh.get<double>();
  EXPECT_NEAR(parts, j["facility_energy_MWh"].get<double>(), 1e-9 * parts);
  // The run's power per chip: its IT energy over its chip-hours, below the step's where checkpoints and
  // restarts keep the chips idle; without failures, the step's.
  EXPECT_NEAR(j["average_power_per_chip_W"].get<double>() * j["chip_hours"].get<double>(),
              j["it_energy_MWh"].get<double>() * 1e6, 1e-9 * j["it_energy_MWh"].get<double>() * 1e6);
  EXPECT_LT(j["average_power_per_chip_W"].get<double>(), plain["average_power_per_chip_W"].get<double>());
  EXPECT_NEAR(plain["average_power_per_chip_W"].get<double>() * plain["chip_hours"].get<double>(),
              plain["it_energy_MWh"].get<double>() * 1e6, 1e-6 * plain["it_energy_MWh"].get<double>() * 1e6);
  // A given interval is kept (in whole steps) and the time it costs differs from the optimum's.
  const auto hourly = plan_json(base + failures + " --checkpoint-hours 0.25");
  EXPECT_FALSE(hourly["interruptions"]["checkpoint_interval_is_optimum"].get<bool>());
  EXPECT_NEAR(hourly["interruptions"]["checkpoint_interval_hours"].get<double>(), 0.25, plain["step_time_s"].get<double>() / 3600);
  EXPECT_GT(hourly["train_hours"].get<double>(), j["train_hours"].get<double>());
  auto text = run_command("glamsim plan " + base + failures);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  for (const char* row : {"checkpoint interval (optimum)", "expected failures", "work lost since the last checkpoint",
                          "goodput", "training time, expected"})
    EXPECT_NE(text.out.find(row), std::string::npos) << row << "\n" << text.out;
  // The deadline between the failure-free and the expected days: missed.
  const double between = (plain["train_days"].get<double>() + j["train_days"].get<double>()) / 2;
  EXPECT_FALSE(plan_json(base + failures + " --days " + std::to_string(between))["meets_deadline"].get<bool>());
  EXPECT_TRUE(plan_json(base + " --days " + std::to_string(between))["meets_deadline"].get<bool>());
  // Failures every few seconds on the larger cluster: its row does not finish, the other does.
  const std::string often = " --chip-mtbf-hours 2 --checkpoint-GBps 10 --restart-minutes 5";
  const auto both = plan_json("--model glam-1.7b-64e --compare tpu-v4-64 tpu-v4-512 --tokens 1e11 --quiet" + often);
  ASSERT_EQ(both["plans"].size(), 2u);
  EXPECT_FALSE(both["plans"][1]["finishes"].get<bool>()) << both.dump();
  EXPECT_NE(both["plans"][1]["reason"].get<std::string>().find("a failure every 14 s"), std::string::npos);
  auto table = run_command("glamsim plan --model glam-1.7b-64e --compare tpu-v4-64 tpu-v4-512 --tokens 1e11 --quiet" + often);
  EXPECT_NE(table.out.find("does not finish: a failure every 14 s"), std::string::npos) << table.out;
  auto alone = run_command("glamsim plan --model glam-1.7b-64e --cluster tpu-v4-512 --tokens 1e11 --quiet" + often);
  EXPECT_EQ(alone.exit_code, 2);
  EXPECT_TRUE(alone.out.empty());
  EXPECT_NE(alone.err.find("on tpu-v4-512, a failure every 14 s on average"), std::string::npos) << alone.err;
}

// --layouts: the table and the JSON list the same layouts, exactly one of them chosen, and that one
// is the plan the command used.
TEST(GlamsimPlan, LayoutsListTheChosenPlanAmongTheOthers) {
  const std::string args = "--model glam-1.7b-64e --cluster dgx-h100-64 --tokens 1e11 --batch-tokens 262144 --layouts";
  auto j = plan_json(args);
  ASSERT_TRUE(j.contains("layouts")) << j.dump();
  int chosen = 0;
  for (const auto& l : j["layouts"]) {
    if (!l["chosen"].get<bool>()) continue;
    ++chosen;
    EXPECT_EQ(l["plan"], j["plan"]);
    EXPECT_DOUBLE_EQ(l["step_time_s"].get<double>(), j["step_time_s"].get<double>());
  }
  EXPECT_EQ(chosen, 1);
  EXPECT_GT(j["layouts"].size(), 2u);
  auto text = run_command("glamsim plan " + args);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  const std::string& out = text.out;
  const auto table = out.find("layouts compared");
  ASSERT_NE(table, std::string::npos) << out;
  size_t rows = 0, marked = 0;
  std::vector<std::string> labels;
  for (size_t at = out.find('\n', table); at != std::string::npos && at + 1 < out.size(); at = out.find('\n', at + 1)) {
    const std::string line = out.substr(at + 1, out.find('\n', at + 1) - at - 1);
    if (line.rfind("dp", 3) == std::string::npos || line.find(" tp") == std::string::npos) continue;
    ++rows;
    marked += line[0] == '*';
    const size_t from = line.find("dp");
    labels.push_back(line.substr(from, line.find("  ", from) - from));
  }
  EXPECT_EQ(rows, j["layouts"].size()) << out;
  EXPECT_EQ(marked, 1u) << out;
  // The plan's note names the runner-up, the table's second row, and how much slower it steps.
  ASSERT_GE(labels.size(), 2u);
  const double gap = 100 * (j["layouts"][1]["step_time_s"].get<double>() / j["step_time_s"].get<double>() - 1);
  char pct[32];
  std::snprintf(pct, sizeof pct, "(+%.1f%%)", gap);
  EXPECT_NE(out.find("the runner-up, " + labels[1] + ", steps in "), std::string::npos) << out;
  EXPECT_NE(out.find(pct), std::string::npos) << pct << "\n" << out;
  EXPECT_EQ(out.find("compared at analytical fidelity"), std::string::npos) << out;
  // At flow fidelity the layouts are still compared analytically: the note says so, and gives the
  // chosen layout's analytical step beside the runner-up's.
  auto flow = run_command("glamsim run --model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --fidelity flow");
  ASSERT_EQ(flow.exit_code, 0) << flow.err;
  EXPECT_NE(flow.out.find("compared at analytical fidelity (this one: "), std::string::npos) << flow.out;
  EXPECT_NE(flow.out.find(" analytical (+"), std::string::npos) << flow.out;
  // Without the flag neither output lists them.
  EXPECT_FALSE(plan_json("--model glam-1.7b-64e --cluster dgx-h100-64 --tokens 1e11 --batch-tokens 262144").contains("layouts"));
}

struct BadPlan {
  std::string args, expected;
};
class GlamsimPlanBadInput : public ::testing::TestWithParam<BadPlan> {};

TEST_P(GlamsimPlanBadInput, ExitsTwoWithNothingOnStdout) {
  auto r = run_command("glamsim plan " + GetParam().args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find(GetParam().expected), std::string::npos) << r.err;
}

std::string case_name(const ::testing::TestParamInfo<BadPlan>& info) { return "case" + std::to_string(info.index); }

INSTANTIATE_TEST_SUITE_P(
    Cases, GlamsimPlanBadInput,
    ::testing::Values(BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens -5", "positive token budget"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens 0", "positive token budget"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens many", "600e9"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 600b", "600e9 or 600B (suffixes K, M, B, T)"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 6x0B", "such as 600e9"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens 1e12 --pue 0.9", "--pue 0.9: expected a finite value of at least 1"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens 1e12 --pue inf", "--pue inf: expected a finite"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens 1e12 --carbon-intensity inf",
                              "--carbon-intensity inf: expected a finite kgCO2e/kWh from 0 to 10"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens 1e12 --price-per-kwh -1",
                              "--price-per-kwh -1: expected a finite $/kWh from 0 to 1000"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens 1e12 --pue 1e308",
                              "--pue 1e+308: expected a finite value of at least 1"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --batch-tokens 262144 --tokens 1e5", "larger than the token budget"},
                      BadPlan{"--model glam-1.7b-64e --tokens 1e12", "--cluster"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64", "--tokens is required"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 0x10", "--tokens 0x10: expected a number"},
                      BadPlan{"--model glam-1.7b-64e --compare --tokens 1e12 tpu-v4-64",
                              "--compare --tokens: expected cluster ids right after --compare"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e300", "at most 1e16 tokens"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --days 0", "--days: got '0', expected a number from 0.01"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --days soon", "--days: got 'soon'"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --dp 64 --ep 64 --tp 1 --layouts",
                              "fix the layout"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --dp 64 --tp 1 --layouts",
                              "--dp and --tp fix the layout"},
                      // A plan is a whole training run: a part of the model would give a whole run's figures.
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --layers 2",
                              "not expected: 2 --layers"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --chip-mtbf-hours 1000",
                              "--chip-mtbf-hours requires --checkpoint-GBps"},
                      // The interval given is the cause, and the message says so first.
                      BadPlan{"--model glam-64b-64e --cluster tpu-v4-1024 --tokens 600e9 --chip-mtbf-hours 50700 "
                              "--checkpoint-GBps 100 --checkpoint-hours 100000",
                              "times its compute time (a shorter --checkpoint-hours"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --checkpoint-GBps 10",
                              "--checkpoint-GBps requires --chip-mtbf-hours"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --chip-mtbf-hours 0 --checkpoint-GBps 10",
                              "--chip-mtbf-hours: got '0', expected a number from 1"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --chip-mtbf-hours 1e4 --checkpoint-GBps 0",
                              "--checkpoint-GBps: got '0'"},
                      BadPlan{"--model glam-1.7b-64e --cluster tpu-v4-64 --tokens 1e12 --chip-mtbf-hours 1e4 --checkpoint-GBps 10 --restart-minutes -1",
                              "--restart-minutes: got '-1'"}),
    case_name);

TEST(GlamsimPlan, ClusterWithoutPowerFiguresIsRefused) {
  auto path = std::filesystem::temp_directory_path() / "glam-no-power.toml";
  std::ofstream(path) << R"(id = "no-power"
[chip]
kind = "tpu-v4"
busy_W = 0
[topology]
kind = "torus"
dims = [4, 4, 4]
)";
  auto r = run_command("glamsim plan --model glam-1.7b-64e --cluster " + path.string() + " --tokens 1e12");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("busy_W"), std::string::npos) << r.err;
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace glam
