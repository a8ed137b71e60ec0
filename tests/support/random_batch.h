#pragma once
// A batch of uniform random input and target tokens, the same for a seed on every machine.
#include <cstdint>
#include <random>
#include <vector>

namespace glam::testing {

struct TokenBatch {
  std::vector<int32_t> inputs, targets;
};

inline TokenBatch random_batch(int64_t tokens, int64_t vocab, uint64_t seed) {
  std::mt19937_64 gen(seed);
  TokenBatch b;
  for (int64_t i = 0; i < tokens; ++i) {
    b.inputs.push_back(static_cast<int32_t>(gen() % static_cast<uint64_t>(vocab)));
    b.targets.push_back(static_cast<int32_t>(gen() % static_cast<uint64_t>(vocab)));
  }
  return b;
}

}  // namespace glam::testing
