#pragma once
// The names of a training step's compute ops, in one place: the simulator's StepGraph makes its ops
// with them, the executor times its regions under them, and a calibration profile's per-op curves
// ([ops.<name>.<phase>]) are keyed by them. A measured op meets its simulated twin by name, so a name
// spelled differently on one side would silently never be compared or calibrated.
#include <span>
#include <string>
#include <string_view>

namespace glam::op_name {

// Attention block.
inline constexpr const char* kAttnNorm = "attn_norm";
inline constexpr const char* kAttnQkv = "attn_qkv";
inline constexpr const char* kAttnScores = "attn_scores";
inline constexpr const char* kAttnSoftmax = "attn_softmax";
inline constexpr const char* kAttnContext = "attn_context";
// The three ops above as one fused kernel (FlashAttention, Dao et al. 2022): the scores are computed
// block by block on chip and never written; the backward pass recomputes them. Plans only: glamexec
// runs the three.
inline constexpr const char* kAttnFused = "attn_fused";
inline constexpr const char* kAttnOut = "attn_out";
// Dense feed-forward block; ffn_norm is the MoE block's norm too.
inline constexpr const char* kFfnNorm = "ffn_norm";
inline constexpr const char* kFfnIn = "ffn_in";
inline constexpr const char* kFfnAct = "ffn_act";
inline constexpr const char* kFfnOut = "ffn_out";
// MoE block.
inline constexpr const char* kMoeRouter = "moe_router";
inline constexpr const char* kMoePermute = "moe_permute";
inline constexpr const char* kMoeExpertIn = "moe_expert_in";
inline constexpr const char* kMoeExpertAct = "moe_expert_act";
inline constexpr const char* kMoeExpertOut = "moe_expert_out";
inline constexpr const char* kMoeUnpermute = "moe_unpermute";
// The ends of the model and the update.
inline constexpr const char* kEmbed = "embed";
inline constexpr const char* kFinalNorm = "final_norm";
inline constexpr const char* kLogits = "logits";
inline constexpr const char* kLoss = "loss";
inline constexpr const char* kOptimizer = "optimizer";

// Every name above: the blocks' ops in their order (a step has attn_fused or the three it fuses, not
// both), then the model's ends and the update.
std::span<const std::string_view> compute_ops();
bool is_compute_op(std::string_view name);
// "attn_norm, attn_qkv, ..., optimizer", for messages that expect one of them.
std::string compute_op_list();
// The phases a step runs the op in ("fwd", "bwd", "opt"): the optimizer alone runs in "opt", the loss's
// gradient is part of its forward op, every other op runs in both passes.
std::span<const std::string_view> phases_of(std::string_view compute_op);

}  // namespace glam::op_name
