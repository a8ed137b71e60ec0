#pragma once
// Where every weight tensor of the model lives in one rank's parameter buffer. Replicated tensors
// (everything but the experts) come first and contiguous, so the data-parallel gradient reduction
// is one call; the rank's experts follow. Names are global and rank-independent:
// "embedding", "L3.attn.q", "L1.moe.wi" (experts stacked; expert e of the stack is global expert
// first_expert + e), so checkpoints and initial values do not depend on the number of ranks.
// With tensor parallelism (Megatron-LM's) a rank holds one slice of the sliced matrices: attention
// Q/K/V and the relative position bias by heads (columns), its output projection by rows, the FFNs'
// and experts' hidden units (input columns, output rows) and the embeddings by vocabulary rows; the
// norms' scales and the router stay whole on every slice.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "model_config.h"
#include "shard_reduce.h"

namespace glam::exec {

enum class InitKind { kNormal, kOnes, kZeros };

using kernels::SliceAxis;

struct ParamInfo {
  std::string name;
  int64_t rows = 1, cols = 1;  // one matrix as this rank holds it (vectors: rows = 1)
  SliceAxis slice_axis = SliceAxis::kWhole;
  int64_t slices = 1, slice = 0;  // this rank holds slice `slice` of `slices` along slice_axis
  int64_t count = 1;           // matrices stacked (local experts), 1 otherwise
  int64_t first_expert = -1;   // global index of the first stacked expert, -1 for replicated tensors
  int64_t offset = 0;          // into the rank's parameter buffer
  InitKind init = InitKind::kNormal;
  double init_std = 0;
  bool expert() const { return first_expert >= 0; }
  int64_t matrix_elements() const { return rows * cols; }
  int64_t elements() const { return rows * cols * count; }
  bool sliced() const { return slice_axis != SliceAxis::kWhole && slices > 1; }
  int64_t full_rows() const { return slice_axis == SliceAxis::kRows ? rows * slices : rows; }
  int64_t full_cols() const { return slice_axis == SliceAxis::kCols ? cols * slices : cols; }
};

struct LayerParams {
  bool moe = false;
  int attn_norm = -1, q = -1, k = -1, v = -1, o = -1, rel_bias = -1, ffn_norm = -1;
  int wi0 = -1, wi1 = -1, wo = -1;    // dense FFN (wi1 only when gated)
  int router = -1, ewi0 = -1, ewi1 = -1, ewo = -1;  // MoE: router, stacked local experts
};

struct ModelLayout {
  int embedding = -1, unembedding = -1 /* -1 when tied */, final_norm = -1;
  std::vector<LayerParams> layers;
  std::vector<ParamInfo> params;
  int64_t replicated_elements = 0;  // params[...].offset < replicated_elements: replicated
  int64_t total_elements = 0;
  int64_t local_experts = 0, first_expert = 0;
};

// What a pipeline stage holds: its blocks (empty: every block), the embedding when it runs the first
// block's input end, and the final norm and output embedding when it runs the last block's output end
// (with tied embeddings both ends hold the embedding).
struct StageHolding {
  std::vector<bool> blocks;
  bool input_end = true, output_end = true;
  bool holds(int64_t block) const { return blocks.empty() || blocks[static_cast<size_t>(block)]; }
};

// Which tensor-parallel slice a rank holds: `slice` of `slices`.
struct TensorSlice {
  int slices = 1, slice = 0;
};

// The layout of rank `rank` of `ranks` (experts split evenly; the caller checks divisibility) of the
// stage `holding` describes, holding tensor slice `tensor`: the tensors it does not hold have no entry
// (their index is -1).
ModelLayout make_layout(const ModelConfig& m, int ranks, int rank, const StageHolding& holding = {},
                        TensorSlice tensor = {});

// The rank's slice of one of p's matrices, cut from (or put back into) the whole matrix, row-major
// full_rows() x full_cols(): consecutive rows or a block of columns of every row.
template <class V, class F>
void for_each_slice_row(const ParamInfo& p, F f) {  // f(row in the slice, its offset in the whole)
  const int64_t r0 = p.slice_axis == SliceAxis::kRows ? p.slice * p.rows : 0;
  const int64_t c0 = p.slice_axis == SliceAxis::kCols ? p.slice * p.cols : 0;
  for (int64_t r = 0; r < p.rows; ++r) f(r, (r0 + r) * p.full_cols() + c0);
}
template <class V>
void take_slice(const ParamInfo& p, const V* whole, V* slice) {
  for_each_slice_row<V>(p, [&](int64_t r, int64_t at) { std::copy_n(whole + at, p.cols, slice + r * p.cols); });
}
template <class V>
void put_slice(const ParamInfo& p, const V* slice, V* whole) {
  for_each_slice_row<V>(p, [&](int64_t r, int64_t at) { std::copy_n(slice + r * p.cols, p.cols, whole + at); });
}

// Deterministic initial values of one matrix as the rank holds it (global expert index or -1), from
// (seed, name, expert): the whole matrix's values are drawn and the rank's slice kept, so that they do
// not depend on the slicing.
void init_matrix(const ParamInfo& p, int64_t global_expert, uint64_t seed, double* out);

// The values are drawn in blocks of kInitBlockElements, each block from its own generator, so that
// one large matrix (a 256K-row embedding: 200M draws, seconds on one core) fills on many threads
// with the same values. A matrix of one block keeps the values of a single generator.
inline constexpr int64_t kInitBlockElements = int64_t{1} << 20;
// How many blocks init_matrix_block fills of p as the rank holds it: 1 for a sliced matrix (its
// slice needs the whole matrix drawn) and for non-random ones.
int64_t init_blocks(const ParamInfo& p);
// Elements in block `block`: kInitBlockElements but for the last, the whole matrix when it is one block.
int64_t init_block_elements(const ParamInfo& p, int64_t block);
// Block `block` of init_matrix's values: init_block_elements of them, from element
// block * kInitBlockElements (the whole slice when init_blocks(p) is 1).
void init_matrix_block(const ParamInfo& p, int64_t global_expert, uint64_t seed, int64_t block, double* out);

}  // namespace glam::exec
