// Metrics: computed on the graph (breadth-first search, maximum flow) and checked here against
// the closed forms for tori and fat-trees.
#include <gtest/gtest.h>

#include <algorithm>

#include "cluster.h"
#include "common/catalogue.h"
#include "graph.h"
#include "metrics.h"

namespace glam {
namespace {

// Closed forms for a torus with per-direction link bandwidth bw.
struct TorusForm {
  int chips = 1, links = 0, diameter = 0;
  double bisection = 0, injection = 0;
};
TorusForm torus_form(const std::vector<int>& dims, double bw) {
  TorusForm f;
  for (int n : dims) f.chips *= n;
  int per_chip = 0;
  for (int n : dims) {
    per_chip += n >= 3 ? 2 : (n == 2 ? 1 : 0);
    f.diameter += n / 2;
  }
  f.links = f.chips * per_chip;
  const int big = *std::max_element(dims.begin(), dims.end());
  // Cutting every ring of the largest dimension in two places (one, for a ring of two).
  f.bisection = bw * (f.chips / big) * (big >= 3 ? 2 : (big == 2 ? 1 : 0));
  f.injection = bw * per_chip;
  return f;
}

std::string torus_file(const std::string& dims) {
  return "id = \"t\"\n[chip]\nkind = \"tpu-v4\"\n[topology]\nkind = \"torus\"\ndims = " + dims +
         "\n[links.ici]\nbandwidth_Bps = 10e9\n";
}

TEST(TopologyMetrics, CatalogueToriMatchTheClosedForms) {
  for (const char* id : {"tpu-v3-1024", "tpu-v4-64", "tpu-v4-512", "tpu-v4-1024", "tpu-v4-4096"}) {
    Cluster c = load_cluster(id);
    const double bw = c.links().front().bandwidth_Bps;
    TorusForm f = torus_form(c.torus_dims(), bw);
    ClusterMetrics m = compute_metrics(c);
    EXPECT_EQ(m.chips, f.chips) << id;
    EXPECT_EQ(m.links, f.links) << id;
    EXPECT_EQ(m.switches, 0) << id;
    EXPECT_EQ(m.diameter_hops, f.diameter) << id;
    EXPECT_DOUBLE_EQ(m.bisection_bandwidth_Bps, f.bisection) << id;
    EXPECT_DOUBLE_EQ(m.injection_bandwidth_Bps, f.injection) << id;
    EXPECT_DOUBLE_EQ(m.peak_flops, f.chips * c.chip().peak_flops_bf16) << id;
    EXPECT_DOUBLE_EQ(m.hbm_bytes, f.chips * c.chip().hbm_bytes) << id;
  }
}

TEST(TopologyMetrics, Tpu4096BisectionIsAbout23TBps) {
  // 16x16x16: 256 rings cut twice, 512 cables at 45 GB/s each way: 23 TB/s one way.
  ClusterMetrics m = compute_metrics(load_cluster("tpu-v4-4096"));
  EXPECT_DOUBLE_EQ(m.bisection_bandwidth_Bps, 512 * 45e9);
  EXPECT_EQ(m.diameter_hops, 24);
}

TEST(TopologyMetrics, OddAndDegenerateToriMatchTheClosedForms) {
  for (const char* dims : {"[3, 5]", "[2, 6, 3]", "[2, 2]", "[7]", "[1, 4]", "[1]", "[5, 4, 3, 2]"}) {
    Cluster c = parse_cluster(torus_file(dims), "t.toml");
    TorusForm f = torus_form(c.torus_dims(), 10e9);
    ClusterMetrics m = compute_metrics(c);
    EXPECT_EQ(m.links, f.links) << dims;
    EXPECT_EQ(m.diameter_hops, f.diameter) << dims;
    EXPECT_DOUBLE_EQ(m.bisection_bandwidth_Bps, f.bisection) << dims;
  }
}

// The diameter takes one breadth-first search on a torus; all pairs must agree.
TEST(TopologyMetrics, DiameterAgreesWithAllPairsSearch) {
  for (const char* id : {"tpu-v4-64", "tpu-v4-512", "dgx-h100-64", "dgx-a100-1024"}) {
    Cluster c = load_cluster(id);
    int all_pairs = 0, longest_route = 0;
    for (int s = 0; s < c.num_chips(); s += (c.num_chips() > 512 ? 7 : 1)) {
      auto dist = hop_distances(c.graph(), s);
      for (int d = 0; d < c.num_chips(); ++d) {
        all_pairs = std::max(all_pairs, dist[d]);
        longest_route = std::max(longest_route, c.route_hops(s, d));
      }
    }
    EXPECT_EQ(diameter_hops(c), all_pairs) << id;
    EXPECT_EQ(longest_route, all_pairs) << id;
  }
}

// Non-blocking fat-trees: half the chips' NIC bandwidth; diameter up and down the whole tree.
TEST(TopologyMetrics, CatalogueFatTreesMatchTheClosedForms) {
  struct Row {
    const char* id;
    int levels, switches;
    double nic_Bps;
  };
  for (Row r : {Row{"dgx-a100-64", 2, 8 + 8 + 8, 25e9}, Row{"dgx-a100-512", 2, 64 + 32 + 16, 25e9},
                Row{"dgx-a100-1024", 3, 128 + 64 + 128 + 128, 25e9}, Row{"dgx-h100-512", 2, 64 + 16 + 32, 50e9},
                Row{"dgx-h200-1024", 2, 128 + 32 + 32, 50e9}}) {
    Cluster c = load_cluster(r.id);
    ClusterMetrics m = compute_metrics(c);
    EXPECT_DOUBLE_EQ(m.bisection_bandwidth_Bps, c.num_chips() / 2 * r.nic_Bps) << r.id;
    EXPECT_EQ(m.diameter_hops, 2 * r.levels) << r.id;
    EXPECT_EQ(m.switches, r.switches) << r.id;  // NVSwitch nodes + fat-tree switches
    const double nvlink = r.nic_Bps == 25e9 ? 300e9 : 450e9;
    EXPECT_DOUBLE_EQ(m.injection_bandwidth_Bps, nvlink + r.nic_Bps) << r.id;
  }
}

TEST(TopologyMetrics, SingleNodes) {
  ClusterMetrics node = compute_metrics(load_cluster("dgx-h200-8"));
  EXPECT_EQ(node.links, 16);
  EXPECT_EQ(node.switches, 1);
  EXPECT_EQ(node.diameter_hops, 2);
  EXPECT_DOUBLE_EQ(node.bisection_bandwidth_Bps, 4 * 450e9);
  ClusterMetrics one = compute_metrics(load_cluster("h200-1"));
  EXPECT_EQ(one.links, 0);
  EXPECT_EQ(one.diameter_hops, 0);
  EXPECT_EQ(one.bisection_bandwidth_Bps, 0.0);
  EXPECT_EQ(one.injection_bandwidth_Bps, 0.0);
  EXPECT_DOUBLE_EQ(one.hbm_bytes, 143771.0 * (1 << 20));
}

// A 2:1 tapered tree: the leaves' uplinks, not the NICs, limit the bisection.
TEST(TopologyMetrics, TaperedFatTreeBisectionIsItsUplinks) {
  auto file = [](const std::string& up) {
    return "id = \"ft\"\n[chip]\nkind = \"h100\"\n[topology]\nkind = \"fat-tree\"\nchips = 16\n"
           "[fat_tree]\ndown_ports = [4, 4]\n" + up + "[links.infiniband]\nbandwidth_Bps = 10e9\n";
  };
  ClusterMetrics full = compute_metrics(parse_cluster(file(""), "ft.toml"));
  EXPECT_DOUBLE_EQ(full.bisection_bandwidth_Bps, 8 * 10e9);
  ClusterMetrics tapered = compute_metrics(parse_cluster(file("up_ports = [2]\n"), "ft.toml"));
  // Two leaves on each side, two uplinks each.
  EXPECT_DOUBLE_EQ(tapered.bisection_bandwidth_Bps, 2 * 2 * 10e9);
  EXPECT_EQ(tapered.switches, 4 + 2);
  EXPECT_EQ(tapered.diameter_hops, 4);
}

// Switch power is per level's ports in use, not per XGFT vertex: here 4 leaves of 4 + 2 ports and
// 2 spines of 4 ports, 6 vertices using 32 ports.
TEST(TopologyMetrics, SwitchPowerCountsThePortsInUse) {
  auto file = [](int ports) {
    return "id = \"ft\"\n[chip]\nkind = \"h100\"\n[topology]\nkind = \"fat-tree\"\nchips = 16\n"
           "[fat_tree]\ndown_ports = [4, 4]\nup_ports = [2]\n[links.infiniband]\nbandwidth_Bps = 10e9\n"
           "[switches.infiniband]\npower_W = 100\nports = " + std::to_string(ports) + "\n";
  };
  Cluster roomy = parse_cluster(file(64), "ft.toml");
  EXPECT_EQ(roomy.num_switches(), 6);                   // the vertices are unchanged
  EXPECT_DOUBLE_EQ(roomy.switch_W(), (1 + 1) * 100.0);  // 24 leaf ports fill one switch, 8 spine ports one
  EXPECT_EQ(roomy.powered_fabric_switches(), 2);
  // Six ports each: the leaves fill 4 switches exactly; the spines' 8 ports need 2.
  EXPECT_DOUBLE_EQ(parse_cluster(file(6), "ft.toml").switch_W(), (4 + 2) * 100.0);
  EXPECT_DOUBLE_EQ(parse_cluster(file(8), "ft.toml").switch_W(), (3 + 1) * 100.0);
}

TEST(TopologyMetrics, MaxFlowSeesSwitchesOnEitherSide) {
  // On a single node every flow crosses the NVSwitch: a 1-vs-7 split is limited by the one GPU.
  Cluster c = load_cluster("dgx-h100-8");
  std::vector<bool> one(8, false);
  one[3] = true;
  EXPECT_DOUBLE_EQ(max_flow_Bps(c, one), 450e9);
}

}  // namespace
}  // namespace glam
