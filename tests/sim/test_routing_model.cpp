// Routing as an input: uniform, skewed and recorded loads under the capacity rules.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "common/errors.h"
#include "workload/routing_model.h"
#include "support/expect_error.h"

namespace glam {
namespace {

StepShape shape(int64_t tokens, int64_t ep) {
  StepShape s;
  s.tokens_per_rank = tokens, s.dp = ep, s.ep = ep;
  return s;
}

TEST(RoutingModel, UniformFillsCapacityWithoutDrops) {
  ModelConfig m = load_model("glam-8b-64e");  // cf 2, top-2: C = 32 = 2 * 1024 / 64
  auto shares = expert_shares(parse_routing_spec("uniform"), m, 16);
  ASSERT_EQ(shares.size(), 16u);
  MoeLayerLoad load = moe_layer_load(m, shape(8192, 8), shares[0]);
  EXPECT_DOUBLE_EQ(load.dropped_fraction, 0);
  EXPECT_DOUBLE_EQ(load.a2a_send_tokens, 2.0 * 8192);
  EXPECT_DOUBLE_EQ(load.expert_tokens, 2.0 * 8192);  // receives what it sends
  for (double s : load.dest_share) EXPECT_DOUBLE_EQ(s, 1.0 / 8);
}

TEST(RoutingModel, SkewDropsTokensAndLoadsTheHotRank) {
  ModelConfig m = load_model("glam-8b-64e");
  auto shares = expert_shares(parse_routing_spec("skew=1.0"), m, 1);
  EXPECT_NEAR(std::accumulate(shares[0].begin(), shares[0].end(), 0.0), 1.0, 1e-12);
  EXPECT_GT(shares[0][0], shares[0][63]);
  // Padded dispatch (the default): the costs of every slot, whatever the routing; the drops are the routing's.
  const MoeLayerLoad padded = moe_layer_load(m, shape(8192, 8), shares[0]);
  const double slots = 64.0 * 32 * 8;  // experts x C x groups per rank
  EXPECT_NEAR(padded.a2a_send_tokens, slots, 1e-9);
  EXPECT_NEAR(padded.expert_tokens, slots, 1e-9);
  EXPECT_TRUE(padded.dest_share.empty());
  EXPECT_GT(padded.dropped_fraction, 0.1);
  // Only kept copies travel and are computed:
  m.moe_dispatch = "kept";
  MoeLayerLoad uniform = moe_layer_load(m, shape(8192, 8), expert_shares(parse_routing_spec("uniform"), m, 1)[0]);
  MoeLayerLoad skewed = moe_layer_load(m, shape(8192, 8), shares[0]);
  EXPECT_NEAR(skewed.dropped_fraction, padded.dropped_fraction, 1e-12);
  EXPECT_GT(skewed.dropped_fraction, 0.1);
  EXPECT_LT(skewed.a2a_send_tokens, uniform.a2a_send_tokens);  // dropped copies are not sent
  // Capacity bounds the hot rank: its 8 experts cannot take more than 8 x C per group.
  const double max_per_rank = 8.0 * 32 * 8 * 8;  // experts x C x groups per rank x ep
  EXPECT_LE(skewed.expert_tokens, max_per_rank + 1e-9);
  EXPECT_GT(skewed.dest_share[0], skewed.dest_share[7]);
}

TEST(RoutingModel, RecordedHistogram) {
  ModelConfig m = load_model("glam-8b-64e");
  auto path = std::filesystem::temp_directory_path() / "glam-routing.json";
  {
    std::ofstream out(path);
    out << R"({"moe_layers": [)";
    for (int l = 0; l < 2; ++l) {
      out << (l ? "," : "") << R"({"layer": )" << 2 * l + 1 << R"(, "expert_load": [)";
      for (int e = 0; e < 64; ++e) out << (e ? "," : "") << (e == 0 ? 300 : 100);
      out << "]}";
    }
    out << "]}";
  }
  auto shares = expert_shares(parse_routing_spec(path.string()), m, 2);
  EXPECT_NEAR(shares[1][0], 300.0 / (300 + 63 * 100), 1e-12);
  EXPECT_THROW(expert_shares(parse_routing_spec(path.string()), m, 16), ConfigError);  // too few blocks
  std::filesystem::remove(path);
}

// A record's histogram is of what the router asked: the copies each expert kept plus those dropped for
// its capacity. Kept copies alone are capped at capacity, so a hot expert looked no hotter than its
// capacity and the drops came out far below those the run measured. Records from before
// expert_dropped give their kept copies.
TEST(RoutingModel, RecordedHistogramCountsTheDroppedCopies) {
  ModelConfig m = load_model("glam-8b-64e");  // C = 32 per group of 1,024 tokens, top-2
  const StepShape s = shape(8192, 8);         // 8 groups per rank
  // Expert 0 asked for 4 x capacity in every group, the others for what is left, evenly.
  const double groups = 8 * 8, capacity = 32, copies = 2.0 * 8192 * 8;
  const double hot_kept = capacity * groups, hot_dropped = 3 * capacity * groups;
  const double other = (copies - hot_kept - hot_dropped) / 63;
  auto path = std::filesystem::temp_directory_path() / "glam-routing-dropped.json";
  auto write = [&](bool with_dropped) {
    std::ofstream out(path);
    out.precision(17);
    out << R"({"moe_layers": [{"layer": 1, "expert_load": [)" << hot_kept;
    for (int e = 1; e < 64; ++e) out << "," << other;
    out << "]";
    if (with_dropped) {
      out << R"(, "expert_dropped": [)" << hot_dropped;
      for (int e = 1; e < 64; ++e) out << ",0";
      out << "]";
    }
    out << "}]}";
  };
  write(true);
  const auto demand = expert_shares(parse_routing_spec(path.string()), m, 1)[0];
  EXPECT_NEAR(demand[0], 4 * capacity * groups / copies, 1e-12);
  // the drops the run measured: 3 x capacity of expert 0 in every group (the others fit)
  EXPECT_NEAR(moe_layer_load(m, s, demand).dropped_fraction, hot_dropped / copies, 1e-3);
  write(false);
  const auto kept = expert_shares(parse_routing_spec(path.string()), m, 1)[0];
  EXPECT_NEAR(kept[0], hot_kept / (copies - hot_dropped), 1e-12);
  EXPECT_LT(moe_layer_load(m, s, kept).dropped_fraction, 0.01);
  std::ofstream(path) << R"({"moe_layers": [{"layer": 1, "expert_load": [1, 2], "expert_dropped": [1, -2]}]})";
  ModelConfig two = m;
  two.experts = 2;
  const std::string msg =
      testing::error_message_of<ConfigError>([&] { expert_shares(parse_routing_spec(path.string()), two, 1); });
  EXPECT_NE(msg.find("key 'moe_layers[0].expert_dropped' = -2: expected non-negative counts"), std::string::npos) << msg;
  std::filesystem::remove(path);
}

TEST(RoutingModel, BadSpecs) {
  EXPECT_THROW(parse_routing_spec("skew=-1"), UsageError);
  EXPECT_THROW(parse_routing_spec("skew=abc"), UsageError);
  ModelConfig m = load_model("glam-8b-64e");
  EXPECT_THROW(expert_shares(parse_routing_spec("/nonexistent/routing.json"), m, 1), ConfigError);
  ModelConfig small = load_model("glam-1.7b-32e");
  auto path = std::filesystem::temp_directory_path() / "glam-routing-64.json";
  std::ofstream(path) << R"({"moe_layers": [{"layer": 1, "expert_load": [1, 2, 3]}]})";
  const std::string msg =
      testing::error_message_of<ConfigError>([&] { expert_shares(parse_routing_spec(path.string()), small, 1); });
  EXPECT_NE(msg.find("3 experts"), std::string::npos) << msg;
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace glam
