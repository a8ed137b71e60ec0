#pragma once
// The StepGraph: the ops of one training step as seen by one rank (one rank of each stage when the
// plan has pipeline stages), with FLOPs, HBM bytes and the collectives they need. The simulator schedules it; the executor names its timed regions
// with the same op ids ("L3.attn_qkv.fwd", "L3.moe_dispatch_a2a.bwd", "optimizer", ...).
#include <cstdint>
#include <string>
#include <vector>

#include "model_config.h"

namespace glam {

enum class OpKind { kMatmul, kAttention, kElementwise, kCollective };
enum class StepPhase { kForward, kBackward, kOptimizer };
// kSendRecv: each pipeline stage sends its buffer to the next stage (transposed: to the previous one).
enum class CollectiveKind { kAllToAll, kAllReduce, kReduceScatter, kAllGather, kSendRecv };
// Which plan axis a collective runs over.
enum class CommAxis {
  kTensor,      // the tp chips that share one layer's weights
  kExpert,      // the ep chips that share one set of experts (all-to-all)
  kData,        // every replica of the non-expert weights (dp of them)
  kExpertData,  // every replica of one expert's weights (dp / ep of them)
  kPipeline,    // the pp stages of one model replica, in stage order
  kPipelineEnds,  // its first and last stage, which both hold the tied embedding
};

const char* op_kind_name(OpKind k);
const char* phase_name(StepPhase p);
const char* collective_name(CollectiveKind k);
const char* axis_name(CommAxis a);
// NCCL-tests' bus-bandwidth factor: the bytes each rank's link carries per buffer byte in a ring or
// direct algorithm (2(n-1)/n for all-reduce, (n-1)/n for the others), so busbw = factor x bytes / time.
double bus_factor(CollectiveKind kind, int ranks);

struct StepOp {
  std::string id;
  std::string name;  // the op without layer and phase: "attn_qkv"
  int layer = -1;    // -1 for ops outside the blocks
  int stage = 0;     // pipeline stage whose ranks run it (each stage has its own streams)
  StepPhase phase = StepPhase::kForward;
  OpKind kind = OpKind::kElementwise;
  double flops = 0;  // on this rank
  double bytes = 0;  // HBM traffic on this rank
  // collectives only
  CollectiveKind collective = CollectiveKind::kAllReduce;
  CommAxis axis = CommAxis::kData;
  double comm_bytes = 0;  // per rank: the buffer each rank contributes (all-to-all: sends in total)
  // all-to-all only: share of each rank's sends that goes to each ep rank (empty: uniform);
  // transposed for the combine, where the hot ranks send instead of receive.
  std::vector<double> a2a_dest_share;
  bool a2a_transposed = false;
  // Pipeline sends only: the schedule's sends go round a ring, the last stage sending on to the first
  // (interleaved stages), so each send is costed with every stage sending at once.
  bool send_wraps = false;
  bool blocking = true;   // false: runs beside the compute stream, from the moment it is issued
  std::vector<int> deps;  // indices of ops that must finish before this one starts
};

// The key of an op's measured efficiency curve in a calibration profile: its name and phase
// ("attn_softmax.fwd"), because the forward and backward kernels of one op differ (the softmax's
// forward pass computes exponentials, its backward pass only products and sums).
std::string op_curve_key(const StepOp& op);

// How the step is laid out on one rank.
struct StepShape {
  int64_t tokens_per_rank = 0;  // tokens per data-parallel rank (the tp ranks of a group share them)
  int64_t dp = 1, ep = 1, tp = 1;
  // Pipeline stages: the blocks are cut into pp x virtual_stages chunks of consecutive blocks, chunk c
  // on stage c % pp. Each stage runs its passes (one chunk, one micro-batch, forward or backward) in
  // Megatron-LM's 1F1B order: warm-up forward passes, then one forward and one backward in turn, then
  // the backward passes left; a chunk sends its activations on to the next chunk's stage and its
  // input's gradient back. The graph holds every stage.
  int64_t pp = 1;
  int64_t virtual_stages = 1;  // chunks per stage: 1, or the interleaved schedule's v
  int64_t layers_run = 0;  // run only the first K blocks (0: all, as glamexec --layers)
  bool shard_weights = false;  // non-expert weights sharded over dp: gathered before use (ZeRO-3)
  // The optimizer sharded over dp (ZeRO-1, Megatron-LM's distributed optimizer): gradients are
  // reduce-scattered instead of all-reduced, each rank updates its 1/dp of the weights (experts: of
  // their dp / ep replicas), and the updated weights the products read are all-gathered once per step,
  // block by block ahead of the first micro-batch's forward pass. Ignored with shard_weights.
  bool shard_optimizer = false;
  bool recompute = false;      // the forward pass of each block runs again in its backward pass
  // Megatron-LM's sequence parallelism (Korthikanti et al. 2022), with tp > 1: the norms, the
  // residual and the router work on 1/tp of the tokens per tp rank; each tp all-reduce becomes an
  // all-gather before the sliced products and a reduce-scatter after them (the same bytes), and each
  // tp rank sends only its tokens through the all-to-all. glamexec does not run it.
  bool sequence_parallel = false;
  // true: each block's gradients are reduced during the rest of the backward pass (bucketed, as
  // large-scale trainers do); false: one blocking all-reduce after it (glamexec's CPU executor).
  bool overlap_grad_reduction = true;
  int64_t microbatches = 1;  // gradient accumulation: tokens_per_rank is split into this many passes
  // The optimizer also writes a copy of the weights in the (narrower) activation precision, which the
  // next step's products read: glamexec's bf16 model. Off for plans (XLA fuses that cast on TPUs).
  bool narrow_weight_copy = false;
  // Attention as one fused kernel (FlashAttention, Dao et al. 2022; GPU trainers' default): the
  // scores never leave the chip, the causal mask skips the key blocks past the query's, and the
  // backward pass recomputes the scores. Off: glamexec's and XLA's three ops over [S, S] scores.
  bool fused_attention = false;
};

// Expert load of one MoE layer on the busiest rank, from the routing model.
struct MoeLayerLoad {
  double expert_tokens = 0;    // token copies the busiest rank's experts process
  double a2a_send_tokens = 0;  // token copies the busiest rank sends in the dispatch all-to-all
  double dropped_fraction = 0;
  std::vector<double> dest_share;  // per ep rank, share of the dispatched copies it receives (empty: uniform)
};

struct StepGraph {
  std::vector<StepOp> ops;  // every dependency points to an earlier op
  double model_flops = 0;  // useful training FLOPs of this rank (for MFU; with pp, a stage's average)
  int64_t stages = 1;
};

// `loads` has one entry per MoE block that runs (empty: uniform routing everywhere).
StepGraph build_step_graph(const ModelConfig& m, const StepShape& s, const std::vector<MoeLayerLoad>& loads = {});

int64_t blocks_run(const ModelConfig& m, const StepShape& s);

// The pipeline layout both the StepGraph and the memory accounting use.
struct PipelineLayout {
  int64_t blocks = 1, stages = 1, virtual_stages = 1, microbatches = 1;
  int64_t chunks() const { return stages * virtual_stages; }
  int64_t blocks_per_chunk() const { return blocks / chunks(); }
  int64_t stage_of_chunk(int64_t chunk) const { return chunk % stages; }
  std::vector<int64_t> blocks_of_stage(int64_t stage) const;
  // Forward passes a stage runs before its first backward pass (Megatron-LM's warm-up).
  int64_t warmup_passes(int64_t stage) const;
  // The stage's program: (forward, chunk, micro-batch) in the order it runs them.
  struct Pass {
    bool forward = true;
    int64_t chunk = 0, microbatch = 0;
  };
  std::vector<Pass> program(int64_t stage) const;
  // Micro-batches of the stage's blocks whose activations it holds at its peak: its warm-up passes
  // and one more, each holding one chunk of one micro-batch (1F1B: min(pp - s, m)).
  double peak_activation_microbatches(int64_t stage) const;
};

}  // namespace glam
