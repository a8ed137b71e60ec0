#pragma once
// Capacity rules of top-k MoE routing, shared by the executor's router kernels and the
// simulator's load model so that both drop exactly the same tokens.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace glam {

enum class CapacityConvention {
  kGlam,    // C = capacity_factor * S / E, rounded up to a multiple of 4 (Google's GLaM code)
  kGshard,  // C = capacity_factor * top_k * S / E, rounded up (GShard paper: 2S/E for top-2)
};

// Slots per expert for a routing group of `group_tokens` tokens.
inline int64_t expert_capacity(CapacityConvention convention, double capacity_factor, int64_t top_k,
                               int64_t group_tokens, int64_t experts) {
  double raw = convention == CapacityConvention::kGlam
                   ? capacity_factor * static_cast<double>(group_tokens) / static_cast<double>(experts)
                   : capacity_factor * static_cast<double>(top_k * group_tokens) / static_cast<double>(experts);
  auto c = static_cast<int64_t>(std::ceil(raw - 1e-9));
  if (convention == CapacityConvention::kGlam) c = (c + 3) / 4 * 4;
  return std::max<int64_t>(c, 1);
}

inline bool parse_capacity_convention(std::string_view s, CapacityConvention& out) {
  if (s == "glam") out = CapacityConvention::kGlam;
  else if (s == "gshard") out = CapacityConvention::kGshard;
  else return false;
  return true;
}

}  // namespace glam
