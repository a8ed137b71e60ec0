#pragma once
// The parallel layout of a training step: data (dp), expert (ep), tensor (tp) and pipeline (pp)
// parallelism, and how plan ranks map onto the cluster's chips.
//
// Conventions: chips = dp x tp x pp. Expert parallelism is carved out of data parallelism (GShard,
// DeepSpeed-MoE): ep divides dp and the experts, each ep group holds every expert (E / ep per chip),
// and dp / ep groups hold replicas of the same experts. Pipeline stages split the blocks into pp
// runs of consecutive blocks, each held by its own dp x tp chips.
// Rank r = t + tp * (e + ep * (replica + dp / ep * stage)).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "accounting.h"
#include "cluster.h"
#include "model_config.h"
#include "step_graph.h"

namespace glam {

// Bounds of a plan: a trillion tokens per step (GLaM's was 2^20), and 4,096 passes per step (a step
// of more takes the simulator minutes).
inline constexpr int64_t kMaxBatchTokens = int64_t{1} << 40;
inline constexpr int64_t kMaxMicrobatches = 4096;

struct ParallelPlan {
  int64_t dp = 1, ep = 1, tp = 1;
  int64_t pp = 1;            // pipeline stages (1F1B over the micro-batches)
  int64_t virtual_stages = 1;  // chunks of blocks per stage (> 1: the interleaved schedule)
  int64_t batch_tokens = 0;  // global tokens per step
  bool shard_weights = false;  // ZeRO-3 / GSPMD 2D: non-expert weights and state sharded over dp as well
  // ZeRO-1, Megatron-LM's distributed optimizer: master weights and optimizer state sharded over dp,
  // the weights the products read whole (StepShape::shard_optimizer); not with shard_weights.
  bool shard_optimizer = false;
  bool recompute = false;      // keep only block inputs; recompute the forward in backward
  bool sequence_parallel = false;  // with tp > 1 (StepShape::sequence_parallel)
  std::string mapping = "auto";  // "auto": compact torus blocks where possible; "linear": chip order
  bool overlap_grad_reduction = true;  // reduce each block's gradients during the backward pass
  int64_t microbatches = 1;            // gradient accumulation: passes per step on each rank
  // "fused" (FlashAttention: StepShape::fused_attention), "materialised" (three ops over the [S, S]
  // scores, as glamexec and XLA run them) or "auto", which apply_cluster_conventions resolves.
  std::string attention = "auto";
  // A bf16 copy of the weights, written by the optimizer and kept beside the float32 ones: glamexec's
  // and GPU frameworks' (StepShape::narrow_weight_copy; apply_cluster_conventions); not in plan files.
  bool narrow_weight_copy = false;
  // What the chips' collective library takes for an all-to-all's peer in the same node
  // (ChipSpec::all_to_all_peer_bytes), and the chips per node; set with the cluster's conventions.
  double all_to_all_peer_bytes = 0;
  int64_t chips_per_node = 1;

  int64_t chips() const { return dp * tp * pp; }
  int64_t tokens_per_rank() const { return batch_tokens / dp; }
  // Members of each group of the axis (1: the collective stays on the chip).
  int64_t group_size(CommAxis axis) const;
  StepShape step_shape() const;
};

// Where each plan rank sits on the cluster: on tori the tp, ep and replica axes take compact
// blocks of the torus (so a tp group is a small sub-torus and an ep group a cube of them); on
// GPU clusters ranks follow chip order, so tp stays inside an NVSwitch node.
class RankMap {
 public:
  RankMap(const ParallelPlan& plan, const Cluster& cluster);
  int chip_of_rank(int64_t rank) const { return chip_[static_cast<size_t>(rank)]; }
  // Every group of the axis, as chip ids in rank order; groups are disjoint and cover all chips.
  std::vector<std::vector<int>> groups(CommAxis axis) const;
  std::string describe() const;

 private:
  ParallelPlan plan_;
  std::vector<int> chip_;
  std::string description_;
};

// A plan file (dp, ep, tp, batch_tokens, shard_weights, recompute, attention, ...), and its
// sequence_parallel when it sets one (absent: the cluster's convention, apply_cluster_conventions).
struct PlanFile {
  ParallelPlan plan;
  std::optional<bool> sequence_parallel;
};
PlanFile load_plan_file(const std::string& path);
nlohmann::json plan_to_json(const ParallelPlan& p);
// "dp256 tp4 ep64 pp2 zs rc mb2": zs = weights sharded over dp, zo = optimizer sharded over dp, rc =
// recompute, mbN = N micro-batches; no epN at ep 1 (dense models, and MoE experts on every rank).
std::string plan_short_label(const ParallelPlan& p);
// "dp 32 x tp 4 x pp 8, ep 8, weights sharded, recompute, 32 micro-batches": for reports; the ep only
// for an MoE model (`moe`).
std::string plan_description(const ParallelPlan& p, bool moe);
inline constexpr const char* kPlanLabelLegend =
    "epN = experts split over N ranks (none: every rank holds every expert), ppN = N pipeline stages, vN = N "
    "chunks per stage (interleaved), zs = weights sharded over dp, zo = optimizer "
    "(master weights and state) sharded over dp, rc = activation "
    "recompute, sp = sequence parallel, mbN = N micro-batches";

// Checks the plan against the model and the cluster; throws UsageError with the reason.
void validate_plan(const ParallelPlan& plan, const ModelConfig& m, const Cluster& c);

// The expert all-to-all's buffers on each chip: its peers in the same node (an ep group's members sit
// tp chips apart, in chip order) times the chip's figure per peer; none without expert parallelism.
double all_to_all_buffer_bytes(const ModelConfig& m, const ParallelPlan& p);
// Per chip; with pipeline stages, the stage that needs the most (the first, as a rule: it holds the
// activations of min(pp, microbatches) micro-batches).
MemoryFootprint plan_memory(const ModelConfig& m, const ParallelPlan& plan);

// How training runs on the cluster's chips, where a plan does not say. GPU clusters train as
// Megatron-Core does: a bf16 copy of the weights beside the float32 master weights, sequence
// parallelism for an MoE model with tp > 1 (which Megatron-Core requires) unless
// `sequence_parallel_given` says otherwise, and fused attention (FlashAttention) unless the plan's
// attention says otherwise. TPU pods train as XLA and GSPMD did for GLaM: casts fused into the
// products, no sequence parallelism, attention as three ops.
void apply_cluster_conventions(ParallelPlan& plan, const ModelConfig& m, const Cluster& c,
                               std::optional<bool> sequence_parallel_given);

}  // namespace glam
