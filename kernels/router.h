#pragma once
// GShard top-k gating (k = 1 or 2) for one MoE layer, per routing group of S tokens
// (Lepikhin et al., GShard, ICLR 2021; Du et al., GLaM, ICML 2022):
//   probs = softmax(logits) (in T: float32 for the model, float64 for the reference path);
//   first expert = argmax (lowest index on ties), second = argmax with the first masked;
//   top-2 gates are normalised g_i / (g1 + g2 + 1e-9) before any drop and not renormalised after;
//   optional random routing keeps the second copy with probability min(1, g2 / threshold);
//   capacity: in each group the first choices take slots in token order, then the second choices
//   take what remains in token order; a copy whose slot index is >= C is dropped (gate 0).
// The capacity C itself comes from routing_rules.h, which the simulator uses too.
// Dispatch buffers are expert-major: slot index = (expert * groups + group) * C + position.
#include <cstdint>

#include "kernel_context.h"

namespace glam::kernels {

inline constexpr double kGateNormEps = 1e-9;

struct RouterShape {
  int64_t tokens = 0;        // local tokens N (a multiple of group_tokens)
  int64_t experts = 0;       // E
  int64_t top_k = 2;         // 1 or 2
  int64_t group_tokens = 0;  // S
  int64_t capacity = 0;      // C slots per expert per group
  int64_t groups() const { return tokens / group_tokens; }
  int64_t slots() const { return experts * groups() * capacity; }
};

// Random routing of the second expert: the uniform draw of token t is a hash of
// (seed, first_token + t), so it does not depend on how tokens are split over ranks.
struct SecondExpertPolicy {
  bool random = false;
  double threshold = 0.2;
  uint64_t seed = 0;
  int64_t first_token = 0;  // global index of the first local token
};
double routing_uniform(uint64_t seed, int64_t token);

// Outputs: probs[N,E]; expert[N,k]; gate[N,k] (combine weight, 0 when dropped);
// loc[N,k] (slot index; -1 when dropped for capacity, -2 when random routing skipped the copy); slot_token[slots] (token index or -1 when empty).
template <class T>
void router_forward(const KernelContext& ctx, const T* logits, const RouterShape& shape,
                    const SecondExpertPolicy& policy, T* probs, int32_t* expert, T* gate, int32_t* loc,
                    int32_t* slot_token);

// Load-balancing loss per group: E * sum_e f_e * P_e, f_e = fraction of the group's tokens whose
// first choice is e (before drops), P_e = mean prob of e over the group. Writes aux[groups].
template <class T>
void router_aux_loss(const KernelContext& ctx, const T* probs, const int32_t* expert, const RouterShape& shape, T* aux);

// Gradient of the router logits from the combine weights' gradient dgate[N,k] and the auxiliary
// loss (aux_scale = weight / total groups over all ranks, the factor in front of the sum of per-group
// values above). Writes dlogits[N,E].
template <class T>
void router_backward(const KernelContext& ctx, const T* probs, const int32_t* expert, const int32_t* loc,
                     const T* dgate, double aux_scale, const RouterShape& shape, T* dlogits);

// The routing statistics of the copies (from router_forward's expert and loc), counted where they are,
// so that the host reads them once per pass rather than the whole loc array once per layer:
// counts[e] for e < E = copies expert e kept, counts[E + e] = copies routed to expert e and dropped for
// its capacity (kept + dropped is what the router asked of the expert), counts[2E] = second copies
// random routing skipped. counts has router_count_bins(E) entries; they are written, not added to.
inline int64_t router_count_bins(int64_t experts) { return 2 * experts + 1; }
void router_counts(const KernelContext& ctx, const int32_t* expert, const int32_t* loc, const RouterShape& shape,
                   int32_t* counts);

}  // namespace glam::kernels
