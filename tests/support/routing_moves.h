#pragma once
// Routing that differs between two runs of one step. A token whose experts score within a rounding of
// each other can go either way when sums run in another order (another CPU's BLAS blocking, threads,
// row counts, cuBLAS, bf16 against float32), and one copy sent elsewhere moves its layer's router
// gradient by several percent: tests that compare such runs count the moves and hold the moved layers'
// own gradients loosely.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "model/transformer.h"

namespace glam::testing {

// Copies one MoE layer's routing sent elsewhere than another run's: a copy that moves changes two
// counts (two experts' loads, or a load and the drops).
inline int64_t routing_moves(const exec::MoeLayerStats& a, const exec::MoeLayerStats& b) {
  int64_t moved = std::abs(a.dropped() - b.dropped());
  for (size_t e = 0; e < a.expert_load.size() && e < b.expert_load.size(); ++e)
    moved += std::abs(a.expert_load[e] - b.expert_load[e]);
  return moved / 2 + moved % 2;
}

// The MoE layers whose routing differs between two runs of one step. Expects at most `most_share` of
// a layer's copies moved (at least 1 allowed); prints each layer's count.
inline std::vector<int64_t> layers_routed_differently(const std::vector<exec::MoeLayerStats>& got,
                                                      const std::vector<exec::MoeLayerStats>& want, double most_share,
                                                      const std::string& what) {
  std::vector<int64_t> layers;
  EXPECT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    const int64_t moves = routing_moves(got[i], want[i]);
    std::cout << what << " MoE layer " << want[i].layer << ": " << moves << " of " << want[i].routed
              << " copies routed differently\n";
    EXPECT_LE(moves, std::max<int64_t>(1, static_cast<int64_t>(most_share * static_cast<double>(want[i].routed))))
        << what << " MoE layer " << want[i].layer;
    if (moves > 0) layers.push_back(want[i].layer);
  }
  return layers;
}

// Whether a parameter's gradient depends directly on the routing of one of `layers` (its router, its
// experts, and the norm in front of them: "L3.moe.router", "L3.ffn_norm.scale").
inline bool routed_by(const std::string& name, const std::vector<int64_t>& layers) {
  const size_t dot = name.find('.');
  if (name.size() < 2 || name[0] != 'L' || dot == std::string::npos) return false;
  const std::string rest = name.substr(dot + 1);
  if (rest.rfind("moe.", 0) != 0 && rest.rfind("ffn_norm.", 0) != 0) return false;
  return std::count(layers.begin(), layers.end(), std::stoll(name.substr(1, dot - 1))) > 0;
}

}  // namespace glam::testing
