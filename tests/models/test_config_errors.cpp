// Bad model files: each error names the file, the key, the value and what was expected.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "support/config_errors.h"
#include "model_config.h"
#include "support/expect_error.h"

namespace glam {
namespace {

const char* kValid = R"(
id = "tiny"
[architecture]
layers = 4
d_model = 128
ffn_hidden = 512
heads = 4
head_dim = 32
vocab_size = 1000
seq_len = 64
[moe]
experts = 8
group_tokens = 64
)";

using testing::replaced;

std::string error_of(const std::string& text) {
  return testing::config_error_of([](const std::string& t, const std::string& f) { return parse_model(t, f); }, text);
}

TEST(ModelConfigErrors, ValidFileParses) {
  ModelConfig m = parse_model(kValid, "ok.toml");
  EXPECT_EQ(m.layers, 4);
  EXPECT_EQ(m.top_k, 2);           // default
  EXPECT_EQ(m.ffn_kind, "gated");  // default
  EXPECT_EQ(m.moe_layers(), 2);
}

TEST(ModelConfigErrors, MissingKey) {
  std::string msg = error_of(replaced(kValid, "d_model = 128\n", ""));
  EXPECT_NE(msg.find("'architecture.d_model'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(missing): expected an integer"), std::string::npos) << msg;
}

// A required key spelt wrong is named as the unknown key it is, not as the key it fails to set.
TEST(ModelConfigErrors, MisspeltRequiredKeyIsNamedAsUnknown) {
  std::string msg = error_of(replaced(kValid, "d_model = 128", "dmodel = 128"));
  EXPECT_NE(msg.find("'architecture.dmodel' = 128: expected a known key (did you mean architecture.d_model?)"),
            std::string::npos)
      << msg;
}

TEST(ModelConfigErrors, MistypedValue) {
  std::string msg = error_of(replaced(kValid, "layers = 4", "layers = \"four\""));
  EXPECT_NE(msg.find("'architecture.layers' = \"four\": expected an integer"), std::string::npos) << msg;
}

TEST(ModelConfigErrors, MisspeltKeyIsNotIgnored) {
  std::string msg = error_of(replaced(kValid, "heads = 4", "heads = 4\nhead_count = 4"));
  EXPECT_NE(msg.find("'architecture.head_count'"), std::string::npos) << msg;
  // too far from every key to guess one: the keys [architecture] takes instead
  EXPECT_NE(msg.find("expected a known key; [architecture] takes: d_model, "), std::string::npos) << msg;
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
  // a section given a value, not a table: named as the table it has to be
  msg = error_of(replaced(replaced(kValid, "[moe]\nexperts = 8\ngroup_tokens = 64\n", ""), "id = \"tiny\"\n",
                          "id = \"tiny\"\nmoe = 5\n"));
  EXPECT_NE(msg.find("key 'moe' = 5: expected a table [moe] of its keys (aux_loss_weight, "), std::string::npos) << msg;
}

// MoE settings without moe.experts would be ignored (the model is dense): refused, naming the key. An
// explicit experts = 0 keeps them unused (DenseModelsIgnoreTheRoutingGroup).
TEST(ModelConfigErrors, MoeSettingsWithoutExpertsAreRefused) {
  std::string msg = error_of(replaced(kValid, "experts = 8\n", ""));
  EXPECT_NE(msg.find("'moe.group_tokens' = 64: expected no MoE settings without moe.experts"), std::string::npos) << msg;
  EXPECT_FALSE(parse_model(replaced(kValid, "experts = 8", "experts = 0"), "ok.toml").is_moe());
}

TEST(ModelConfigErrors, ZeroAndNegativeSizes) {
  EXPECT_NE(error_of(replaced(kValid, "d_model = 128", "d_model = 0")).find("= 0: expected a positive integer"),
            std::string::npos);
  EXPECT_NE(error_of(replaced(kValid, "experts = 8", "experts = -8")).find("'moe.experts' = -8"), std::string::npos);
  EXPECT_NE(error_of(replaced(kValid, "[moe]", "[moe]\ncapacity_factor = -1.5")).find("'moe.capacity_factor' = -1.5"),
            std::string::npos);
}

// The error is one line however the value is written: a newline, a NUL (which cut the message short)
// or an escape sequence in it are shown escaped.
TEST(ModelConfigErrors, ControlCharactersInAValueAreEscaped) {
  std::string msg = error_of(replaced(kValid, "[moe]", "[moe]\nexpert_kind = \"gated\\nplain\""));
  EXPECT_NE(msg.find("'moe.expert_kind' = \"gated\\nplain\": expected"), std::string::npos) << msg;
  msg = error_of(replaced(kValid, "[moe]", "[moe]\nexpert_kind = \"ga\\u0000ted\\u001b[31m\""));
  EXPECT_NE(msg.find("= \"ga\\x00ted\\x1b[31m\": expected"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

// Sizes past any real model only hang, exhaust memory or overflow the counts; infinity passes every
// comparison-based range check, so it is refused as a value.
TEST(ModelConfigErrors, HugeSizesAndInfinityAreRefused) {
  std::string msg = error_of(replaced(kValid, "layers = 4", "layers = 10000000000"));
  EXPECT_NE(msg.find("'architecture.layers' = 10000000000: expected a positive integer of at most 4096"),
            std::string::npos) << msg;
  msg = error_of(replaced(kValid, "experts = 8", "experts = 3000000000"));
  EXPECT_NE(msg.find("'moe.experts' = 3000000000: expected a non-negative integer of at most 65536"), std::string::npos)
      << msg;
  msg = error_of(replaced(kValid, "[moe]", "[moe]\ncapacity_factor = inf"));
  EXPECT_NE(msg.find("'moe.capacity_factor' = inf: expected a finite number"), std::string::npos) << msg;
  // 1e300 passed as a positive factor and overflowed the slot count: 97% of tokens "dropped".
  msg = error_of(replaced(kValid, "[moe]", "[moe]\ncapacity_factor = 1e300"));
  EXPECT_NE(msg.find("a positive number of at most 1000"), std::string::npos) << msg;
  // Integers past 2^53 are read as integers (they were read as garbage, bypassing the range checks).
  msg = error_of(replaced(kValid, "[moe]", "[moe]\ncapacity_factor = -9007199254740993"));
  EXPECT_NE(msg.find("'moe.capacity_factor' = -9007199254740993"), std::string::npos) << msg;
  // One piece leaves nothing to predict: the cross-entropy is 0 whatever the weights.
  msg = error_of(replaced(kValid, "vocab_size = 1000", "vocab_size = 1"));
  EXPECT_NE(msg.find("'architecture.vocab_size' = 1: expected a value in [2, 16777216]"), std::string::npos) << msg;
  // Loss weights near the float range made the first step's loss infinite and trained on NaN.
  msg = error_of(replaced(kValid, "[moe]", "[moe]\naux_loss_weight = 1e308"));
  EXPECT_NE(msg.find("'moe.aux_loss_weight' = 1e+308: expected a value in [0, 10]"), std::string::npos) << msg;
  msg = error_of(kValid + std::string("[training]\nz_loss_weight = 1e30\n"));
  EXPECT_NE(msg.find("'training.z_loss_weight' = 1e+30: expected a value in [0, 10]"), std::string::npos) << msg;
  msg = error_of(replaced(kValid, "id = \"", "id = \"bad id"));
  EXPECT_NE(msg.find("'id' = \"bad idtiny\": expected a non-empty id of letters, digits"), std::string::npos) << msg;
}

TEST(ModelConfigErrors, HeadLayoutInconsistentWithWidth) {
  std::string msg = error_of(replaced(kValid, "head_dim = 32", "head_dim = 2"));
  EXPECT_NE(msg.find("'architecture.head_dim' = 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4 x 2 = 8"), std::string::npos) << msg;
}

TEST(ModelConfigErrors, ExpertsMustAdmitTopK) {
  std::string msg = error_of(replaced(kValid, "experts = 8", "experts = 1"));
  EXPECT_NE(msg.find("'moe.top_k'"), std::string::npos) << msg;
}

TEST(ModelConfigErrors, GroupMustDivideOrTileTheSequence) {
  std::string msg = error_of(replaced(kValid, "group_tokens = 64", "group_tokens = 48"));
  EXPECT_NE(msg.find("'moe.group_tokens' = 48"), std::string::npos) << msg;
}

TEST(ModelConfigErrors, DenseModelsIgnoreTheRoutingGroup) {
  std::string dense = replaced(replaced(kValid, "experts = 8", "experts = 0"), "group_tokens = 64", "group_tokens = 48");
  EXPECT_NO_THROW(parse_model(dense, "dense.toml"));
}

TEST(ModelConfigErrors, UnknownChoice) {
  std::string msg = error_of(replaced(kValid, "[moe]", "[moe]\ncapacity_convention = \"switch\""));
  EXPECT_NE(msg.find("one of \"glam\", \"gshard\""), std::string::npos) << msg;
}

TEST(ModelConfigErrors, MalformedPaperFigure) {
  std::string msg = error_of(std::string(kValid) + "[paper]\ntotal_params = \"lots\"\n");
  EXPECT_NE(msg.find("'paper.total_params' = \"lots\""), std::string::npos) << msg;
}

TEST(ModelConfigErrors, NotToml) {
  std::string msg = error_of("layers = = 4");
  EXPECT_NE(msg.find("not valid TOML"), std::string::npos) << msg;
}

TEST(ModelConfigErrors, MissingFileAndUnknownId) {
  const std::string missing = testing::error_message_of<ConfigError>([] { load_model("/nonexistent/model.toml"); });
  EXPECT_NE(missing.find("/nonexistent/model.toml: no such file"), std::string::npos) << missing;
  const std::string unknown = testing::error_message_of<UsageError>([] { load_model("glam-9000b"); });
  EXPECT_NE(unknown.find("glam-64b-64e"), std::string::npos) << "should list known ids: " << unknown;
}

TEST(ModelConfigErrors, UserFileByPath) {
  auto path = std::filesystem::temp_directory_path() / "glam-user-model.toml";
  std::ofstream(path) << kValid;
  ModelConfig m = load_model(path.string());
  EXPECT_EQ(m.id, "tiny");
  std::filesystem::remove(path);
}

TEST(ModelConfigErrors, ResolvedConfigDumpHasEveryField) {
  ModelConfig m = parse_model(kValid, "ok.toml");
  auto j = model_to_json(m);
  EXPECT_EQ(j["architecture"]["layers"], 4);
  EXPECT_EQ(j["moe"]["capacity_convention"], "glam");
  EXPECT_TRUE(j["moe"]["expert_hidden"].is_null());
  EXPECT_NE(describe_model_fields().find("moe.capacity_factor  number  default: 2.0"), std::string::npos)
      << describe_model_fields();
}

}  // namespace
}  // namespace glam
