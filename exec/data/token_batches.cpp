#include "data/token_batches.h"

#include <algorithm>

#include "common/errors.h"

namespace glam::exec {

TokenBatches::TokenBatches(std::vector<int32_t> stream, int64_t seq_len, int64_t global_seqs, const std::string& origin)
    : stream_(std::move(stream)), seq_len_(seq_len), global_seqs_(global_seqs) {
  count_ = stream_.size() > 1 ? (static_cast<int64_t>(stream_.size()) - 1) / seq_len_ : 0;
  if (count_ < global_seqs_)
    throw UsageError(origin + ": text too short for one batch: " + std::to_string(stream_.size()) +
                     " tokens make " + std::to_string(count_) + " sequences of " + std::to_string(seq_len_) +
                     " tokens, a batch needs " + std::to_string(global_seqs_) + " (" +
                     std::to_string(global_seqs_ * seq_len_ + 1) + " tokens)");
}

void TokenBatches::fill(int64_t first, int64_t seqs, int32_t* inputs, int32_t* targets) const {
  for (int64_t j = 0; j < seqs; ++j) {
    const int64_t q = (first + j) % count_;
    const int32_t* src = stream_.data() + q * seq_len_;
    std::copy(src, src + seq_len_, inputs + j * seq_len_);
    std::copy(src + 1, src + 1 + seq_len_, targets + j * seq_len_);
  }
}

}  // namespace glam::exec
