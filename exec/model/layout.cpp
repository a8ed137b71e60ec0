#include "model/layout.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace glam::exec {
namespace {

int add(ModelLayout& l, ParamInfo p) {
  l.params.push_back(std::move(p));
  return static_cast<int>(l.params.size() - 1);
}

ParamInfo mat(std::string name, int64_t rows, int64_t cols, double std) {
  ParamInfo p;
  p.name = std::move(name);
  p.rows = rows;
  p.cols = cols;
  p.init_std = std;
  return p;
}
ParamInfo ones(std::string name, int64_t n) {
  ParamInfo p = mat(std::move(name), 1, n, 0);
  p.init = InitKind::kOnes;
  return p;
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The rank's slice of a matrix of the given whole shape, split along `axis` (the initial values' scale
// is the whole matrix's).
ParamInfo sliced(ParamInfo p, SliceAxis axis, TensorSlice t) {
  if (t.slices <= 1) return p;
  p.slice_axis = axis;
  p.slices = t.slices;
  p.slice = t.slice;
  (axis == SliceAxis::kRows ? p.rows : p.cols) /= t.slices;
  return p;
}

}  // namespace

ModelLayout make_layout(const ModelConfig& m, int ranks, int rank, const StageHolding& holding, TensorSlice tensor) {
  ModelLayout l;
  const int64_t d = m.d_model, hd = m.attention_width(), h = m.ffn_hidden, he = m.expert_hidden_size();
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  auto rows = [&](ParamInfo p) { return sliced(std::move(p), SliceAxis::kRows, tensor); };
  auto cols = [&](ParamInfo p) { return sliced(std::move(p), SliceAxis::kCols, tensor); };
  if (holding.input_end || (holding.output_end && m.tied_embeddings))
    l.embedding = add(l, rows(mat("embedding", m.vocab_size, d, 1.0)));
  if (holding.output_end && !m.tied_embeddings)
    l.unembedding = add(l, rows(mat("unembedding", m.vocab_size, d, inv_sqrt_d)));
  for (int64_t i = 0; i < m.layers; ++i) {
    std::string p = "L" + std::to_string(i) + ".";
    LayerParams lp;
    lp.moe = m.is_moe_layer(i);
    if (!holding.holds(i)) {
      l.layers.push_back(lp);
      continue;
    }
    lp.attn_norm = add(l, ones(p + "attn_norm.scale", d));
    lp.q = add(l, cols(mat(p + "attn.q", d, hd, inv_sqrt_d)));
    lp.k = add(l, cols(mat(p + "attn.k", d, hd, inv_sqrt_d)));
    lp.v = add(l, cols(mat(p + "attn.v", d, hd, inv_sqrt_d)));
    lp.o = add(l, rows(mat(p + "attn.o", hd, d, 1.0 / std::sqrt(static_cast<double>(hd)))));
    if (m.position_encoding == "relative_bias")
      lp.rel_bias = add(l, cols(mat(p + "attn.rel_bias", m.relative_buckets, m.heads, 0.1)));
    lp.ffn_norm = add(l, ones(p + "ffn_norm.scale", d));
    if (lp.moe) {
      lp.router = add(l, mat(p + "moe.router", d, m.experts, inv_sqrt_d));
    } else {
      lp.wi0 = add(l, cols(mat(p + "ffn.wi0", d, h, inv_sqrt_d)));
      if (m.ffn_kind == "gated") lp.wi1 = add(l, cols(mat(p + "ffn.wi1", d, h, inv_sqrt_d)));
      lp.wo = add(l, rows(mat(p + "ffn.wo", h, d, 1.0 / std::sqrt(static_cast<double>(h)))));
    }
    l.layers.push_back(lp);
  }
  if (holding.output_end) l.final_norm = add(l, ones("final_norm.scale", d));
  // experts last: the rank's share of every MoE layer
  if (m.is_moe()) {
    l.local_experts = m.experts / ranks;
    l.first_expert = l.local_experts * rank;
    for (int64_t i = 0; i < m.layers; ++i) {
      LayerParams& lp = l.layers[static_cast<size_t>(i)];
      if (!lp.moe || !holding.holds(i)) continue;
      std::string p = "L" + std::to_string(i) + ".moe.";
      auto expert = [&](std::string name, int64_t r, int64_t c, SliceAxis axis) {
        ParamInfo e = sliced(mat(p + name, r, c, 1.0 / std::sqrt(static_cast<double>(r))), axis, tensor);
        e.count = l.local_experts;
        e.first_expert = l.first_expert;
        return add(l, e);
      };
      lp.ewi0 = expert("wi0", d, he, SliceAxis::kCols);
      if (m.expert_kind == "gated") lp.ewi1 = expert("wi1", d, he, SliceAxis::kCols);
      lp.ewo = expert("wo", he, d, SliceAxis::kRows);
    }
  }
  int64_t off = 0;
  for (auto& p : l.params) {
    if (p.expert() && l.replicated_elements == 0) l.replicated_elements = off;
    p.offset = off;
    off += p.elements();
  }
  if (l.replicated_elements == 0) l.replicated_elements = off;
  l.total_elements = off;
  return l;
}

int64_t init_blocks(const ParamInfo& p) {
  if (p.init != InitKind::kNormal || p.sliced()) return 1;
  return std::max<int64_t>(1, (p.matrix_elements() + kInitBlockElements - 1) / kInitBlockElements);
}

int64_t init_block_elements(const ParamInfo& p, int64_t block) {
  if (init_blocks(p) == 1) return p.matrix_elements();
  return std::min(kInitBlockElements, p.matrix_elements() - block * kInitBlockElements);
}

void init_matrix_block(const ParamInfo& p, int64_t global_expert, uint64_t seed, int64_t block, double* out) {
  if (p.init != InitKind::kNormal) {
    for (int64_t i = 0; i < p.matrix_elements(); ++i) out[i] = p.init == InitKind::kOnes ? 1.0 : 0.0;
    return;
  }
  if (p.sliced()) {  // draw the whole matrix, keep the slice (one task: init_blocks is 1 for a slice)
    ParamInfo whole = p;
    whole.rows = p.full_rows(), whole.cols = p.full_cols(), whole.slice_axis = SliceAxis::kWhole, whole.slices = 1;
    std::vector<double> all(static_cast<size_t>(whole.matrix_elements()));
    init_matrix(whole, global_expert, seed, all.data());
    take_slice(p, all.data(), out);
    return;
  }
  const int64_t n = init_block_elements(p, block);
  uint64_t s = fnv1a(p.name, seed * 0x9E3779B97F4A7C15ull + 1) ^ (static_cast<uint64_t>(global_expert + 1) * 0xD6E8FEB86659FD93ull);
  if (block > 0) s ^= static_cast<uint64_t>(block) * 0xBF58476D1CE4E5B9ull;  // block 0: the one-generator values
  std::mt19937_64 gen(s);
  const double two_pi = 6.283185307179586;
  for (int64_t i = 0; i < n; i += 2) {
    // Box-Muller on the raw generator (std::normal_distribution is implementation-defined)
    double u1 = (static_cast<double>(gen() >> 11) + 1.0) * 0x1.0p-53;
    double u2 = static_cast<double>(gen() >> 11) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = p.init_std * r * std::cos(two_pi * u2);
    if (i + 1 < n) out[i + 1] = p.init_std * r * std::sin(two_pi * u2);
  }
}

void init_matrix(const ParamInfo& p, int64_t global_expert, uint64_t seed, double* out) {
  const int64_t blocks = init_blocks(p);
  for (int64_t b = 0; b < blocks; ++b) init_matrix_block(p, global_expert, seed, b, out + b * kInitBlockElements);
}

}  // namespace glam::exec
