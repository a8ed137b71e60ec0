// The built-in cluster catalogue: every file loads, and its figures are the datasheets' and those
// the closed forms give.
#include <gtest/gtest.h>

#include <filesystem>

#include "chip_kinds.h"
#include "cluster.h"
#include "common/catalogue.h"
#include "metrics.h"

namespace glam {
namespace {

TEST(TopologyCatalogue, HoldsTheClustersTheIssueNames) {
  auto ids = catalogue_ids("topologies");
  std::vector<std::string> wanted = {"tpu-v3-1024", "tpu-v4-64", "tpu-v4-512", "tpu-v4-1024", "tpu-v4-4096", "h200-1"};
  for (std::string gpu : {"a100", "h100", "h200"})
    for (int n : {8, 64, 512, 1024}) wanted.push_back("dgx-" + gpu + "-" + std::to_string(n));
  for (const auto& id : wanted) EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << id;
}

TEST(TopologyCatalogue, EveryFileLoadsAndItsIdIsItsFileName) {
  for (const auto& id : catalogue_ids("topologies")) {
    Cluster c = load_cluster(id);
    EXPECT_EQ(c.id(), id);
    EXPECT_GT(c.num_chips(), 0) << id;
    EXPECT_GE(c.pue(), 1.0) << id;
    EXPECT_EQ(c.resolved_config()["derived"]["chips"], c.num_chips()) << id;
  }
}

TEST(TopologyCatalogue, ChipShapesAndCounts) {
  struct Row {
    const char* id;
    TopologyKind kind;
    int chips;
    std::vector<int> dims;
    int per_node;
  };
  std::vector<Row> rows = {
      {"tpu-v3-1024", TopologyKind::kTorus, 1024, {32, 32}, 1},
      {"tpu-v4-64", TopologyKind::kTorus, 64, {4, 4, 4}, 1},
      {"tpu-v4-512", TopologyKind::kTorus, 512, {8, 8, 8}, 1},
      {"tpu-v4-1024", TopologyKind::kTorus, 1024, {8, 8, 16}, 1},
      {"tpu-v4-4096", TopologyKind::kTorus, 4096, {16, 16, 16}, 1},
      {"dgx-h100-8", TopologyKind::kSingleNode, 8, {}, 8},
      {"dgx-a100-64", TopologyKind::kFatTree, 64, {}, 8},
      {"dgx-h200-512", TopologyKind::kFatTree, 512, {}, 8},
      {"dgx-a100-1024", TopologyKind::kFatTree, 1024, {}, 8},
      {"h200-1", TopologyKind::kSingleNode, 1, {}, 1},
  };
  for (const auto& r : rows) {
    Cluster c = load_cluster(r.id);
    EXPECT_EQ(c.kind(), r.kind) << r.id;
    EXPECT_EQ(c.num_chips(), r.chips) << r.id;
    EXPECT_EQ(c.torus_dims(), r.dims) << r.id;
    EXPECT_EQ(c.chips_per_node(), r.per_node) << r.id;
  }
}

// Chip figures as the vendors' datasheets and Jouppi et al. print them.
TEST(TopologyCatalogue, ChipFiguresFollowTheReference) {
  const double GiB = 1024.0 * 1024 * 1024;
  ChipSpec v4 = load_cluster("tpu-v4-1024").chip();
  EXPECT_EQ(v4.kind, "tpu-v4");
  EXPECT_DOUBLE_EQ(v4.peak_flops_bf16, 275e12);
  EXPECT_DOUBLE_EQ(v4.hbm_bytes, 32 * GiB);
  EXPECT_DOUBLE_EQ(v4.hbm_bandwidth_Bps, 1200e9);
  EXPECT_DOUBLE_EQ(v4.idle_W, 90);
  EXPECT_DOUBLE_EQ(v4.busy_W, 192);
  // Chip at its measured mean (170 W) plus the host share gives the GLaM paper's 326 W per chip.
  EXPECT_DOUBLE_EQ(170 + v4.host_W_per_chip, 326);
  ChipSpec v3 = load_cluster("tpu-v3-1024").chip();
  EXPECT_DOUBLE_EQ(v3.peak_flops_bf16, 123e12);
  EXPECT_DOUBLE_EQ(v3.hbm_bandwidth_Bps, 900e9);
  EXPECT_DOUBLE_EQ(v3.busy_W, 262);
  ChipSpec a100 = load_cluster("dgx-a100-64").chip();
  EXPECT_DOUBLE_EQ(a100.peak_flops_bf16, 312e12);
  EXPECT_DOUBLE_EQ(a100.hbm_bandwidth_Bps, 2039e9);
  EXPECT_DOUBLE_EQ(a100.busy_W, 400);
  EXPECT_DOUBLE_EQ(8 * (a100.busy_W + a100.host_W_per_chip), 6500);  // DGX A100 system maximum
  ChipSpec h100 = load_cluster("dgx-h100-512").chip();
  EXPECT_DOUBLE_EQ(h100.peak_flops_bf16, 989e12);  // dense, not the sparse 1,979
  EXPECT_DOUBLE_EQ(h100.hbm_bandwidth_Bps, 3.35e12);
  // The highest node power measured on an 8-GPU H100 node (Latif et al. 2024), below the DGX
  // H100's 10.2 kW rating.
  EXPECT_DOUBLE_EQ(8 * (h100.busy_W + h100.host_W_per_chip), 8480);
  ChipSpec h200 = load_cluster("h200-1").chip();
  EXPECT_DOUBLE_EQ(h200.hbm_bytes, 143771.0 * (1 << 20));  // nvidia-smi's 143,771 MiB
  EXPECT_DOUBLE_EQ(h200.hbm_bandwidth_Bps, 4.8e12);
  EXPECT_DOUBLE_EQ(h200.busy_W, 700);
  EXPECT_DOUBLE_EQ(h200.host_W_per_chip, h100.host_W_per_chip);  // the same node around the GPUs
  // NCCL's memory per GPU before and after a first all-to-all over 8 H100s (NCCL issue #1685), per peer.
  EXPECT_NEAR(h100.all_to_all_peer_bytes, (4.34e9 - 1.06e9) / 7, 1);
  EXPECT_DOUBLE_EQ(h200.all_to_all_peer_bytes, h100.all_to_all_peer_bytes);
  EXPECT_DOUBLE_EQ(v4.all_to_all_peer_bytes, 0);
}

TEST(TopologyCatalogue, FacilityFigures) {
  Cluster tpu = load_cluster("tpu-v4-1024");
  EXPECT_DOUBLE_EQ(tpu.pue(), 1.11);                // 213 MWh / 191.6 MWh of IT energy
  EXPECT_NEAR(tpu.carbon_kg_per_kWh(), 40.2e3 / 456e3, 1e-3);  // 40.2 t / 456 MWh
  Cluster gpu = load_cluster("dgx-h100-1024");
  EXPECT_DOUBLE_EQ(gpu.pue(), 1.2);
  EXPECT_GT(gpu.carbon_kg_per_kWh(), 0.3);
  EXPECT_FALSE(gpu.price_per_kWh().has_value());
  // NDR switches at 750 W; NVSwitch power sits in the host share. 32 leaves use all 64 ports (32
  // down, 32 up); the 32 spine vertices use 32 each, which 16 switches hold (the 32 leaf and 16 spine
  // switches of NVIDIA's DGX SuperPOD reference design for four 32-node units).
  EXPECT_DOUBLE_EQ(gpu.switch_W(), (32 + 16) * 750.0);
  EXPECT_DOUBLE_EQ(tpu.switch_W(), 0.0);
  // 8 nodes: 8 rail leaves of 16 ports in use (2 switches' worth) and 8 spines of 8 (one switch),
  // not 16 switches (12 kW, more than the GPUs' hosts draw).
  EXPECT_DOUBLE_EQ(load_cluster("dgx-h100-64").switch_W(), 3 * 750.0);
  EXPECT_EQ(load_cluster("dgx-h100-64").powered_fabric_switches(), 3);
  EXPECT_EQ(gpu.powered_fabric_switches(), 48);
}

TEST(TopologyCatalogue, LinkFiguresPerKind) {
  Cluster v4 = load_cluster("tpu-v4-64");
  for (const Link& l : v4.links()) {
    EXPECT_EQ(l.kind, LinkKind::kIci);
    EXPECT_DOUBLE_EQ(l.bandwidth_Bps, 45e9);
  }
  Cluster h100 = load_cluster("dgx-h100-64");
  int nvlink = 0, ib = 0;
  for (const Link& l : h100.links()) {
    if (l.kind == LinkKind::kNvlink) {
      ++nvlink;
      EXPECT_DOUBLE_EQ(l.bandwidth_Bps, 450e9);  // 900 GB/s per GPU, both directions
    } else {
      ++ib;
      EXPECT_EQ(l.kind, LinkKind::kInfiniband);
      EXPECT_DOUBLE_EQ(l.bandwidth_Bps, 50e9);  // 400 Gb/s NDR
    }
  }
  EXPECT_EQ(nvlink, 2 * 64);
  EXPECT_EQ(ib, 2 * 64 + 2 * 64);  // NIC cables, then leaf-spine cables (8 leaves x 8 uplinks)
}

TEST(TopologyCatalogue, ChipKindsAreData) {
  auto kinds = chip_kinds();
  for (std::string k : {"tpu-v3", "tpu-v4", "a100-80gb", "h100", "h200"})
    EXPECT_NE(std::find(kinds.begin(), kinds.end(), k), kinds.end()) << k;
}

}  // namespace
}  // namespace glam
