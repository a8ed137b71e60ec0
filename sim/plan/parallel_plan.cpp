#include "plan/parallel_plan.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <sstream>

#include "common/catalogue.h"
#include "common/errors.h"
#include "common/schema.h"

namespace glam {

StepShape ParallelPlan::step_shape() const {
  StepShape s;
  s.tokens_per_rank = tokens_per_rank();
  s.dp = dp;
  s.ep = ep;
  s.tp = tp;
  s.pp = pp;
  s.virtual_stages = virtual_stages;
  s.shard_weights = shard_weights;
  s.shard_optimizer = shard_optimizer;
  s.recompute = recompute;
  s.sequence_parallel = sequence_parallel && tp > 1;
  s.overlap_grad_reduction = overlap_grad_reduction;
  s.microbatches = microbatches;
  s.narrow_weight_copy = narrow_weight_copy;
  s.fused_attention = attention == "fused";
  return s;
}

namespace {

bool is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// Splits a torus into nested compact blocks, one per level (sizes must be powers of two whose
// product is the chip count). Returns block extents per level and dimension.
std::vector<std::vector<int>> torus_blocks(const std::vector<int>& dims, const std::vector<int64_t>& levels) {
  std::vector<int> used(dims.size(), 1);
  std::vector<std::vector<int>> shape(levels.size(), std::vector<int>(dims.size(), 1));
  for (size_t lv = 0; lv < levels.size(); ++lv) {
    int64_t left = levels[lv];
    while (left > 1) {
      // Grow the dimension with the smallest extent so far that still has room: compact blocks.
      int best = -1;
      for (size_t d = 0; d < dims.size(); ++d) {
        if (dims[d] % (used[d] * 2) != 0) continue;
        if (best < 0 || used[d] < used[static_cast<size_t>(best)]) best = static_cast<int>(d);
      }
      if (best < 0) return {};
      used[static_cast<size_t>(best)] *= 2;
      shape[lv][static_cast<size_t>(best)] *= 2;
      left /= 2;
    }
  }
  return shape;
}

// A block index as per-dimension block coordinates, dimension 0 fastest.
std::vector<int> plain_digits(int64_t index, const std::vector<int>& extent) {
  std::vector<int> digits(extent.size());
  for (size_t d = 0; d < extent.size(); ++d) digits[d] = static_cast<int>(index % extent[d]), index /= extent[d];
  return digits;
}

// The same in boustrophedon order (a snake): each dimension runs backwards on every other row of
// the slower ones, so consecutive indices are neighbouring blocks. Pipeline stages are placed so, and
// each stage sends to the next over one block's width.
std::vector<int> snake_digits(int64_t index, const std::vector<int>& extent) {
  std::vector<int> digits(extent.size());
  int64_t below = 1;  // blocks in the faster dimensions
  for (int e : extent) below *= e;
  for (size_t d = extent.size(); d-- > 0;) {
    below /= extent[d];
    digits[d] = static_cast<int>(index / below);
    index %= below;
    if (digits[d] % 2 == 1) index = below - 1 - index;  // the faster dimensions run backwards
  }
  return digits;
}

constexpr size_t kStageLevel = 3;  // the levels of torus_blocks: tp, ep, replicas, stages

}  // namespace

RankMap::RankMap(const ParallelPlan& plan, const Cluster& cluster) : plan_(plan) {
  const int64_t n = plan.chips();
  chip_.resize(static_cast<size_t>(n));
  std::iota(chip_.begin(), chip_.end(), 0);
  description_ = "ranks in chip order (tp innermost)";
  const auto& dims = cluster.torus_dims();
  std::vector<int64_t> levels = {plan.tp, plan.ep, plan.dp / plan.ep, plan.pp};
  if (plan.mapping == "linear" || dims.empty() || !std::all_of(levels.begin(), levels.end(), is_power_of_two)) return;
  auto shape = torus_blocks(dims, levels);
  if (shape.empty()) return;
  // rank -> (t, e, replica) -> per-level block coordinates -> torus coordinates -> chip id
  for (int64_t r = 0; r < n; ++r) {
    const int64_t reps = plan.dp / plan.ep;
    int64_t idx[4] = {r % plan.tp, (r / plan.tp) % plan.ep, (r / (plan.tp * plan.ep)) % reps, r / plan.dp / plan.tp};
    std::vector<int> coord(dims.size(), 0), stride(dims.size(), 1);
    for (size_t lv = 0; lv < 4; ++lv) {
      const std::vector<int> digits = lv == kStageLevel ? snake_digits(idx[lv], shape[lv]) : plain_digits(idx[lv], shape[lv]);
      for (size_t d = 0; d < dims.size(); ++d) {
        coord[d] += digits[d] * stride[d];
        stride[d] *= shape[lv][d];
      }
    }
    int chip = 0;
    for (size_t d = dims.size(); d-- > 0;) chip = chip * dims[d] + coord[d];
    chip_[static_cast<size_t>(r)] = chip;
  }
  auto fmt = [](const std::vector<int>& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
    return out;
  };
  description_ = "torus blocks: tp " + fmt(shape[0]) + ", ep " + fmt(shape[1]) + ", replicas " + fmt(shape[2]) +
                 (plan.pp > 1 ? ", stages " + fmt(shape[3]) : "");
}

int64_t ParallelPlan::group_size(CommAxis axis) const {
  switch (axis) {
    case CommAxis::kTensor: return tp;
    case CommAxis::kExpert: return ep;
    case CommAxis::kData: return dp;
    case CommAxis::kExpertData: return dp / ep;
    case CommAxis::kPipeline: return pp;
    case CommAxis::kPipelineEnds: return pp > 1 ? 2 : 1;
  }
  return 1;
}

namespace {

// A rank's coordinates: rank = t + tp * (e + ep * (replica + replicas * stage)).
enum RankCoord { kTp, kEp, kReplica, kStage };

// Which coordinates an axis's groups enumerate (outer) and which vary inside a group (members), each
// slowest first. The groups of an axis inside a stage come for every stage: a stage's collective is
// costed as if every stage ran its own at the same time (they run the same kind of blocks).
struct AxisShape {
  std::vector<RankCoord> outer, members;
};
AxisShape axis_shape(CommAxis axis) {
  switch (axis) {
    case CommAxis::kTensor: return {{kStage, kReplica, kEp}, {kTp}};
    case CommAxis::kExpert: return {{kStage, kReplica, kTp}, {kEp}};
    case CommAxis::kData: return {{kStage, kTp}, {kReplica, kEp}};
    case CommAxis::kExpertData: return {{kStage, kTp, kEp}, {kReplica}};
    case CommAxis::kPipeline:
    case CommAxis::kPipelineEnds: return {{kReplica, kEp, kTp}, {kStage}};
  }
  return {};
}

// Calls f with every combination of the coordinates, the last one fastest.
template <typename F>
void for_each_coords(const std::vector<RankCoord>& coords, const std::array<int64_t, 4>& extent,
                     std::array<int64_t, 4>& at, F&& f, size_t depth = 0) {
  if (depth == coords.size()) return f();
  for (at[coords[depth]] = 0; at[coords[depth]] < extent[coords[depth]]; ++at[coords[depth]])
    for_each_coords(coords, extent, at, f, depth + 1);
}

}  // namespace

std::vector<std::vector<int>> RankMap::groups(CommAxis axis) const {
  const std::array<int64_t, 4> extent = {plan_.tp, plan_.ep, plan_.dp / plan_.ep, plan_.pp};
  const AxisShape shape = axis_shape(axis);
  std::array<int64_t, 4> at{};
  auto rank = [&] {
    return at[kTp] + extent[kTp] * (at[kEp] + extent[kEp] * (at[kReplica] + extent[kReplica] * at[kStage]));
  };
  std::vector<std::vector<int>> out;
  for_each_coords(shape.outer, extent, at, [&] {
    out.emplace_back();
    for_each_coords(shape.members, extent, at, [&] { out.back().push_back(chip_of_rank(rank())); });
    // The tied embedding's two copies: the first and the last stage of each pipeline.
    if (axis == CommAxis::kPipelineEnds) out.back() = {out.back().front(), out.back().back()};
  });
  return out;
}

std::string RankMap::describe() const { return description_; }

namespace {
const Schema<ParallelPlan>& plan_schema() {
  static const Schema<ParallelPlan> s = [] {
    Schema<ParallelPlan> sc;
    sc.add("dp", &ParallelPlan::dp, "chips", "Data-parallel width", required, positive<int64_t>())
        .add("ep", &ParallelPlan::ep, "chips",
             "Expert-parallel width (divides dp and the experts); 0: the largest that does, as --dp and --tp give",
             int64_t{0}, non_negative<int64_t>())
        .add("tp", &ParallelPlan::tp, "chips", "Tensor-parallel width", int64_t{1}, positive<int64_t>())
        .add("pp", &ParallelPlan::pp, "stages",
             "Pipeline stages: each holds an equal share of the blocks (one run of consecutive blocks, or "
             "virtual_stages of them); micro-batches flow through them 1F1B",
             int64_t{1}, positive<int64_t>())
        .add("virtual_stages", &ParallelPlan::virtual_stages, "chunks",
             "Chunks of blocks per pipeline stage: 1, or v > 1 for the interleaved 1F1B schedule (block chunk c on "
             "stage c mod pp; the bubble shrinks v-fold, sends and activations grow)",
             int64_t{1}, positive<int64_t>())
        .add("batch_tokens", &ParallelPlan::batch_tokens, "tokens", "Global tokens per step (0: command line or 1M)",
             int64_t{0}, non_negative_up_to<int64_t>(kMaxBatchTokens))
        .add("shard_weights", &ParallelPlan::shard_weights, "",
             "Shard weights, gradients and optimizer state over dp too: non-expert ones over dp, experts over dp / ep "
             "(ZeRO-3 / GSPMD 2D)", false)
        .add("shard_optimizer", &ParallelPlan::shard_optimizer, "",
             "Shard the optimizer over dp (ZeRO-1, Megatron-LM's distributed optimizer): master weights and optimizer "
             "state (experts' over dp / ep), gradients reduce-scattered, the updated weights all-gathered once per "
             "step; the weights the products read stay whole. Not with shard_weights",
             false)
        .add("recompute", &ParallelPlan::recompute, "", "Recompute activations in the backward pass", false)
        .add("sequence_parallel", &ParallelPlan::sequence_parallel, "",
             "With tp > 1, Megatron-LM's sequence parallelism: norms, residual and router on 1/tp of the tokens, "
             "all-gather and reduce-scatter instead of all-reduce, 1/tp of the all-to-all per tp rank (absent: "
             "on for MoE models on GPU clusters, off on TPU pods)",
             false)
        .add("mapping", &ParallelPlan::mapping, "",
             "Ranks onto chips: auto (nested compact blocks on tori: tp, then ep, then replicas) or linear (chip order)",
             std::string("auto"), one_of({"auto", "linear"}))
        .add("microbatches", &ParallelPlan::microbatches, "",
             "Gradient accumulation: forward and backward passes per step, each on a share of the rank's tokens "
             "(0: the fewest that fit in memory; with pipeline stages, up to 4 per stage)",
             int64_t{0}, non_negative_up_to<int64_t>(kMaxMicrobatches))
        .add("overlap_grad_reduction", &ParallelPlan::overlap_grad_reduction, "",
             "Reduce each block's gradients during the backward pass (false: all at once after it)", true)
        .add("attention", &ParallelPlan::attention, "",
             "fused (one FlashAttention kernel: the scores stay on chip, the backward pass recomputes them), "
             "materialised (products and softmax over the [S, S] scores, as glamexec and XLA run them) or auto "
             "(fused on GPU clusters, materialised on TPU pods)",
             std::string("auto"), one_of({"auto", "fused", "materialised"}));
    return sc;
  }();
  return s;
}
}  // namespace

PlanFile load_plan_file(const std::string& path) {
  const toml::table table = load_toml_file(path);
  PlanFile f{plan_schema().parse(table, path), std::nullopt};
  if (table.contains("sequence_parallel")) f.sequence_parallel = f.plan.sequence_parallel;
  return f;
}

nlohmann::json plan_to_json(const ParallelPlan& p) {
  nlohmann::json j = plan_schema().dump(p);
  j["sequence_parallel"] = p.sequence_parallel && p.tp > 1;  // what the step does: nothing to split at tp 1
  return j;
}

void validate_plan(const ParallelPlan& p, const ModelConfig& m, const Cluster& c) {
  auto s = [](int64_t v) { return std::to_string(v); };
  if (p.dp <= 0 || p.ep <= 0 || p.tp <= 0 || p.pp <= 0)
    throw UsageError("plan axes must be positive: dp " + s(p.dp) + ", ep " + s(p.ep) + ", tp " + s(p.tp) + ", pp " +
                     s(p.pp));
  for (const auto& [axis, width] :
       {std::pair<const char*, int64_t>{"dp", p.dp}, {"ep", p.ep}, {"tp", p.tp}, {"pp", p.pp}})
    if (width > c.num_chips())
      throw UsageError(std::string(axis) + " = " + s(width) + " is wider than the " + s(c.num_chips()) + " chips of " +
                       c.id());
  // Bounds first: past them the products below overflow, and a step takes minutes to simulate.
  if (p.batch_tokens > kMaxBatchTokens)
    throw UsageError("batch of " + s(p.batch_tokens) + " tokens: expected at most " + s(kMaxBatchTokens));
  if (p.microbatches > kMaxMicrobatches)
    throw UsageError("microbatches = " + s(p.microbatches) + ": expected at most " + s(kMaxMicrobatches));
  // Each axis is at most the chip count (below 2^31), so dp x tp cannot overflow, nor its product with pp
  // once dp x tp is at most the chip count.
  if (p.dp * p.tp > c.num_chips() || p.chips() != c.num_chips())
    throw UsageError("plan axes dp x tp" + std::string(p.pp > 1 ? " x pp" : "") + " = " + s(p.dp) + " x " + s(p.tp) +
                     (p.pp > 1 ? " x " + s(p.pp) : "") + " = " +
                     (p.pp == 1 ? s(p.dp * p.tp)
                      : p.dp * p.tp > c.num_chips() ? "more than " + s(c.num_chips())  // x pp might overflow
                                                    : s(p.chips())) +
                     " do not multiply to the chip count of " + c.id() + " (" + s(c.num_chips()) + ")");
  if (m.layers % p.pp != 0)
    throw UsageError("pp = " + s(p.pp) + " must divide the " + s(m.layers) + " blocks of " + m.id +
                     " (each stage holds as many)");
  if (p.virtual_stages < 1 || p.virtual_stages > m.layers)
    throw UsageError("virtual_stages = " + s(p.virtual_stages) + ": expected from 1 to the " + s(m.layers) +
                     " blocks of " + m.id);
  if (p.virtual_stages > 1) {
    if (p.pp < 2) throw UsageError("virtual_stages = " + s(p.virtual_stages) + " interleaves pipeline stages: pp is 1");
    if (m.layers % (p.pp * p.virtual_stages) != 0)
      throw UsageError("pp x virtual_stages = " + s(p.pp) + " x " + s(p.virtual_stages) + " must divide the " +
                       s(m.layers) + " blocks of " + m.id + " (each chunk holds as many)");
    if (p.microbatches % p.pp != 0)
      throw UsageError("microbatches = " + s(p.microbatches) +
                       ": the interleaved schedule runs micro-batches in groups of pp = " + s(p.pp) +
                       " (a multiple of it is needed; each dp rank has " + s(p.batch_tokens / p.dp / m.seq_len) +
                       " sequences to split)");
  }
  if (p.shard_weights && p.shard_optimizer)
    throw UsageError("shard_weights and shard_optimizer both set: sharded weights already shard the optimizer over dp; "
                     "choose one");
  if (p.shard_weights && !p.overlap_grad_reduction)
    throw UsageError("shard_weights needs overlap_grad_reduction: a rank keeps only its shard of the gradients, "
                     "so each pass reduce-scatters them as it goes");
  if (p.shard_optimizer && p.dp < 2)
    throw UsageError("shard_optimizer needs dp > 1: with dp = " + s(p.dp) + " there is no data-parallel rank to shard over");
  // What the model alone rules out first: every layout of the search fails it the same way.
  if (!m.is_moe() && p.ep != 1) throw UsageError("ep = " + s(p.ep) + " but " + m.id + " has no experts: use ep = 1");
  if (m.is_moe() && m.experts % p.ep != 0)
    throw UsageError("experts (" + s(m.experts) + ") of " + m.id + " are not divisible by ep = " + s(p.ep));
  if (p.batch_tokens % m.seq_len != 0)
    throw UsageError("batch of " + s(p.batch_tokens) + " tokens is no whole number of " + s(m.seq_len) +
                     "-token sequences (" + m.id + "'s seq_len)");
  if (m.heads % p.tp != 0)
    throw UsageError("tp = " + s(p.tp) + " must divide the attention heads (" + s(m.heads) + ") of " + m.id);
  if (p.dp % p.ep != 0)
    throw UsageError("ep = " + s(p.ep) + " must divide dp = " + s(p.dp) + " (expert parallelism is part of dp)");
  if (p.batch_tokens < p.dp * m.seq_len)
    throw UsageError("batch of " + s(p.batch_tokens) + " tokens is smaller than the data-parallel width: dp = " +
                     s(p.dp) + " ranks need at least one " + s(m.seq_len) + "-token sequence each (" +
                     s(p.dp * m.seq_len) + " tokens)");
  if (p.microbatches < 1 || p.batch_tokens % (p.dp * p.microbatches * m.seq_len) != 0) {
    if (p.batch_tokens % (p.dp * m.seq_len) == 0)
      throw UsageError("microbatches = " + s(p.microbatches) + " do not split the " + s(p.batch_tokens / p.dp) +
                       " tokens of each dp rank into whole " + s(m.seq_len) + "-token sequences");
  }
  if (p.batch_tokens % (p.dp * m.seq_len) != 0) {
    // the nearest batches that split: multiples of dp sequences (in each micro-batch)
    const int64_t whole = p.dp * std::max<int64_t>(p.microbatches, 1) * m.seq_len;
    const int64_t below = p.batch_tokens / whole * whole;
    throw UsageError("batch of " + s(p.batch_tokens) + " tokens does not split into whole " + s(m.seq_len) +
                     "-token sequences over dp = " + s(p.dp) + " ranks (--batch-tokens " +
                     (below > 0 ? s(below) + " or " : "") + s(below + whole) + " would)");
  }
}

std::string plan_short_label(const ParallelPlan& p) {
  return "dp" + std::to_string(p.dp) + " tp" + std::to_string(p.tp) + (p.ep > 1 ? " ep" + std::to_string(p.ep) : "") +
         (p.pp > 1 ? " pp" + std::to_string(p.pp) : "") +
         (p.virtual_stages > 1 ? " v" + std::to_string(p.virtual_stages) : "") + (p.shard_weights ? " zs" : "") + (p.shard_optimizer ? " zo" : "") +
         (p.recompute ? " rc" : "") +
         (p.sequence_parallel && p.tp > 1 ? " sp" : "") +
         (p.microbatches > 1 ? " mb" + std::to_string(p.microbatches) : "") + (p.mapping == "linear" ? " linear" : "");
}

std::string plan_description(const ParallelPlan& p, bool moe) {
  return "dp " + std::to_string(p.dp) + " x tp " + std::to_string(p.tp) +
         (p.pp > 1 ? " x pp " + std::to_string(p.pp) : "") +
         (p.virtual_stages > 1 ? " (" + std::to_string(p.virtual_stages) + " chunks each, interleaved)" : "") +
         (moe ? ", ep " + std::to_string(p.ep) : "") +
         (p.shard_weights ? ", weights sharded" : "") + (p.shard_optimizer ? ", optimizer sharded" : "") +
         (p.recompute ? ", recompute" : "") +
         (p.sequence_parallel && p.tp > 1 ? ", sequence parallel" : "") +
         (p.microbatches > 1 ? ", " + std::to_string(p.microbatches) + " micro-batches" : "") +
         (p.attention == "fused" ? ", fused attention" : "");
}

double all_to_all_buffer_bytes(const ModelConfig& m, const ParallelPlan& p) {
  if (!m.is_moe() || p.ep < 2 || p.all_to_all_peer_bytes <= 0) return 0;
  // Members tp chips apart: a node of n chips holds up to ceil(n / tp) of them.
  const int64_t members_in_node = std::min(p.ep, std::max<int64_t>(1, (p.chips_per_node + p.tp - 1) / p.tp));
  return static_cast<double>(members_in_node - 1) * p.all_to_all_peer_bytes;
}

MemoryFootprint plan_memory(const ModelConfig& m, const ParallelPlan& p) {
  ShardingForMemory sh;
  sh.dense_shards = p.tp * (p.shard_weights ? p.dp : 1);
  sh.expert_shards = (m.is_moe() ? p.ep : 1) * p.tp * (p.shard_weights ? p.dp / p.ep : 1);
  sh.tp = p.tp;
  sh.tokens_per_chip = p.tokens_per_rank() / std::max<int64_t>(1, p.microbatches);
  sh.recompute_activations = p.recompute;
  sh.sequence_parallel = p.sequence_parallel && p.tp > 1;
  sh.narrow_weight_copy = p.narrow_weight_copy;
  sh.fused_attention = p.attention == "fused";
  // What the StepGraph gathers: non-expert weights over dp > 1, experts over dp / ep > 1 replicas.
  if (p.shard_weights && p.dp > 1) sh.gathered_dense_shards = p.tp;
  if (p.shard_weights && m.is_moe() && p.dp / p.ep > 1) sh.gathered_expert_shards = p.ep * p.tp;
  if (p.shard_optimizer) sh.optimizer_dense_shards = p.dp, sh.optimizer_expert_shards = p.dp / p.ep;
  MemoryFootprint fp;
  if (p.pp <= 1) {
    fp = memory_per_chip(m, sh);
  } else {
    const PipelineLayout layout{m.layers, p.pp, p.virtual_stages, std::max<int64_t>(1, p.microbatches)};
    for (int64_t st = 0; st < p.pp; ++st) {
      sh.blocks_held = layout.blocks_of_stage(st);
      sh.input_end = st == 0, sh.output_end = st == p.pp - 1;
      sh.activation_microbatches = layout.peak_activation_microbatches(st);
      const MemoryFootprint stage = memory_per_chip(m, sh);
      if (stage.total_bytes() > fp.total_bytes()) fp = stage;
    }
  }
  // The same on every stage.
  fp.communication_bytes = all_to_all_buffer_bytes(m, p);
  return fp;
}

void apply_cluster_conventions(ParallelPlan& plan, const ModelConfig& m, const Cluster& c,
                               std::optional<bool> sequence_parallel_given) {
  const bool gpu = c.kind() != TopologyKind::kTorus;
  plan.narrow_weight_copy = gpu && ModelConfig::precision_bytes(m.activation_precision) <
                                       ModelConfig::precision_bytes(m.weight_precision);
  plan.all_to_all_peer_bytes = c.chip().all_to_all_peer_bytes;
  plan.chips_per_node = c.chips_per_node();
  plan.sequence_parallel = sequence_parallel_given.value_or(gpu && m.is_moe());
  if (plan.attention == "auto") plan.attention = gpu ? "fused" : "materialised";
}

}  // namespace glam
