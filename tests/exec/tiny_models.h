#pragma once
// Very small model configs for gradient checks (TOML text parsed by the real schema).
#include <string>

#include "model_config.h"

namespace glam::testing {

inline std::string micro_toml(const std::string& moe_section, const std::string& ffn_kind = "gated",
                              const std::string& extra_arch = "") {
  return R"(id = "micro"
from_paper = false
[architecture]
layers = 2
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

// (dense configs still carry moe.group_tokens, which must divide seq_len)
inline const char* kDenseMoeSection = "[moe]\ngroup_tokens = 6\n";
inline ModelConfig micro_dense() { return parse_model(micro_toml(kDenseMoeSection), "micro.toml"); }
inline ModelConfig micro_moe() { return parse_model(micro_toml(kMicroMoe), "micro-moe.toml"); }

}  // namespace glam::testing
