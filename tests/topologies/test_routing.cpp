// Routes: each is a path of the graph from source to destination, as short as the graph allows,
// and follows the stated policy (dimension order on tori, up/down with D-mod-k on fat-trees).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "cluster.h"
#include "graph.h"

namespace glam {
namespace {

// Checks that `route` walks the links from src to dst, and returns its length.
void expect_path(const Cluster& c, int src, int dst, const std::vector<int>& route) {
  int at = src;
  for (int l : route) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, static_cast<int>(c.links().size()));
    ASSERT_EQ(c.links()[l].from, at) << c.id() << " " << src << "->" << dst;
    at = c.links()[l].to;
  }
  EXPECT_EQ(at, dst) << c.id() << " " << src << "->" << dst;
}

std::vector<std::pair<int, int>> sample_pairs(int chips, int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pick(0, chips - 1);
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < n; ++i) pairs.emplace_back(pick(rng), pick(rng));
  return pairs;
}

TEST(TopologyRouting, RoutesAreShortestPathsOnEveryCatalogueCluster) {
  for (const char* id : {"tpu-v3-1024", "tpu-v4-64", "tpu-v4-1024", "tpu-v4-4096", "dgx-a100-8", "dgx-a100-64",
                         "dgx-h100-512", "dgx-a100-1024", "dgx-h200-1024"}) {
    Cluster c = load_cluster(id);
    auto pairs = sample_pairs(c.num_chips(), 400, 7);
    std::map<int, std::vector<int>> bfs;  // source -> distances
    for (auto [s, d] : pairs) {
      auto route = c.route(s, d);
      expect_path(c, s, d, route);
      if (!bfs.count(s)) bfs[s] = hop_distances(c.graph(), s);
      EXPECT_EQ(static_cast<int>(route.size()), bfs[s][d]) << id << " " << s << "->" << d;
      EXPECT_EQ(c.route_hops(s, d), static_cast<int>(route.size())) << id;
    }
  }
}

TEST(TopologyRouting, SameChipIsEmptyAndSingleChipHasNoLinks) {
  Cluster c = load_cluster("tpu-v4-64");
  EXPECT_TRUE(c.route(5, 5).empty());
  EXPECT_EQ(c.route_latency_s(5, 5), 0.0);
  Cluster one = load_cluster("h200-1");
  EXPECT_TRUE(one.links().empty());
  EXPECT_TRUE(one.route(0, 0).empty());
  EXPECT_THROW(one.route(0, 1), std::out_of_range);
}

TEST(TopologyRouting, TorusIsDimensionOrderTheShortWayRound) {
  Cluster c = load_cluster("tpu-v4-1024");  // 8 x 8 x 16
  auto coords = [&](int chip) { return c.torus_coords(chip); };
  auto chip_at = [](int x, int y, int z) { return x + 8 * (y + 8 * z); };
  // (1,2,3) -> (7,5,14): x goes down 2 (wrap), y up 3, z down 5 (wrap); in that order.
  int s = chip_at(1, 2, 3), d = chip_at(7, 5, 14);
  auto route = c.route(s, d);
  ASSERT_EQ(route.size(), 2u + 3u + 5u);
  std::vector<std::vector<int>> seen;
  for (int l : route) seen.push_back(coords(c.links()[l].to));
  EXPECT_EQ(seen[0], (std::vector<int>{0, 2, 3}));
  EXPECT_EQ(seen[1], (std::vector<int>{7, 2, 3}));
  EXPECT_EQ(seen[4], (std::vector<int>{7, 5, 3}));
  EXPECT_EQ(seen[5], (std::vector<int>{7, 5, 2}));
  EXPECT_EQ(seen[9], (std::vector<int>{7, 5, 14}));
  EXPECT_EQ(coords(s), (std::vector<int>{1, 2, 3}));
}

TEST(TopologyRouting, TorusHalfwayTiesSplitByParity) {
  Cluster c = load_cluster("tpu-v4-64");  // rings of 4: distance 2 either way
  auto first_hop = [&](int s, int d) { return c.torus_coords(c.links()[c.route(s, d).front()].to)[0]; };
  EXPECT_EQ(first_hop(0, 2), 1);  // even source goes up
  EXPECT_EQ(first_hop(1, 3), 0);  // odd source goes down
  EXPECT_EQ(c.route(0, 2).size(), 2u);
}

