#pragma once
// Very small model configs for gradient checks (TOML text parsed by the real schema).
#include <string>

#include "model_config.h"

namespace glam::testing {

inline std::string micro_toml(const std::string& moe_section, const std::string& ffn_kind = "gated",
                              const std::string& extra_arch = "", int layers = 2) {
  return R"(id = "micro"
from_paper = false
[architecture]
layers = )" + std::to_string(layers) + R"(
d_model = 8
ffn_hidden = 12
heads = 2
head_dim = 4
vocab_size = 11
seq_len = 6
relative_buckets = 4
relative_max_distance = 8
ffn_kind = ")" + ffn_kind + "\"\n" + extra_arch + "\n" + moe_section + R"(
[training]
z_loss_weight = 0.01
)";
}

inline const char* kMicroMoe = R"([moe]
experts = 4
every = 2
offset = 1
expert_hidden = 6
top_k = 2
capacity_factor = 0.5
capacity_convention = "gshard"
group_tokens = 6
aux_loss_weight = 0.1
)";

// A dense config that keeps an unused MoE setting (experts = 0 says so)
inline const char* kDenseMoeSection = "[moe]\nexperts = 0\ngroup_tokens = 6\n";
// A small MoE model, larger than the micro ones: d_model d, 4 heads, gated FFN of 4d, 4 experts of 2d
// every other block, routing groups of one sequence.
inline ModelConfig small_moe(int64_t d = 64, int64_t vocab = 256, int64_t seq_len = 32) {
  const std::string n = std::to_string(d), s = std::to_string(seq_len);
  return parse_model(R"(id = "small-moe"
from_paper = false
[architecture]
layers = 2
d_model = )" + n + "\nffn_hidden = " + std::to_string(4 * d) + "\nheads = 4\nhead_dim = " + std::to_string(d / 4) +
                         "\nvocab_size = " + std::to_string(vocab) + "\nseq_len = " + s + R"(
relative_buckets = 8
relative_max_distance = 32
ffn_kind = "gated"
[moe]
experts = 4
every = 2
offset = 1
expert_hidden = )" + std::to_string(2 * d) + R"(
top_k = 2
capacity_factor = 2.0
group_tokens = )" + s + R"(
aux_loss_weight = 0.01
[training]
z_loss_weight = 1e-4
)",
                     "small-moe.toml");
}

inline ModelConfig micro_dense() { return parse_model(micro_toml(kDenseMoeSection), "micro.toml"); }
inline ModelConfig micro_moe() { return parse_model(micro_toml(kMicroMoe), "micro-moe.toml"); }

}  // namespace glam::testing
