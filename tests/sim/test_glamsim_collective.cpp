// End-to-end: glamsim collective times one collective by buffer size as nccl-tests report it, from the
// same network model as a training step, and refuses bad input with exit code 2.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "support/run_command.h"

namespace glam {
namespace {

namespace fs = std::filesystem;
using testing::run_command;

// The GPU chip kinds' default calibration charges every collective call NCCL's base latency.
constexpr double kNcclBaseLatency = 6.7e-6;

// `glamsim collective ARGS` is refused: exit code 2, `expected` in the error, nothing on stdout.
void expect_refused(const std::string& args, const std::string& expected) {
  auto r = run_command("glamsim collective " + args);
  EXPECT_EQ(r.exit_code, 2) << args;
  EXPECT_NE(r.err.find(expected), std::string::npos) << args << ": " << r.err;
  EXPECT_TRUE(r.out.empty()) << args;
}

nlohmann::json results_of(const std::string& args) {
  auto r = run_command("glamsim collective --format json " + args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return nlohmann::json::object();
  return nlohmann::json::parse(r.out);
}

// On one NVSwitch node: sizes from -b to -e by -f, times growing with the size, busbw = algbw x the
// nccl-tests factor, and large buffers reaching most of the NVLink bandwidth, never more.
TEST(GlamsimCollective, SizesBandwidthsAndBusFactorsOnOneNode) {
  const auto j = results_of("--cluster dgx-h100-8 --kind all_reduce --kind all_gather -b 1K -e 1G -f 32");
  ASSERT_EQ(j["results"].size(), 10u);  // 1K, 32K, 1M, 32M, 1G for each kind
  EXPECT_EQ(j["group_size"], 8);
  EXPECT_EQ(j["groups"], 1);
  double previous_s = 0;
  for (size_t i = 0; i < j["results"].size(); ++i) {
    const auto& p = j["results"][i];
    const double bytes = p["bytes"], t = p["time_s"], alg = p["algbw_Bps"], bus = p["busbw_Bps"];
    EXPECT_DOUBLE_EQ(bytes, 1024.0 * std::pow(32.0, static_cast<double>(i % 5)));
    if (i % 5) {
      EXPECT_GT(t, previous_s) << bytes;
    }
    previous_s = t;
    EXPECT_NEAR(alg, bytes / t, 1e-9 * alg);
    const double factor = p["kind"] == "all_reduce" ? 2 * 7.0 / 8 : 7.0 / 8;
    EXPECT_NEAR(bus, factor * alg, 1e-9 * bus);
    // The H100's NVLink bandwidth, one way, bounds what each GPU sends: the bus bandwidth of a ring,
    // the buffer of an NVLS all-reduce (whose busbw goes beyond the links, as NCCL reports it).
    EXPECT_LE(p["algorithm"] == "nvls" ? alg : bus, 450e9) << bytes;
  }
  EXPECT_GT(j["results"][4]["busbw_Bps"].get<double>(), 0.6 * 450e9);
  // Small buffers pay the call's base latency and the ring's steps: all-reduce 2(n-1), all-gather n-1.
  const double all_reduce = j["results"][0]["time_s"], all_gather = j["results"][5]["time_s"];
  EXPECT_NEAR(all_reduce - kNcclBaseLatency, 2 * (all_gather - kNcclBaseLatency), 0.05 * all_reduce);
}

// Groups smaller than the cluster run at once, each over its neighbours: 8-GPU groups on a 64-GPU
// cluster stay inside their NVSwitch nodes and match one node alone. Over the whole cluster the
// all-to-all, 7/8 of it over InfiniBand, is far slower. NCCL's ring all-reduce across nodes sends
// 2(n-1)/n of the buffer out of each node, 1/8 of it through each GPU's NIC, so the NICs bound it:
// never faster than that at 50 GB/s. Both fidelities agree on an isolated node.
TEST(GlamsimCollective, GroupsOfNeighboursAndBothFidelities) {
  const std::string sizes = " --kind all_to_all --kind all_reduce -b 64M -e 64M";
  const auto node = results_of("--cluster dgx-h100-8" + sizes);
  const auto groups = results_of("--cluster dgx-h100-64 --group-size 8" + sizes);
  const auto whole = results_of("--cluster dgx-h100-64" + sizes);
  const auto flow = results_of("--cluster dgx-h100-8 --fidelity flow" + sizes);
  ASSERT_EQ(groups["groups"], 8);
  for (size_t i = 0; i < 2; ++i) {
    const double alone = node["results"][i]["time_s"];
    EXPECT_NEAR(groups["results"][i]["time_s"].get<double>(), alone, 1e-9 * alone);
    EXPECT_GT(whole["results"][i]["time_s"].get<double>(), (i == 0 ? 1.5 : 1.05) * alone);
    EXPECT_NEAR(flow["results"][i]["time_s"].get<double>(), alone, 0.1 * alone);
  }
  const auto ring = results_of("--cluster dgx-h100-64 --kind all_reduce -b 64M -e 64M --algorithm ring");
  EXPECT_EQ(ring["results"][0]["algorithm"], "ring");
  EXPECT_GT(ring["results"][0]["time_s"].get<double>(), 2 * 63.0 / 64 / 8 * 64.0 * (1 << 20) / 50e9);
  EXPECT_EQ(flow["fidelity"], "flow");
  EXPECT_EQ(flow["flow_phases_analytical"], 0);
  EXPECT_EQ(groups["groups_are"], "consecutive chips, a node's first");
  // A phase beyond --flow-max-flows is costed analytically, and the output says so.
  const auto capped = results_of("--cluster dgx-h100-64 --fidelity flow --flow-max-flows 100" + sizes);
  EXPECT_EQ(capped["flow_phases_analytical"], 1);  // the all-to-all's 64 x 63 flows
  auto text = run_command("glamsim collective --cluster dgx-h100-64 --fidelity flow --flow-max-flows 100" + sizes);
  EXPECT_NE(text.out.find("1 phase(s) had more than --flow-max-flows 100 flows and were costed analytically"),
            std::string::npos)
      << text.out;
}

// Strided groups are a plan's data-parallel groups: with --stride 8 on 8-GPU nodes, one GPU per node,
// every byte over InfiniBand (a plain ring of the nodes, near the NIC's 50 GB/s), far slower than the
// same group size inside a node.
TEST(GlamsimCollective, StridedGroupsCrossTheNodes) {
  const std::string sizes = " --kind all_reduce -b 256M -e 256M";
  const auto rails = results_of("--cluster dgx-h100-64 --stride 8" + sizes);
  const auto node = results_of("--cluster dgx-h100-64 --group-size 8" + sizes);
  EXPECT_EQ(rails["groups"], 8);
  EXPECT_EQ(rails["stride"], 8);
  EXPECT_EQ(rails["groups_are"], "members 8 chips apart");
  const auto& r = rails["results"][0];
  EXPECT_EQ(r["algorithm"], "ring");
  EXPECT_LE(r["busbw_Bps"].get<double>(), 50e9);
  EXPECT_GT(r["busbw_Bps"].get<double>(), 0.6 * 50e9);
  EXPECT_GT(r["time_s"].get<double>(), 5 * node["results"][0]["time_s"].get<double>());
  // 16 of 512 GPUs 8 apart: 32 groups at once
  EXPECT_EQ(results_of("--cluster dgx-h100-512 --stride 8 --group-size 16" + sizes)["groups"], 32);
  for (const auto& [args, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--stride 7", "--stride 7: expected a divisor of dgx-h100-64's 64 chips, less than them"},
           {"--stride 64", "--stride 64: expected a divisor"},
           {"--stride 8 --group-size 16", "--group-size 16: expected a divisor of dgx-h100-64's 64 chips / --stride 8 = 8"}})
    expect_refused("--cluster dgx-h100-64 " + args, expected);
}

// On switched fabrics an all-to-all goes to its peers 8 at a time, each round paying its route's latency,
// as NCCL sends it: over one node's 8 GPUs one round, where the all-gather's ring takes 7 steps; over
// 64 GPUs 8 rounds over longer routes. Both fidelities agree. On a torus the chips send to every peer
// at once.
TEST(GlamsimCollective, SmallAllToAllPaysARoundPerPeers) {
  for (const std::string fidelity : {"analytical", "flow"}) {
    const auto node = results_of("--cluster dgx-h100-8 --kind all_to_all --kind all_gather -b 8 -e 8 --fidelity " + fidelity);
    const double a2a = node["results"][0]["time_s"].get<double>() - kNcclBaseLatency;
    const double all_gather = node["results"][1]["time_s"].get<double>() - kNcclBaseLatency;
    EXPECT_NEAR(7 * a2a, all_gather, 0.05 * all_gather) << fidelity;
    const auto nodes = results_of("--cluster dgx-h100-64 --kind all_to_all -b 8 -e 8 --fidelity " + fidelity);
    EXPECT_GT(nodes["results"][0]["time_s"].get<double>() - kNcclBaseLatency, 8 * a2a) << fidelity;
  }
  // 64 chips of a 4x4x4 torus: the longest route's latency (6 hops of 1 us), not 63 rounds
  const auto torus = results_of("--cluster tpu-v4-64 --kind all_to_all -b 8 -e 8");
  EXPECT_LT(torus["results"][0]["time_s"].get<double>(), 10e-6);
}

// Across nodes an all-reduce has two algorithms: by default each size runs the faster, and --algorithm
// pins one as NCCL_ALGO does. The tree's log2(8) = 3 steps across 8 nodes beat the ring's 2 x 63 for
// small buffers, the ring's full bandwidth wins for large ones (the tree moves its bytes at 92% of
// what its links give); pinned, each gives its own time at every size. Trees run all-reduces across
// nodes only.
TEST(GlamsimCollective, AllReduceAcrossNodesPicksOrPinsItsAlgorithm) {
  const std::string sizes = " --cluster dgx-h100-64 --kind all_reduce -b 1K -e 4G -f 2048";
  const auto fastest = results_of(sizes), ring = results_of(sizes + " --algorithm ring"),
             tree = results_of(sizes + " --algorithm tree");
  ASSERT_EQ(fastest["results"].size(), 3u);
  EXPECT_EQ(fastest["algorithm_choice"], "fastest");
  EXPECT_EQ(tree["algorithm_choice"], "tree");
  for (size_t i = 0; i < 3; ++i) {
    const double r = ring["results"][i]["time_s"], t = tree["results"][i]["time_s"];
    EXPECT_EQ(ring["results"][i]["algorithm"], "ring");
    EXPECT_EQ(tree["results"][i]["algorithm"], "double_binary_tree");
    EXPECT_DOUBLE_EQ(fastest["results"][i]["time_s"].get<double>(), std::min(r, t));
  }
  EXPECT_LT(tree["results"][0]["time_s"].get<double>(), 0.8 * ring["results"][0]["time_s"].get<double>());
  EXPECT_GT(tree["results"][2]["time_s"].get<double>(), ring["results"][2]["time_s"].get<double>());
  auto text = run_command("glamsim collective" + sizes + " --algorithm ring");
  EXPECT_NE(text.out.find("the ring algorithm pinned"), std::string::npos) << text.out;
  for (const auto& [args, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--cluster dgx-h100-64 --algorithm tree", "it runs all_reduce only, as NCCL's does: add --kind all_reduce"},
           {"--cluster dgx-h100-64 --kind all_reduce --group-size 8 --algorithm tree",
            "these groups of 8 chips on dgx-h100-64 lie inside one node each"},
           {"--cluster tpu-v4-64 --kind all_reduce --algorithm tree", "are on a torus"},
           {"--cluster dgx-h100-8 --kind all_reduce --algorithm tree", "on dgx-h100-8 lie inside one node each"},
           {"--cluster dgx-h100-64 --algorithm nccl", "--algorithm: nccl not in {fastest,ring,tree,nvls}"},
           {"--cluster dgx-a100-8 --kind all_reduce --algorithm nvls",
            "on dgx-a100-8's nodes have none that reduce (switches.nvswitch.nvls)"},
           {"--cluster dgx-h100-64 --kind all_reduce --algorithm nvls", "on dgx-h100-64 span several nodes"},
           {"--cluster dgx-h100-8 --kind all_gather --algorithm nvls", "it runs all_reduce only"}})
    expect_refused(args, expected);
}

// Inside a DGX H100 node the all-reduce runs as rings for small buffers and NVLS for large ones, as
// NCCL does; pinned, each gives its own time at every size (NVLS's algbw near NCCL's 275 GB/s, the
// ring's busbw at 90% of the 450 GB/s links).
TEST(GlamsimCollective, AllReduceInsideAnH100NodeRunsNvlsForLargeBuffers) {
  const std::string sizes = " --cluster dgx-h100-8 --kind all_reduce -b 64K -e 4G -f 256";
  const auto fastest = results_of(sizes), ring = results_of(sizes + " --algorithm ring"),
             nvls = results_of(sizes + " --algorithm nvls");
  ASSERT_EQ(fastest["results"].size(), 3u);  // 64K, 16M, 4G
  EXPECT_EQ(fastest["results"][0]["algorithm"], "ring");
  EXPECT_EQ(fastest["results"][2]["algorithm"], "nvls");
  for (size_t i = 0; i < 3; ++i)
    EXPECT_DOUBLE_EQ(fastest["results"][i]["time_s"].get<double>(),
                     std::min(ring["results"][i]["time_s"].get<double>(), nvls["results"][i]["time_s"].get<double>()));
  EXPECT_NEAR(nvls["results"][2]["algbw_Bps"].get<double>(), 275e9, 0.01 * 275e9);
  EXPECT_NEAR(ring["results"][2]["busbw_Bps"].get<double>(), 0.9 * 450e9, 0.01 * 450e9);
  // DGX A100's NVSwitches do not reduce: rings at every size.
  for (const auto& r : results_of(" --cluster dgx-a100-8 --kind all_reduce -b 64K -e 4G -f 256")["results"])
    EXPECT_EQ(r["algorithm"], "ring");
}

// On two nodes the trees send each node's part out once per pass where the ring sends it nearly twice,
// so they go beyond the NICs' bound that holds the ring (8 x 25 GB/s on DGX A100), as NCCL's do.
TEST(GlamsimCollective, TwoNodeTreesBeatTheRingsNetworkBound) {
  const std::string two_nodes = " --cluster dgx-a100-64 --group-size 16 --kind all_reduce -b 8G -e 8G";
  const double ring = results_of(two_nodes + " --algorithm ring")["results"][0]["busbw_Bps"];
  const double tree = results_of(two_nodes + " --algorithm tree")["results"][0]["busbw_Bps"];
  EXPECT_LE(ring, 8 * 25e9);
  EXPECT_GT(tree, 8 * 25e9);
}

// A profile's network.collective_base_latency_s replaces the chip kind's fixed cost per call: with 0,
// a small all-reduce over one DGX H100 node is its 14 ring steps alone. Out of range it is refused.
TEST(GlamsimCollective, ProfileSetsTheBaseLatency) {
  const fs::path dir = fs::temp_directory_path() / ("glamsim-base-latency-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string profile =
      "device = \"h100\"\n[compute]\nmatmul_flops = [1e6, 1e9]\nmatmul_efficiency = [0.5, 0.9]\n"
      "[memory]\nbytes = [1e4, 1e8]\nefficiency = [0.5, 0.9]\n[network]\ncollective_base_latency_s = ";
  std::ofstream(dir / "none.toml") << profile << "0\n";
  std::ofstream(dir / "bad.toml") << profile << "-2\n";
  const std::string args = "--cluster dgx-h100-8 --kind all_reduce -b 8 -e 8";
  const double plain = results_of(args)["results"][0]["time_s"];
  const double none = results_of(args + " --calibration " + (dir / "none.toml").string())["results"][0]["time_s"];
  EXPECT_NEAR(plain - none, kNcclBaseLatency, 1e-9);
  EXPECT_NEAR(none, 14 * 0.6e-6, 0.05e-6);
  expect_refused(args + " --calibration " + (dir / "bad.toml").string(),
                 "key 'network.collective_base_latency_s' = -2: expected seconds from 0 to 1e-3");
  fs::remove_all(dir);
}

// Sizes are whole bytes (1.5K is 1536), a kind named twice is timed once, and torus groups are blocks
// where the group size allows one.
TEST(GlamsimCollective, WholeSizesOneRowPerKindAndTorusBlocks) {
  const auto j = results_of("--cluster tpu-v4-64 --group-size 16 --kind all_reduce --kind all_reduce -b 1.5K -e 6K -f 2");
  ASSERT_EQ(j["results"].size(), 3u);
  EXPECT_EQ(j["results"][0]["bytes"], 1536);
  EXPECT_TRUE(j["results"][0]["bytes"].is_number_integer());
  EXPECT_EQ(j["results"][2]["bytes"], 6144);
  EXPECT_EQ(j["groups_are"], "4x2x2 blocks of the torus");
  EXPECT_EQ(j["results"][0]["algorithm"], "torus_dimension_order");
}

// A block's ring along a dimension it does not go round is folded, so no ring neighbour is more than
// two gaps away: a small all-reduce's time, all latency, grows with the block, up to the whole torus
// (8x8x8 of the 8x8x16 torus took 294 us, over three times the whole torus's 90 us, when its rings
// closed over their whole length).
TEST(GlamsimCollective, TorusBlockLatencyGrowsWithTheBlock) {
  double previous_s = 0;
  for (int group : {8, 16, 64, 512, 1024}) {
    const auto j = results_of("--cluster tpu-v4-1024 --kind all_reduce -b 8 -e 8 --group-size " + std::to_string(group));
    const double t = j["results"][0]["time_s"];
    EXPECT_GE(t, 0.99 * previous_s) << group;
    previous_s = t;
  }
  EXPECT_LT(previous_s, 100e-6);
}

// A calibration profile's measured curve for the group size replaces the link model: the times are
// the profile's bus efficiencies turned back into seconds. --against-measured sets the link model
// beside them.
TEST(GlamsimCollective, ProfileCurvesGiveTheMeasuredTimes) {
  const fs::path dir = fs::temp_directory_path() / "glamsim-collective-test";
  fs::create_directories(dir);
  std::ofstream(dir / "host.toml") << "id = \"host-2\"\n[chip]\nkind = \"cpu\"\n[topology]\nkind = \"single-node\"\n"
                                      "chips = 2\n[links.nvlink]\nbandwidth_Bps = 1e10\nlatency_s = 1e-6\n";
  const std::string links =
      "device = \"cpu\"\n[measured]\npeak_flops = 5e10\nmemory_bandwidth_Bps = 1e10\nthreads = 1\n"
         "[compute]\nmatmul_flops = [1e6, 1e9]\nmatmul_efficiency = [0.5, 0.9]\n[memory]\nbytes = [1e4, 1e8]\n"
      "efficiency = [0.5, 0.9]\n"
      "[network]\nlink_bandwidth_Bps = 1e10\nlink_latency_s = 1e-6\nbytes = [1e3, 1e6]\n"
      "bandwidth_efficiency = [0.5, 0.5]\n";
  std::ofstream(dir / "links.toml") << links;
  std::ofstream(dir / "profile.toml")
      << links
      << "[[network.collective]]\nkind = \"all_reduce\"\nranks = 2\nbytes = [1e3, 1e6]\nbus_efficiency = [0.1, 0.8]\n";
  const auto j = results_of("--cluster " + (dir / "host.toml").string() + " --calibration " +
                            (dir / "profile.toml").string() + " --kind all_reduce -b 1e6 -e 1e6");
  ASSERT_EQ(j["results"].size(), 1u);
  // bus factor 1 for two ranks: 1e6 bytes at 0.8 x 1e10 B/s
  EXPECT_NEAR(j["results"][0]["time_s"].get<double>(), 1e6 / 0.8e10, 0.01 * 1e6 / 0.8e10);
  EXPECT_EQ(j["calibration"], (dir / "profile.toml").string());
  // --against-measured: the link model (the profile without its curves) beside the measured times, at the
  // profile's sizes
  const auto m = results_of("--cluster " + (dir / "host.toml").string() + " --calibration " +
                            (dir / "profile.toml").string() + " --kind all_reduce --against-measured");
  const auto l = results_of("--cluster " + (dir / "host.toml").string() + " --calibration " +
                            (dir / "links.toml").string() + " --kind all_reduce -b 1000 -e 1000000 -f 1000");
  ASSERT_EQ(m["results"].size(), 2u);
  ASSERT_EQ(l["results"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto& p = m["results"][i];
    EXPECT_EQ(p["bytes"], i ? 1000000 : 1000);
    EXPECT_NEAR(p["measured_time_s"].get<double>(), i ? 1e6 / 0.8e10 : 1e3 / 0.1e10, 1e-12);
    EXPECT_DOUBLE_EQ(p["time_s"].get<double>(), l["results"][i]["time_s"].get<double>());
    EXPECT_NEAR(p["error"].get<double>(), p["time_s"].get<double>() / p["measured_time_s"].get<double>() - 1, 1e-12);
    // two ranks: an all-reduce's bus factor 2(n-1)/n is 1, so the measured busbw is bytes / measured time
    EXPECT_NEAR(p["measured_busbw_Bps"].get<double>(), i ? 0.8e10 : 0.1e10, 1e-3);
  }
  // Without --cluster, the host the profile measured: its two ranks, linked as it measured, as host.toml.
  const auto on_host = results_of("--calibration " + (dir / "profile.toml").string() + " --kind all_reduce --against-measured");
  EXPECT_EQ(on_host["cluster"], "host-cpu-2");
  ASSERT_EQ(on_host["results"].size(), 2u);
  for (size_t i = 0; i < 2; ++i)
    EXPECT_DOUBLE_EQ(on_host["results"][i]["time_s"].get<double>(), m["results"][i]["time_s"].get<double>());
  auto text = run_command("glamsim collective --cluster " + (dir / "host.toml").string() + " --calibration " +
                          (dir / "profile.toml").string() + " --kind all_reduce --against-measured");
  EXPECT_NE(text.out.find("model error"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("without its measured collectives"), std::string::npos) << text.out;
  // nothing to compare with: no profile, or no curve of that kind and group size
  for (const auto& [args, expected] : std::vector<std::pair<std::string, std::string>>{
           {" --against-measured", "give --calibration PROFILE"},
           {" --calibration " + (dir / "profile.toml").string() + " --against-measured --kind all_gather",
            "measured no all_gather over groups of 2 (it has all_reduce over 2"},
           {" --calibration " + (dir / "links.toml").string() + " --against-measured --kind all_reduce",
            "(it has no collectives"}})
    expect_refused("--cluster " + (dir / "host.toml").string() + args, expected);
  // without --cluster, a profile of one rank has no host of several to time
  expect_refused("--calibration " + (dir / "links.toml").string(),
                 "links.toml measured no collectives (glamexec calibrate ran on one rank): give --cluster");
  // a profile of another chip kind is refused
  expect_refused("--cluster dgx-h100-8 --calibration " + (dir / "profile.toml").string(),
                 "describes cpu chips, but dgx-h100-8 has h100 chips");
  fs::remove_all(dir);
}

TEST(GlamsimCollective, BadInputExitsTwoNamingTheOption) {
  for (const auto& [args, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--cluster dgx-h100-64 --group-size 24", "--group-size 24: expected a divisor of dgx-h100-64's 64 chips"},
           {"--cluster dgx-h100-8 --group-size 16", "--group-size 16: expected a divisor"},
           {"--cluster dgx-h100-8 --group-size 1", "--group-size"},
           {"--cluster dgx-h100-8 --kind broadcast", "--kind broadcast: expected all_reduce, all_gather"},
           {"--cluster dgx-h100-8 -b 4X", "--min-bytes 4X: expected a whole number of bytes"},
           {"--cluster dgx-h100-8 -b 1.5", "--min-bytes 1.5: expected a whole number of bytes"},
           {"--cluster dgx-h100-8 -b 0x10", "--min-bytes 0x10: expected a whole number of bytes"},
           {"--cluster dgx-h100-8 -b -5", "--min-bytes"},
           {"--cluster dgx-h100-8 -e 0", "--max-bytes 0: expected a whole number of bytes"},
           {"--cluster dgx-h100-8 -e 1e20", "--max-bytes 1e20: expected a whole number of bytes from 1 to 1e15"},
           {"--cluster h200-1", "h200-1 has one chip: no collective to time"},
           {"--cluster dgx-h100-8 -b 1G -e 1M", "--min-bytes 1G is more than --max-bytes 1M"},
           {"--cluster dgx-h100-8 -f 1", "--step-factor"},
           {"--cluster dgx-h100-8 --fidelity exact", "--fidelity exact: expected analytical or flow"},
           {"--cluster no-such-cluster", "no-such-cluster"},
           {"--kind all_reduce", "give --cluster C, or --calibration PROFILE to time the host that profile measured"},
       })
    expect_refused(args, expected);
}

}  // namespace
}  // namespace glam
