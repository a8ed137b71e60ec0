#include "op_names.h"

#include <algorithm>
#include <iterator>

namespace glam::op_name {

namespace {
constexpr std::string_view kAll[] = {
    kAttnNorm,     kAttnQkv,      kAttnScores,     kAttnSoftmax,  kAttnContext, kAttnFused,
    kAttnOut,      kFfnNorm,      kFfnIn,          kFfnAct,       kFfnOut,      kMoeRouter,
    kMoePermute,   kMoeExpertIn,  kMoeExpertAct,   kMoeExpertOut, kMoeUnpermute, kEmbed,
    kFinalNorm,    kLogits,       kLoss,           kOptimizer};
}  // namespace

std::span<const std::string_view> compute_ops() { return kAll; }

bool is_compute_op(std::string_view name) { return std::find(std::begin(kAll), std::end(kAll), name) != std::end(kAll); }

std::string compute_op_list() {
  std::string out;
  for (std::string_view n : kAll) out += (out.empty() ? "" : ", ") + std::string(n);
  return out;
}

std::span<const std::string_view> phases_of(std::string_view compute_op) {
  static constexpr std::string_view both[] = {"fwd", "bwd"}, forward[] = {"fwd"}, update[] = {"opt"};
  if (compute_op == kOptimizer) return update;
  if (compute_op == kLoss) return forward;
  return both;
}

}  // namespace glam::op_name
