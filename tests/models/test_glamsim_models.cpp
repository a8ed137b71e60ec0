// End-to-end: the `glamsim models` command.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/run_command.h"

namespace glam {
namespace {

using testing::run_command;

TEST(GlamsimModels, JsonListsTheCatalogue) {
  auto r = run_command("glamsim models --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_GE(j["models"].size(), 11u);
  bool found = false;
  for (const auto& m : j["models"]) {
    for (const char* key : {"id", "experts", "total_params", "activated_params", "paper_total_params",
                            "paper_activated_params", "inference_flops_per_token", "train_flops_per_token"})
      EXPECT_TRUE(m.contains(key)) << key;
    if (m["id"] == "glam-64b-64e") {
      found = true;
      EXPECT_NEAR(m["activated_params"].get<double>(), 96.6e9, 0.966e9);
      EXPECT_EQ(m["paper_total_params"].get<double>(), 1.2e12);
    }
  }
  EXPECT_TRUE(found);
}

TEST(GlamsimModels, TableShowsComputedAndPaperValues) {
  auto r = run_command("glamsim models");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("glam-64b-64e"), std::string::npos);
  EXPECT_NE(r.out.find("1.16T"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Flagged rows"), std::string::npos);
  // The test models' few MFLOP per token show as such, with two significant digits, not as 0.0 GFLOP.
  const auto j = nlohmann::json::parse(run_command("glamsim models glam-tiny --format json").out);
  EXPECT_NEAR(j["models"][0]["inference_flops_per_token"].get<double>(), 3.4e6, 0.05e6);
  const std::string tiny = run_command("glamsim models glam-tiny").out;
  EXPECT_NE(tiny.find("  0.0034  "), std::string::npos) << tiny;
  EXPECT_NE(tiny.find("  0.010"), std::string::npos) << tiny;  // the second digit kept
  EXPECT_EQ(tiny.find(" 0.0 "), std::string::npos) << tiny;
}

TEST(GlamsimModels, UnknownIdExitsTwoWithNothingOnStdout) {
  auto r = run_command("glamsim models glam-nope --format json");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("unknown model id 'glam-nope'"), std::string::npos) << r.err;
}

TEST(GlamsimModels, BadFileNamesFileKeyValue) {
  auto path = std::filesystem::temp_directory_path() / "glam-bad-model.toml";
  std::ofstream(path) << "id = \"x\"\n[architecture]\nlayers = -2\n";
  auto r = run_command("glamsim models " + path.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find(path.string() + ": key 'architecture.layers' = -2: expected a positive integer"),
            std::string::npos)
      << r.err;
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace glam
