// The SimGrid platform is the same network as the graph: a SimGrid route crosses the same links,
// with the same bandwidths and latencies, as Cluster::route, and a transfer takes what CM02
// without factors says it should.
#include <gtest/gtest.h>

#include <random>

#include <simgrid/s4u.hpp>

#include "cluster.h"
#include "graph.h"
#include "simgrid/simgrid_platform.h"

namespace glam {
namespace {

namespace sg4 = simgrid::s4u;

// SimGrid allows one engine per process, so every test adds its cluster as a child zone of one root.
class SimgridPlatformTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (engine_) return;
    static int argc = 2;
    static char arg0[] = "test", arg1[] = "--log=root.thres:critical";
    static char* argv[] = {arg0, arg1, nullptr};
    engine_ = new sg4::Engine(&argc, argv);
    configure_simgrid_network();
    root_ = sg4::create_full_zone("root");
  }
  SimgridPlatform build(const Cluster& c, const std::string& prefix) {
    SimgridPlatformOptions o;
    o.parent = root_;
    o.name_prefix = prefix;
    return build_simgrid_platform(c, o);
  }
  static sg4::Engine* engine_;
  static sg4::NetZone* root_;
};
sg4::Engine* SimgridPlatformTest::engine_ = nullptr;
sg4::NetZone* SimgridPlatformTest::root_ = nullptr;

void expect_same_routes(const Cluster& c, const SimgridPlatform& p, const std::string& prefix, int samples) {
  ASSERT_EQ(static_cast<int>(p.hosts.size()), c.num_chips());
  ASSERT_EQ(p.links.size(), c.links().size());
  // Every edge of the Boost.Graph graph is a SimGrid link of the same id and capacity.
  const auto& g = c.graph().g;
  ASSERT_EQ(boost::num_edges(g), p.links.size());
  for (auto [e, end] = boost::edges(g); e != end; ++e) {
    const int id = g[*e].link;
    EXPECT_EQ(p.links[id]->get_name(), prefix + "link" + std::to_string(id));
    EXPECT_DOUBLE_EQ(p.links[id]->get_bandwidth(), g[*e].bandwidth_Bps);
    EXPECT_EQ(c.links()[id].from, static_cast<int>(boost::source(*e, g)));
  }
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> pick(0, c.num_chips() - 1);
  for (int i = 0; i < samples; ++i) {
    const int s = pick(rng), d = pick(rng);
    std::vector<sg4::Link*> links;
    double latency = 0;
    p.hosts[s]->route_to(p.hosts[d], links, &latency);
    std::vector<int> ours = c.route(s, d);
    ASSERT_EQ(links.size(), ours.size()) << c.id() << " " << s << "->" << d;
    double our_latency = 0;
    for (size_t k = 0; k < ours.size(); ++k) {
      const Link& l = c.links()[ours[k]];
      EXPECT_EQ(links[k]->get_name(), prefix + "link" + std::to_string(l.id)) << c.id() << " " << s << "->" << d;
      EXPECT_DOUBLE_EQ(links[k]->get_bandwidth(), l.bandwidth_Bps);
      EXPECT_DOUBLE_EQ(links[k]->get_latency(), l.latency_s);
      our_latency += l.latency_s;
    }
    EXPECT_NEAR(latency, our_latency, 1e-15);
  }
}

TEST_F(SimgridPlatformTest, TorusRoutesMatch) {
  for (const char* id : {"tpu-v4-4096", "tpu-v3-1024"}) {
    Cluster c = load_cluster(id);
    expect_same_routes(c, build(c, std::string(id) + "/"), std::string(id) + "/", 300);
  }
}

TEST_F(SimgridPlatformTest, FatTreeRoutesMatch) {
  for (const char* id : {"dgx-h100-1024", "dgx-a100-1024", "dgx-a100-64"}) {
    Cluster c = load_cluster(id);
    expect_same_routes(c, build(c, std::string(id) + "/"), std::string(id) + "/", 300);
  }
}

TEST_F(SimgridPlatformTest, SingleNodeRoutesMatch) {
  Cluster c = load_cluster("dgx-h200-8");
  SimgridPlatform p = build(c, "node/");
  expect_same_routes(c, p, "node/", 64);
  EXPECT_DOUBLE_EQ(p.hosts[0]->get_speed(), 989e12);
  EXPECT_EQ(std::string(p.hosts[0]->get_property("wattage_per_state")), "70:70:700");
}

// Runs last in the process (it seals the platform): CM02 without factors and without a TCP
// window gives latency + bytes / bandwidth, and two flows on one link share it equally.
TEST_F(SimgridPlatformTest, ZTransfersTakeLatencyPlusBytesOverBandwidth) {
  Cluster c = load_cluster("tpu-v4-64");
  SimgridPlatform p = build(c, "timing/");
  double alone = -1, shared_a = -1, shared_b = -1;
  sg4::Actor::create("alone", p.hosts[0], [&] {
    sg4::Comm::sendto(p.hosts[0], p.hosts[1], 45e9);
    alone = sg4::Engine::get_clock();
    // Chips 0 -> 2 and 1 -> 2 both cross link 1 -> 2.
    auto a = sg4::Comm::sendto_async(p.hosts[0], p.hosts[2], 45e9);
    auto b = sg4::Comm::sendto_async(p.hosts[1], p.hosts[2], 45e9);
    a->wait();
    shared_a = sg4::Engine::get_clock() - alone;
    b->wait();
    shared_b = sg4::Engine::get_clock() - alone;
  });
  engine_->run();
  EXPECT_NEAR(alone, 1.0 + 1e-6, 1e-9);
  EXPECT_NEAR(shared_a, 2.0 + 2e-6, 1e-5);
  EXPECT_NEAR(shared_b, 2.0 + 2e-6, 1e-5);
}

}  // namespace
}  // namespace glam