TEST(TopologyRouting, SameNodeGoesThroughTheNvswitch) {
  Cluster c = load_cluster("dgx-h100-512");
  auto route = c.route(8 * 5 + 1, 8 * 5 + 6);
  ASSERT_EQ(route.size(), 2u);
  EXPECT_EQ(c.links()[route[0]].kind, LinkKind::kNvlink);
  EXPECT_EQ(c.vertex_kind(c.links()[route[0]].to), VertexKind::kNodeSwitch);
  EXPECT_EQ(c.links()[route[1]].to, 8 * 5 + 6);
}

TEST(TopologyRouting, FatTreeIsRailOptimisedUpDown) {
  Cluster c = load_cluster("dgx-h100-512");  // leaves of 32 nodes, one rail each; 32 spines
  // Same rail, nodes 0 and 7 (same leaf): NIC up, NIC down.
  auto same_leaf = c.route(0 * 8 + 3, 7 * 8 + 3);
  ASSERT_EQ(same_leaf.size(), 2u);
  EXPECT_EQ(c.links()[same_leaf[0]].to, c.links()[same_leaf[1]].from);
  EXPECT_EQ(c.vertex_kind(c.links()[same_leaf[0]].to), VertexKind::kFabricSwitch);
  // Other rail or other leaf group: leaf, spine, leaf.
  for (auto [s, d] : {std::pair{3, 7 * 8 + 4}, std::pair{3, 40 * 8 + 3}}) {
    auto r = c.route(s, d);
    ASSERT_EQ(r.size(), 4u);
    for (int l : r) EXPECT_EQ(c.links()[l].kind, LinkKind::kInfiniband);
  }
}

// D-mod-k: every spine-to-leaf link leads to a single destination NIC, and in an all-to-all the
// leaf up-links carry equal loads.
TEST(TopologyRouting, FatTreeEcmpSpreadsAllToAllEvenly) {
  Cluster c = load_cluster("dgx-h100-512");
  std::vector<int> load(c.links().size(), 0);
  std::vector<std::set<int>> destinations(c.links().size());
  std::vector<int> route;
  for (int s = 0; s < c.num_chips(); ++s)
    for (int d = 0; d < c.num_chips(); ++d) {
      route.clear();
      c.append_route(s, d, route);
      for (int l : route) {
        ++load[l];
        destinations[l].insert(d);
      }
    }
  int up_min = 1 << 30, up_max = 0, down_links = 0;
  for (const Link& l : c.links()) {
    if (c.vertex_kind(l.from) != VertexKind::kFabricSwitch || c.vertex_kind(l.to) != VertexKind::kFabricSwitch)
      continue;
    if (l.from < l.to) {  // leaves are numbered before spines: an up-link
      up_min = std::min(up_min, load[l.id]);
      up_max = std::max(up_max, load[l.id]);
    } else {
      ++down_links;
      EXPECT_EQ(destinations[l.id].size(), 1u) << "link " << l.id;
      // From the other 15 leaves' 32 NICs, less the destination node's 7 other GPUs (NVLink).
      EXPECT_EQ(load[l.id], 15 * 32 - 7);
    }
  }
  EXPECT_EQ(down_links, 16 * 32);
  EXPECT_EQ(up_min, up_max);
  EXPECT_EQ(up_min, 15 * 32 - 7);
}

TEST(TopologyRouting, RouteLatencyIsTheSumOfItsLinks) {
  Cluster c = load_cluster("dgx-h100-1024");
  // NIC hop 1.3 us + leaf 130 ns, leaf-spine 1.3 us + 130 ns, spine-leaf 1.3 us + 130 ns, leaf-NIC 1.3 us.
  EXPECT_NEAR(c.route_latency_s(0, 1023), 4 * 1.3e-6 + 3 * 130e-9, 1e-15);
  Cluster t = load_cluster("tpu-v4-64");
  EXPECT_NEAR(t.route_latency_s(0, 63), 3 * 1e-6, 1e-15);  // (3,3,3) is one hop per dimension away
}

}  // namespace
}  // namespace glam
