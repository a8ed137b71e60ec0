// Routing as an input: uniform, skewed and recorded loads under the capacity rules.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <tuple>

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

// E[min(X, C)] for X ~ Binomial(S, q), summed over the whole distribution from its terms.
double kept_by_pmf(int64_t S, double q, int64_t C) {
  double sum = 0;
  const double n = static_cast<double>(S);
  for (int64_t x = 0; x <= S; ++x) {
    const double k = static_cast<double>(x);
    const double log_p = std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0) + k * std::log(q) +
                         (n - k) * std::log1p(-q);
    sum += static_cast<double>(std::min(x, C)) * std::exp(log_p);
  }
  return sum;
}

TEST(RoutingModel, ExpectedKeptCopiesOfAGroup) {
  for (auto [S, q, C] : {std::tuple{1024, 2.0 / 64, 32}, {1024, 2.0 / 256, 8}, {128, 0.25, 32}, {4096, 0.3, 1000},
                         {1024, 0.001, 4}})
    EXPECT_NEAR(expected_kept_copies(S, q, C), kept_by_pmf(S, q, C), 1e-9 * C) << S << " " << q << " " << C;
  // The same by drawing groups: 200,000 groups of 1,024 tokens, each sending an expert a copy at 2/64.
  std::mt19937_64 rng(7);
  std::binomial_distribution<int64_t> copies(1024, 2.0 / 64);
  double kept = 0;
  const int groups = 200000;
  for (int i = 0; i < groups; ++i) kept += static_cast<double>(std::min<int64_t>(copies(rng), 32));
  EXPECT_NEAR(expected_kept_copies(1024, 2.0 / 64, 32), kept / groups, 0.05);  // 4 standard errors (sd 5.6)
  EXPECT_DOUBLE_EQ(expected_kept_copies(1024, 0, 32), 0);
  EXPECT_DOUBLE_EQ(expected_kept_copies(1024, 1, 32), 32);            // every token sends one: C kept
  EXPECT_DOUBLE_EQ(expected_kept_copies(16, 0.5, 32), 8);             // capacity beyond the group: none dropped
  EXPECT_LT(expected_kept_copies(1024, 16.0 / 1024, 32), 16.0);       // half the capacity: almost all kept
  EXPECT_GT(expected_kept_copies(1024, 16.0 / 1024, 32), 16.0 - 1e-3);
}

TEST(RoutingModel, UniformRoutingDropsWhatAGroupSendsBeyondCapacity) {
  ModelConfig m = load_model("glam-8b-64e");  // cf 2, top-2: C = 32 = 2 * 1024 / 64, the mean
  auto routing = expert_routing(parse_routing_spec("uniform"), m, 16);
  ASSERT_EQ(routing.size(), 16u);
  EXPECT_TRUE(routing[0].kept.empty());
  // Each expert is sent Binomial(1024, 2/64) copies of a group and keeps at most 32 of them.
  const double dropped = 1 - expected_kept_copies(1024, 2.0 / 64, 32) / 32;
  EXPECT_GT(dropped, 0.06);
  EXPECT_LT(dropped, 0.08);
  MoeLayerLoad padded = moe_layer_load(m, shape(8192, 8), routing[0].routed);
  EXPECT_NEAR(padded.dropped_fraction, dropped, 1e-12);
  EXPECT_DOUBLE_EQ(padded.a2a_send_tokens, 2.0 * 8192);  // every slot: C x experts x groups
  m.moe_dispatch = "kept";
  MoeLayerLoad load = moe_layer_load(m, shape(8192, 8), routing[0].routed);
  EXPECT_NEAR(load.a2a_send_tokens, (1 - dropped) * 2 * 8192, 1e-6);
  EXPECT_NEAR(load.expert_tokens, load.a2a_send_tokens, 1e-6);  // receives what it sends
  for (double s : load.dest_share) EXPECT_NEAR(s, 1.0 / 8, 1e-12);
  EXPECT_NEAR(uniform_moe_load(m, shape(8192, 8)).expert_tokens, load.expert_tokens, 1e-9);
}

