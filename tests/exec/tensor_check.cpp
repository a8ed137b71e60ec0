// Run under mpirun (ctest: 4 ranks on the 2 cores): training steps with tensor parallelism against the
// same steps without it. The world splits into groups of `tp` ranks that share their tokens and split
// the matrices (and, with pipeline stages, into stages of such groups); the ranks that hold the same
// slice first compute the reference steps themselves (tp 1, one stage, the same expert split), then run
// their slice. Two steps, each with its Adafactor update: every rank compares the losses, the second
// step's gradients and the updated weights of the tensors it holds with the reference's slice of the
// same name. Prints what failed and exits 1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "kernel_context.h"
#include "model/transformer.h"
#include "mpi_check.h"
#include "optim/adafactor_optimizer.h"
#include "support/random_batch.h"

namespace {

using namespace glam::exec;
using glam::testing::MpiCheck;

// Four blocks (MoE every other one) whose heads (4), hidden units (16, experts 8) and vocabulary (16)
// split over 4 ranks; random second-expert routing and a capacity that drops copies.
glam::ModelConfig sliceable_model(bool tied) {
  return glam::parse_model(std::string(R"(id = "tensor-check"
from_paper = false
[architecture]
layers = 4
d_model = 8
ffn_hidden = 16
heads = 4
head_dim = 2
vocab_size = 16
seq_len = 6
relative_buckets = 4
relative_max_distance = 8
ffn_kind = "gated"
)") + (tied ? "" : "tied_embeddings = false\n") +
                               R"([moe]
experts = 4
every = 2
offset = 1
expert_hidden = 8
top_k = 2
capacity_factor = 0.5
capacity_convention = "gshard"
group_tokens = 6
aux_loss_weight = 0.1
second_expert_policy = "random"
second_expert_threshold = 1.0
[training]
z_loss_weight = 0.01
)",
                           "tensor-check.toml");
}

struct Case {
  int tp, data_ranks, stages;
  int64_t microbatches;
  bool tied;
  bool bf16 = false;  // bf16 activations, float32 master weights (else float64 throughout)
  std::string name() const {
    return "tp " + std::to_string(tp) + " x " + std::to_string(data_ranks) + " rank(s) x pp " + std::to_string(stages) +
           ", " + std::to_string(microbatches) + " micro-batches, " + (tied ? "tied" : "untied") +
           (bf16 ? ", bf16" : "");
  }
};

// The reference's values of this rank's slice of matrix `e` of `p` (`ref`: the whole tensor's start).
template <class V>
double slice_value(const ParamInfo& p, const V* ref, int64_t e, int64_t r, int64_t c) {
  const int64_t rows = p.full_rows(), cols = p.full_cols();
  const int64_t r0 = p.slice_axis == SliceAxis::kRows ? p.slice * p.rows : 0;
  const int64_t c0 = p.slice_axis == SliceAxis::kCols ? p.slice * p.cols : 0;
  return static_cast<double>(ref[e * rows * cols + (r0 + r) * cols + c0 + c]);
}

// The largest relative difference of the tensors this rank holds from the reference's slices: of an
// element, or with `by_norm` of a tensor's norm (bf16's rounded partial sums leave small elements
// with large relative errors).
template <class V, class R>
double worst_difference(MpiCheck& check, const ModelLayout& mine, const V* values, const ModelLayout& ref_layout,
                        const R* ref, const std::string& where, bool by_norm = false) {
  std::map<std::string, const ParamInfo*> by_name;
  for (const auto& p : ref_layout.params) by_name[p.name] = &p;
  double worst = 0;
  for (const auto& p : mine.params) {
    auto it = by_name.find(p.name);
    if (it == by_name.end() || it->second->count != p.count || it->second->rows != p.full_rows() ||
        it->second->cols != p.full_cols()) {
      check.expect(false, where + "tensor " + p.name + " is not a slice of the reference's");
      continue;
    }
    double diff2 = 0, want2 = 0;
    for (int64_t e = 0; e < p.count; ++e)
      for (int64_t r = 0; r < p.rows; ++r)
        for (int64_t c = 0; c < p.cols; ++c) {
          const double v = static_cast<double>(values[p.offset + (e * p.rows + r) * p.cols + c]);
          const double want = slice_value(p, ref + it->second->offset, e, r, c);
          if (!by_norm) worst = std::max(worst, std::abs(v - want) / (1e-8 + std::abs(want)));
          diff2 += (v - want) * (v - want), want2 += want * want;
        }
    if (by_norm) worst = std::max(worst, std::sqrt(diff2 / std::max(want2, 1e-30)));
  }
  return worst;
}

