#pragma once
// Packed batches of fixed sequence length from one token stream: sequence q holds tokens
// [q*T, q*T + T) as inputs and the next tokens as targets. A step that starts at sequence s reads
// sequences (s + j) mod count for j < B, its global batch; rank r takes j in [r*B/R, (r+1)*B/R), so
// the data a step sees does not depend on the number of ranks. The trainer counts the sequences read
// (and a checkpoint keeps the count), so a resumed run reads on where the saved one stopped, whatever
// its batch.
#include <cstdint>
#include <string>
#include <vector>

namespace glam::exec {

class TokenBatches {
 public:
  // UsageError when the stream is too short for one global batch of `global_seqs` sequences.
  TokenBatches(std::vector<int32_t> stream, int64_t seq_len, int64_t global_seqs, const std::string& origin);
  int64_t sequences() const { return count_; }
  int64_t tokens() const { return static_cast<int64_t>(stream_.size()); }
  // Fills `seqs` sequences, from sequence `first` of the run (wrapping round the stream).
  void fill(int64_t first, int64_t seqs, int32_t* inputs, int32_t* targets) const;

 private:
  std::vector<int32_t> stream_;
  int64_t seq_len_, global_seqs_, count_;
};

}  // namespace glam::exec