TEST(RoutingModel, SkewDropsTokensAndLoadsTheHotRank) {
  ModelConfig m = load_model("glam-8b-64e");
  auto shares = expert_routing(parse_routing_spec("skew=1.0"), m, 1)[0].routed;
  EXPECT_NEAR(std::accumulate(shares.begin(), shares.end(), 0.0), 1.0, 1e-12);
  EXPECT_GT(shares[0], shares[63]);
  // Padded dispatch (the default): the costs of every slot, whatever the routing; the drops are the routing's.
  const MoeLayerLoad padded = moe_layer_load(m, shape(8192, 8), shares);
  const double slots = 64.0 * 32 * 8;  // experts x C x groups per rank
  EXPECT_NEAR(padded.a2a_send_tokens, slots, 1e-9);
  EXPECT_NEAR(padded.expert_tokens, slots, 1e-9);
  EXPECT_TRUE(padded.dest_share.empty());
  EXPECT_GT(padded.dropped_fraction, 0.1);
  // Only kept copies travel and are computed:
  m.moe_dispatch = "kept";
  MoeLayerLoad uniform = uniform_moe_load(m, shape(8192, 8));
  MoeLayerLoad skewed = moe_layer_load(m, shape(8192, 8), shares);
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
  auto routing = expert_routing(parse_routing_spec(path.string()), m, 2);
  EXPECT_NEAR(routing[1].routed[0], 300.0 / (300 + 63 * 100), 1e-12);
  EXPECT_TRUE(routing[1].kept.empty());  // kept copies alone: the run's drops are unknown
  EXPECT_THROW(expert_routing(parse_routing_spec(path.string()), m, 16), ConfigError);  // too few blocks
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
  auto write = [&](bool with_dropped, const nlohmann::json& model_config, bool with_dropped_total = false) {
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
    if (with_dropped_total) out << R"(, "dropped_tokens": )" << hot_dropped;
    out << "}]";
    if (!model_config.is_null()) out << R"(, "model_config": )" << model_config.dump();
    out << "}";
  };
  auto routing = [&] { return expert_routing(parse_routing_spec(path.string()), m, 1)[0]; };
  // A run of the same groups and capacity: the copies it kept are those the step keeps.
  write(true, model_to_json(m));
  const ExpertRouting measured = routing();
  EXPECT_NEAR(measured.routed[0], 4 * capacity * groups / copies, 1e-12);
  ASSERT_EQ(measured.kept.size(), 64u);
  EXPECT_NEAR(measured.kept[0], hot_kept / copies, 1e-12);
  EXPECT_NEAR(moe_layer_load(m, s, measured.routed, measured.kept).dropped_fraction, hot_dropped / copies, 1e-12);
  // Of other groups (or a record that does not say): the kept copies are expected from the routed
  // ones, which drops expert 0's excess and what the others' groups send beyond their capacity.
  ModelConfig other_groups = m;
  other_groups.group_tokens = 2048;
  double dropped = 0;
  for (const nlohmann::json& config : {model_to_json(other_groups), nlohmann::json()}) {
    write(true, config);
    const ExpertRouting expected = routing();
    EXPECT_TRUE(expected.kept.empty());
    dropped = moe_layer_load(m, s, expected.routed).dropped_fraction;
    const double others = 63 * (other / groups - expected_kept_copies(1024, 2 * other / copies, 32)) / (copies / groups);
    EXPECT_NEAR(dropped, hot_dropped / copies + others, 1e-9);
    EXPECT_GT(others, 0.01);
  }
  // Records from before expert_dropped: the kept copies are all the router is known to have sent.
  write(false, model_to_json(m));
  const ExpertRouting kept = routing();
  EXPECT_TRUE(kept.kept.empty());
  EXPECT_NEAR(kept.routed[0], hot_kept / (copies - hot_dropped), 1e-12);
  EXPECT_LT(moe_layer_load(m, s, kept.routed).dropped_fraction, dropped - 0.01);  // expert 0 looks no hotter
  // ... unless they count their dropped copies in all (dropped_tokens): the kept shares are then known.
  write(false, model_to_json(m), true);
  const ExpertRouting counted = routing();
  ASSERT_EQ(counted.kept.size(), 64u);
  EXPECT_NEAR(counted.kept[0], hot_kept / copies, 1e-12);
  EXPECT_NEAR(moe_layer_load(m, s, counted.routed, counted.kept).dropped_fraction, hot_dropped / copies, 1e-12);
  std::ofstream(path) << R"({"moe_layers": [{"layer": 1, "expert_load": [1, 2], "expert_dropped": [1, -2]}]})";
  ModelConfig two = m;
  two.experts = 2;
  const std::string msg =
      testing::error_message_of<ConfigError>([&] { expert_routing(parse_routing_spec(path.string()), two, 1); });
  EXPECT_NE(msg.find("key 'moe_layers[0].expert_dropped[1]' = -2: expected a number of copies from 0 to 2^53"),
            std::string::npos) << msg;
  std::filesystem::remove(path);
}