// Runs one step of `model` on the program of its stage, with its update; returns the step's losses.
template <class T>
StepLoss train_step(Transformer<T>& model, AdafactorOptimizer<glam::kernels::master_t<T>>& opt, const ExecShape& s,
                    const std::vector<int32_t>& inputs, const std::vector<int32_t>& targets, int64_t step) {
  const glam::kernels::KernelContext ctx;
  auto tokens_of = [&](int64_t mb) {
    const int64_t first = (s.rank * s.microbatches + mb) * s.tokens();
    return MicroBatchTokens{inputs.data() + first, targets.data() + first};
  };
  StepLoss shares;
  for (const auto& pass : pipeline_layout(model.config(), s).program(s.stage)) {
    if (pass.forward)
      shares.add(model.forward_pass(pass.chunk, pass.microbatch, tokens_of(pass.microbatch), step));
    else
      model.backward_pass(pass.chunk, pass.microbatch, tokens_of(pass.microbatch));
  }
  model.wait_sends();
  model.allreduce_gradients();
  const StepLoss loss = model.reduce_pipeline_loss(shares);
  opt.update(ctx, model.params(), model.grads(), step, nullptr, model.slice_reduce());
  return loss;
}

// T: the activations. The slices add their partial products in another order than one rank's
// product: float64 agrees to 1e-10 elementwise (losses 1e-12) over two steps. bf16 rounds each partial
// product before the sum, which moves near-tied routing decisions after an update: one step, whose
// gradients must be as close (by tensor norms) to the float64 step's as the unsliced bf16 step's are.
template <class T>
void check_case(MpiCheck& check, const Case& c) {
  Communicator& world = check.world();
  using W = glam::kernels::master_t<T>;
  constexpr bool f64 = std::is_same_v<T, double>;
  const double loss_tol = f64 ? 1e-12 : 2e-3, grad_tol = f64 ? 1e-10 : 0.15, weight_tol = f64 ? 1e-10 : 1e-3;
  const int64_t steps = f64 ? 2 : 1;
  const int wr = world.rank();
  const glam::ModelConfig m = sliceable_model(c.tied);
  ExecShape sliced;
  sliced.seqs = 1, sliced.seq_len = m.seq_len, sliced.ranks = c.data_ranks, sliced.microbatches = c.microbatches;
  sliced.stages = c.stages, sliced.tp = c.tp;
  sliced.tp_rank = wr % c.tp;
  sliced.rank = (wr / c.tp) % c.data_ranks;
  sliced.stage = wr / (c.tp * c.data_ranks);
  if (sliced.world_rank() != wr) check.expect(false, c.name() + ": world rank formula");
  PipelineComms comms = make_pipeline_comms(world, sliced, c.tied);
  const auto batch = glam::testing::random_batch(c.data_ranks * c.microbatches * m.seq_len, m.vocab_size, 23);
  const std::string where =
      c.name() + ", stage " + std::to_string(sliced.stage) + ", slice " + std::to_string(sliced.tp_rank) + ": ";
  const glam::kernels::KernelContext ctx;

  ExecShape whole = sliced;
  whole.tp = 1, whole.tp_rank = 0, whole.stages = 1, whole.stage = 0;
  Transformer<T> ref(m, whole, comms.stage(), ctx);
  ref.init_params(5);
  AdafactorOptimizer<W> ref_opt(ref.layout());
  Transformer<T> model(m, sliced, comms.stage(), ctx, comms.links());
  model.init_params(5);
  AdafactorOptimizer<W> opt(model.layout());
  const double first = worst_difference(check, model.layout(), model.params(), ref.layout(), ref.params(), where);
  check.expect(first == 0, where + "initial weights differ from the reference's slices by " + std::to_string(first));

  for (int64_t step = 1; step <= steps; ++step) {
    const StepLoss want = train_step(ref, ref_opt, whole, batch.inputs, batch.targets, step);
    const StepLoss got = train_step(model, opt, sliced, batch.inputs, batch.targets, step);
    auto near = [&](double a, double b) { return std::abs(a - b) <= loss_tol * std::max(1.0, std::abs(b)); };
    check.expect(near(got.total, want.total) && near(got.ce, want.ce) && near(got.z, want.z) && near(got.aux, want.aux),
                 where + "step " + std::to_string(step) + " losses " + std::to_string(got.total) + " / aux " +
                     std::to_string(got.aux) + " against " + std::to_string(want.total) + " / " +
                     std::to_string(want.aux));
    check.expect(want.aux > 0, where + "the reference has no balancing loss");
  }
  const double grads = worst_difference(check, model.layout(), model.grads(), ref.layout(), ref.grads(), where, !f64);
  check.expect(grads < grad_tol, where + "last gradients differ by " + std::to_string(grads) + " (relative)");
  if constexpr (!f64) {
    Transformer<double> exact(m, whole, comms.stage(), ctx);
    exact.init_params(5);
    AdafactorOptimizer<double> exact_opt(exact.layout());
    train_step(exact, exact_opt, whole, batch.inputs, batch.targets, 1);
    const double sliced_error =
        worst_difference(check, model.layout(), model.grads(), exact.layout(), exact.grads(), where, true);
    const double whole_error =
        worst_difference(check, ref.layout(), ref.grads(), exact.layout(), exact.grads(), where, true);
    check.expect(sliced_error < 1.5 * whole_error, where + "gradients differ from float64's by " +
                                                       std::to_string(sliced_error) + ", the unsliced bf16 step's by " +
                                                       std::to_string(whole_error));
  }
  const double weights =
      worst_difference(check, model.layout(), model.params(), ref.layout(), ref.params(), where, !f64);
  check.expect(weights < weight_tol,
               where + "weights after the updates differ by " + std::to_string(weights) + " (relative)");

  // The slices hold every tensor exactly once: sliced ones in parts, whole ones on every slice (counted
  // on slice 0), the tied embedding's second copy (last stage) not counted.
  int64_t held = 0;
  for (const auto& p : model.layout().params)
    if ((p.sliced() || sliced.tp_rank == 0) && !(p.name == "embedding" && sliced.stage > 0)) held += p.elements();
  int64_t sums[2] = {held, ref.layout().total_elements};
  world.allreduce_sum(sums, 2);
  check.expect(sums[0] * c.stages * c.tp == sums[1], where + "the slices hold " + std::to_string(sums[0]) +
                                                         " elements, the model " +
                                                         std::to_string(sums[1] / (c.stages * c.tp)));
}

}  // namespace

int main() {
  return MpiCheck::run("tensor-parallel check", [](MpiCheck& check) {
    const Case cases[] = {
        {2, 2, 1, 2, true},        // two slices of two expert-parallel ranks
        {4, 1, 1, 1, false},       // four slices: one head, 4 hidden units, 2 expert units each
        {2, 1, 2, 4, true},        // two slices in two pipeline stages (scatter-gather sends)
        {2, 2, 1, 2, true, true},  // bf16
    };
    for (const Case& c : cases) {
      if (c.bf16)
        check_case<glam::kernels::bf16>(check, c);
      else
        check_case<double>(check, c);
    }
  });
}
