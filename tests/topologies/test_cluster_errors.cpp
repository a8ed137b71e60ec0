// Bad cluster files: each error names the file, the key, the value and what was expected.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cluster.h"
#include "common/errors.h"
#include "support/config_errors.h"
#include "support/expect_error.h"

namespace glam {
namespace {

const char* kTorus = R"(
id = "my-torus"
[chip]
kind = "tpu-v4"
[topology]
kind = "torus"
dims = [4, 4, 4]
[links.ici]
bandwidth_Bps = 45e9
)";

const char* kFatTree = R"(
id = "my-tree"
[chip]
kind = "h100"
[topology]
kind = "fat-tree"
chips = 512
chips_per_node = 8
[fat_tree]
down_ports = [32, 16]
[links.nvlink]
bandwidth_Bps = 450e9
[links.infiniband]
bandwidth_Bps = 50e9
)";

using testing::replaced;

std::string error_of(const std::string& text) {
  return testing::config_error_of([](const std::string& t, const std::string& f) { return parse_cluster(t, f); }, text);
}

void expect_has(const std::string& msg, std::initializer_list<const char*> parts) {
  for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

TEST(ClusterErrors, ValidFilesParse) {
  EXPECT_EQ(parse_cluster(kTorus, "ok.toml").num_chips(), 64);
  Cluster t = parse_cluster(kFatTree, "ok.toml");
  EXPECT_EQ(t.num_chips(), 512);
  EXPECT_EQ(t.resolved_config()["fat_tree"]["up_ports"], nlohmann::json::array({32}));  // resolved default
  EXPECT_EQ(t.resolved_config()["chip"]["busy_W"], 700.0);                             // from the chip kind
  // The runtime's reserve: the GPU chip kind's 2 GiB, a cluster's override, none on a TPU.
  EXPECT_EQ(t.chip().runtime_reserved_bytes, 2147483648.0);
  EXPECT_EQ(t.resolved_config()["chip"]["runtime_reserved_bytes"], 2147483648.0);
  EXPECT_EQ(parse_cluster(replaced(kFatTree, "kind = \"h100\"", "kind = \"h100\"\nruntime_reserved_bytes = 5e8"),
                          "ok.toml").chip().runtime_reserved_bytes, 5e8);
  EXPECT_EQ(parse_cluster(kTorus, "ok.toml").chip().runtime_reserved_bytes, 0.0);
}

// A float is quoted as it reads (0.9, not 0.90000000000000002), and stays a float (2.0, not 2).
TEST(ClusterErrors, NumbersAreQuotedAsWritten) {
  expect_has(error_of(replaced(kTorus, "[chip]", "[facility]\npue = 0.9\n[chip]")),
             {"'facility.pue' = 0.9: expected a value in [1, 10]"});
  expect_has(error_of(replaced(kTorus, "[4, 4, 4]", "[4, 4, 2.0]")), {"'topology.dims' = 2.0: expected an integer"});
}

// A reserve that leaves no HBM is refused, naming the key that made it so.
TEST(ClusterErrors, RuntimeReserveLeavesSomeHbm) {
  expect_has(error_of(replaced(kFatTree, "kind = \"h100\"", "kind = \"h100\"\nruntime_reserved_bytes = 9e10")),
             {"user/bad.toml", "'chip.runtime_reserved_bytes' = 90000000000", "less than the chip's HBM (85520809984"});
  expect_has(error_of(replaced(kFatTree, "kind = \"h100\"", "kind = \"h100\"\nhbm_bytes = 2e9")),
             {"'chip.hbm_bytes' = 2000000000", "more than the chip's runtime_reserved_bytes (2147483648"});
  expect_has(error_of(replaced(kFatTree, "kind = \"h100\"", "kind = \"h100\"\nruntime_reserved_bytes = -1")),
             {"'chip.runtime_reserved_bytes' = -1", "a value in [0, 1e+15]"});
}

TEST(ClusterErrors, NonPositiveDimensions) {
  expect_has(error_of(replaced(kTorus, "[4, 4, 4]", "[4, 0, 4]")),
             {"user/bad.toml", "'topology.dims'", "[4, 0, 4]", "positive integers"});
  expect_has(error_of(replaced(kTorus, "[4, 4, 4]", "[-2]")), {"'topology.dims'", "[-2]", "positive"});
  expect_has(error_of(replaced(kTorus, "[4, 4, 4]", "[]")), {"'topology.dims'", "non-empty"});
  expect_has(error_of(replaced(kTorus, "[4, 4, 4]", "[4096, 4096]")), {"'topology.dims'", "at most"});
  // 16 x 2^62 wraps to 0 (a segmentation fault), 16 x (2^62 + 4) to 64: checked before multiplying.
  expect_has(error_of(replaced(kTorus, "[4, 4, 4]", "[4, 4, 4611686018427387904]")), {"'topology.dims'", "at most"});
  expect_has(error_of(replaced(kTorus, "[4, 4, 4]", "[4, 4, 4611686018427387908]")), {"'topology.dims'", "at most"});
}

TEST(ClusterErrors, UnknownChipKind) {
  expect_has(error_of(replaced(kTorus, "\"tpu-v4\"", "\"tpu-v9\"")),
             {"'chip.kind'", "\"tpu-v9\"", "known chip kind", "tpu-v4", "h100"});
}

TEST(ClusterErrors, ZeroOrNegativeBandwidth) {
  expect_has(error_of(replaced(kTorus, "45e9", "0")), {"'links.ici.bandwidth_Bps'", "= 0", "a value in [1000, 1e+15]"});
  expect_has(error_of(replaced(kFatTree, "bandwidth_Bps = 50e9", "bandwidth_Bps = -5e9")),
             {"'links.infiniband.bandwidth_Bps'", "-5", "a value in [1000, 1e+15]"});
  // Values that pass a sign check but no physical one: they ended in internal errors (a zero-sized
  // step), infinite energies or wrapped integers.
  expect_has(error_of(replaced(kTorus, "45e9", "1e-300")), {"'links.ici.bandwidth_Bps' = 1e-300"});
  expect_has(error_of(replaced(kTorus, "45e9", "9007199254740993")), {"'links.ici.bandwidth_Bps' = 9007199254740993"});
  expect_has(error_of(replaced(kTorus, "[chip]", "[chip]\nhbm_bytes = -9007199254740993")),
             {"'chip.hbm_bytes' = -9007199254740993", "a value in [1e+06, 1e+15]"});
  expect_has(error_of(replaced(kTorus, "bandwidth_Bps = 45e9\n", "latency_s = 1e-6\n")),
             {"'links.ici.bandwidth_Bps'", "(missing)", "ici bandwidth"});
}

TEST(ClusterErrors, FatTreeArityMustGiveTheChipCount) {
  expect_has(error_of(replaced(kFatTree, "[32, 16]", "[32, 8]")),
             {"'fat_tree.down_ports'", "[32, 8]", "product is topology.chips = 512", "give 256"});
  // Rail-optimised: a leaf takes one GPU from each of m1 whole nodes.
  expect_has(error_of(replaced(kFatTree, "[32, 16]", "[128, 4]")), {"'fat_tree.down_ports'", "64 nodes"});
  expect_has(error_of(replaced(kFatTree, "[32, 16]", "[2, 256]")), {"'fat_tree.down_ports'", "64 ports", "need 256"});
  expect_has(error_of(replaced(kFatTree, "down_ports = [32, 16]", "down_ports = [32, 16]\nup_ports = [4, 4]")),
             {"'fat_tree.up_ports'", "[4, 4]", "1 entries"});
  // Leaves of 32 down ports with 40 up ports exceed 64-port switches: the up ports are the key to name.
  expect_has(error_of(replaced(kFatTree, "down_ports = [32, 16]", "down_ports = [32, 16]\nup_ports = [40]")),
             {"'fat_tree.up_ports' = [40]", "need 72 (down 32 + up 40)"});
  expect_has(error_of(replaced(kFatTree, "chips_per_node = 8", "chips_per_node = 7")),
             {"'topology.chips_per_node'", "7", "divisor of topology.chips = 512"});
}

TEST(ClusterErrors, KeysAKindHasNoUseFor) {
  expect_has(error_of(replaced(kTorus, "[links.ici]", "[links.nvlink]\nbandwidth_Bps = 1e9\n[links.ici]")),
             {"'links.nvlink.bandwidth_Bps'", "torus has no use"});
  expect_has(error_of(replaced(kFatTree, "chips = 512", "chips = 512\ndims = [8, 8, 8]")),
             {"'topology.dims'", "fat-tree has no use"});
  // NVLS needs NVSwitches: nothing for a torus, nor for nodes of one GPU.
  expect_has(error_of(std::string(kTorus) + "[switches.nvswitch]\nnvls = true\n"),
             {"'switches.nvswitch.nvls'", "torus has no use"});
  expect_has(error_of(replaced(kFatTree, "chips_per_node = 8", "chips_per_node = 1") +
                      "[switches.nvswitch]\nnvls = true\n"),
             {"'switches.nvswitch.nvls'", "chips_per_node = 1"});
  EXPECT_TRUE(parse_cluster(std::string(kFatTree) + "[switches.nvswitch]\nnvls = true\n", "ok.toml").nvswitch_reduces());
  EXPECT_FALSE(parse_cluster(kFatTree, "ok.toml").nvswitch_reduces());
  EXPECT_TRUE(load_cluster("dgx-h200-8").nvswitch_reduces());
  EXPECT_FALSE(load_cluster("dgx-a100-8").nvswitch_reduces());
}

TEST(ClusterErrors, MistypedOrUnknownKeysAndKinds) {
  expect_has(error_of(replaced(kTorus, "kind = \"torus\"", "kind = \"dragonfly\"")),
             {"'topology.kind'", "\"dragonfly\"", "torus", "fat-tree"});
  expect_has(error_of(replaced(kTorus, "bandwidth_Bps", "bandwith_Bps")), {"'links.ici.bandwith_Bps'", "did you mean links.ici.bandwidth_Bps?"});
  expect_has(error_of(replaced(kTorus, "45e9", "\"fast\"")), {"'links.ici.bandwidth_Bps'", "\"fast\"", "a number"});
  expect_has(error_of(replaced(kTorus, "[chip]\nkind = \"tpu-v4\"", "[chip]\nkind = \"tpu-v4\"\nbusy_W = 10")),
             {"'chip.busy_W'", "at least chip.idle_W"});
}

TEST(ClusterErrors, NotToml) {
  expect_has(error_of("id = \"x\"\n[chip\nkind = 3\n"), {"user/bad.toml", "not valid TOML", "line"});
  namespace fs = std::filesystem;
  fs::path p = fs::temp_directory_path() / "glam-not-toml.toml";
  std::ofstream(p) << "this is not { toml\n";
  expect_has(testing::error_message_of<ConfigError>([&] { load_cluster(p.string()); }),
             {"glam-not-toml.toml", "not valid TOML"});
  fs::remove(p);
  EXPECT_THROW(load_cluster("/no/such/cluster.toml"), ConfigError);
  EXPECT_THROW(load_cluster("no-such-cluster-id"), UsageError);
}

}  // namespace
}  // namespace glam