// A record's counts that cannot be (more copies kept, dropped or skipped than were routed, more
// entries than the model has MoE blocks, a block's number other than its own, a count past 2^53) are
// refused with the key, as validate refuses them, rather than simulated as measured routing.
TEST(RoutingModel, ImpossibleRecordedCountsAreRefused) {
  ModelConfig two = load_model("glam-8b-64e");
  two.experts = 2;  // MoE blocks 1, 3, 5, ... of 32
  auto path = std::filesystem::temp_directory_path() / "glam-routing-impossible.json";
  const std::string fine = R"({"layer": 1, "expert_load": [30, 50], "routed_tokens": 100, "dropped_tokens": 20})";
  for (const auto& [entries, expected] : std::vector<std::pair<std::string, std::string>>{
           {R"({"layer": 1, "expert_load": [30, 50], "routed_tokens": 100, "dropped_tokens": 1000000000})",
            "key 'moe_layers[0].dropped_tokens' = 1000000000: expected at most the 100 copies routed (routed_tokens), "
            "less the 80 kept"},
           {R"({"layer": 1, "expert_load": [30, 50], "routed_tokens": 100, "dropped_tokens": -1})",
            "key 'moe_layers[0].dropped_tokens' = -1: expected a number of copies"},
           {R"({"layer": 1, "expert_load": [30, 50], "routed_tokens": 10})",
            "key 'moe_layers[0].expert_load' = 80 copies in all: expected at most the 10 copies routed"},
           {R"({"layer": 1, "expert_load": [30, 50], "routed_tokens": 100, "skipped_second_copies": 1000})",
            "key 'moe_layers[0].skipped_second_copies' = 1000"},
           {R"({"layer": 1, "expert_load": [4611686018427387904, 1]})", "expert_load[0]' = 4611686018427387904"},
           {R"({"layer": 0, "expert_load": [30, 50]})", "key 'moe_layers[0].layer' = 0: expected 1, MoE block number 1"},
           {[&] {
              std::string blocks = fine;  // blocks 1, 3, ..., 31 of the model, then one more
              for (int l = 3; l <= 33; l += 2) blocks += R"(, {"layer": )" + std::to_string(l) + R"(, "expert_load": [1, 1]})";
              return blocks;
            }(),
            "key 'moe_layers[16]' = (an entry): expected at most 16 entries, one per MoE block"}}) {
    std::ofstream(path) << R"({"moe_layers": [)" << entries << "]}";
    const std::string msg =
        testing::error_message_of<ConfigError>([&] { expert_routing(parse_routing_spec(path.string()), two, 1); });
    EXPECT_NE(msg.find(expected), std::string::npos) << entries << "\n" << msg;
  }
  std::ofstream(path) << R"({"moe_layers": [)" << fine << "]}";
  EXPECT_NEAR(expert_routing(parse_routing_spec(path.string()), two, 1)[0].kept[1], 0.5, 1e-12);
  std::filesystem::remove(path);
}

TEST(RoutingModel, BadSpecs) {
  for (const char* bad : {"skew=-1", "skew=abc", "skew=", "skew= 1", "skew=1x", "skew=inf", "skew=nan", "skew=0x10"})
    EXPECT_THROW(parse_routing_spec(bad), UsageError) << bad;
  // A denormal is a non-negative number too (stod refused it as out of range).
  EXPECT_GT(parse_routing_spec("skew=1e-320").skew, 0.0);
  EXPECT_DOUBLE_EQ(parse_routing_spec("skew=1.5").skew, 1.5);
  ModelConfig m = load_model("glam-8b-64e");
  EXPECT_THROW(expert_routing(parse_routing_spec("/nonexistent/routing.json"), m, 1), ConfigError);
  ModelConfig small = load_model("glam-1.7b-32e");
  auto path = std::filesystem::temp_directory_path() / "glam-routing-64.json";
  std::ofstream(path) << R"({"moe_layers": [{"layer": 1, "expert_load": [1, 2, 3]}]})";
  const std::string msg =
      testing::error_message_of<ConfigError>([&] { expert_routing(parse_routing_spec(path.string()), small, 1); });
  EXPECT_NE(msg.find("3 experts"), std::string::npos) << msg;
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace glam
