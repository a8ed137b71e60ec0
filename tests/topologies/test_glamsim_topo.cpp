// End-to-end: glamsim topo prints the metrics, as a table or JSON, and refuses bad files with
// exit code 2 and one line on stderr.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/run_command.h"

namespace glam {
namespace {

using testing::run_command;

TEST(GlamsimTopo, JsonForOneCluster) {
  auto r = run_command("glamsim topo tpu-v4-1024 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One cluster is a list of one, as several are (scripts read one shape).
  const auto all = nlohmann::json::parse(r.out);
  ASSERT_EQ(all["clusters"].size(), 1u);
  const auto& j = all["clusters"][0];
  EXPECT_EQ(j["id"], "tpu-v4-1024");
  EXPECT_EQ(j["chips"], 1024);
  EXPECT_EQ(j["links"], 6 * 1024);
  EXPECT_EQ(j["diameter_hops"], 4 + 4 + 8);
  EXPECT_DOUBLE_EQ(j["bisection_bandwidth_Bps"].get<double>(), 2 * 64 * 45e9);  // 64 rings of 16, cut twice
  EXPECT_DOUBLE_EQ(j["injection_bandwidth_Bps"].get<double>(), 6 * 45e9);
  EXPECT_DOUBLE_EQ(j["peak_flops"].get<double>(), 1024 * 275e12);
  EXPECT_DOUBLE_EQ(j["hbm_bytes"].get<double>(), 1024 * 32.0 * (1 << 30));
  EXPECT_EQ(j["torus_dims"], nlohmann::json::array({8, 8, 16}));
}

TEST(GlamsimTopo, TableOfTheWholeCatalogue) {
  auto r = run_command("glamsim topo");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* id : {"tpu-v3-1024", "tpu-v4-4096", "dgx-a100-1024", "dgx-h200-8", "h200-1"})
    EXPECT_NE(r.out.find(id), std::string::npos) << id;
  EXPECT_NE(r.out.find("torus 16x16x16"), std::string::npos) << r.out;
}

// Patterns over the catalogue, as plan --compare takes them: the matches in size order, each once.
TEST(GlamsimTopo, PatternsNameTheCatalogueEntriesTheyMatch) {
  auto r = run_command("glamsim topo 'dgx-h100-*' dgx-h100-8 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> ids;
  const auto all = nlohmann::json::parse(r.out);  // held: a range-for over a temporary's member reads freed memory
  for (const auto& c : all["clusters"]) ids.push_back(c["id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"dgx-h100-8", "dgx-h100-64", "dgx-h100-512", "dgx-h100-1024"}));
  r = run_command("glamsim topo 'tpu-v9-*'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("topo 'tpu-v9-*': matches nothing in the catalogue (dgx-a100-1024"), std::string::npos) << r.err;
  r = run_command("glamsim models 'glam-8b*' --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("glam-8b-64e"), std::string::npos);
  EXPECT_EQ(r.out.find("glam-1.7b"), std::string::npos);
}

TEST(GlamsimTopo, AUsersFileWorksWhereAnIdDoes) {
  namespace fs = std::filesystem;
  fs::path p = fs::temp_directory_path() / "glam-user-torus.toml";
  std::ofstream(p) << "id = \"mine\"\n[chip]\nkind = \"tpu-v4\"\n[topology]\nkind = \"torus\"\ndims = [2, 3]\n"
                      "[links.ici]\nbandwidth_Bps = 1e9\n";
  auto r = run_command("glamsim topo " + p.string() + " --format json");
  fs::remove(p);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out)["clusters"][0];
  EXPECT_EQ(j["id"], "mine");
  EXPECT_EQ(j["chips"], 6);
  EXPECT_EQ(j["diameter_hops"], 2);
}

TEST(GlamsimTopo, BadFilesExitTwoWithOneLine) {
  namespace fs = std::filesystem;
  struct Case {
    const char* text;
    const char* wanted;
  };
  for (Case c : {Case{"not toml [", "not valid TOML"},
                 Case{"id = \"x\"\n[chip]\nkind = \"tpu-v4\"\n[topology]\nkind = \"torus\"\ndims = [0, 4]\n"
                      "[links.ici]\nbandwidth_Bps = 1e9\n",
                      "'topology.dims' = [0, 4]: expected a list of positive integers"}}) {
    fs::path p = fs::temp_directory_path() / "glam-bad-cluster.toml";
    std::ofstream(p) << c.text;
    auto r = run_command("glamsim topo " + p.string());
    fs::remove(p);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_NE(r.err.find(p.string()), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.wanted), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  auto unknown = run_command("glamsim topo tpu-v9-9");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("tpu-v4-1024"), std::string::npos) << unknown.err;  // lists the known ids
}

TEST(GlamsimTopo, FieldsListing) {
  auto r = run_command("glamsim topo --fields");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("fat_tree.down_ports"), std::string::npos);
  EXPECT_NE(r.out.find("links.ici.bandwidth_Bps"), std::string::npos);
  EXPECT_NE(r.out.find("host_W_per_chip"), std::string::npos);
}

}  // namespace
}  // namespace glam
