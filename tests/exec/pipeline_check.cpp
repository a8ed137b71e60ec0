// Run under mpirun (ctest: 4 ranks on the 2 cores): pipelined training steps in float64 against the
// same step without stages. The world splits into stages of `stage_ranks` ranks; each such group
// first computes the reference step itself (every block, one stage, the same expert split), then runs
// as its stage of the pipeline, following the StepGraph's 1F1B (or interleaved) program. Each rank
// compares the gradients of the tensors it holds, by name, and every rank the step's losses and
// routing counts. Prints what failed and exits 1.
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
#include "support/random_batch.h"
#include "tiny_models.h"

namespace {

using namespace glam::exec;

// Four blocks (MoE every other one), random second-expert routing and a capacity that drops copies, so
// that routing depends on the step's global token indices.
glam::ModelConfig four_block_model(bool tied) {
  const std::string moe =
      std::string(glam::testing::kMicroMoe) + "second_expert_policy = \"random\"\nsecond_expert_threshold = 1.0\n";
  return glam::parse_model(glam::testing::micro_toml(moe, "gated", tied ? "" : "tied_embeddings = false", 4),
                           "pipeline-check.toml");
}

struct Case {
  int stages, virtual_stages, stage_ranks;
  int64_t microbatches;
  bool tied;
  bool bf16 = false;  // bf16 activations, float32 master weights (else float64 throughout)
  std::string name() const {
    return "pp " + std::to_string(stages) + " x v " + std::to_string(virtual_stages) + " x " +
           std::to_string(stage_ranks) + " rank(s), " + std::to_string(microbatches) + " micro-batches, " +
           (tied ? "tied" : "untied") + (bf16 ? ", bf16" : "");
  }
};

int64_t routing_total(const std::vector<MoeLayerStats>& st, int what) {
  int64_t n = 0;
  for (const auto& s : st) n += what == 0 ? s.routed : what == 1 ? s.dropped() : s.skipped;
  return n;
}

// T: the activations. The passes do the same arithmetic in the same order as the unpipelined step;
// only the sums over micro-batches of the tied embedding's two halves (logits and embedding
// gradients) and of the losses are added in another order: float64 to 1e-12 / 1e-10, bf16's float32
// master gradients to 1e-5.
template <class T>
void check_case(glam::testing::MpiCheck& check, const Case& c) {
  Communicator& world = check.world();
  constexpr bool f64 = std::is_same_v<T, double>;
  const double loss_tol = f64 ? 1e-12 : 1e-6, grad_tol = f64 ? 1e-10 : 1e-5;
  const int wr = world.rank();
  const glam::ModelConfig m = four_block_model(c.tied);
  ExecShape piped;
  piped.seqs = 1, piped.seq_len = m.seq_len, piped.ranks = c.stage_ranks, piped.microbatches = c.microbatches;
  piped.stages = c.stages, piped.virtual_stages = c.virtual_stages;
  piped.stage = wr / c.stage_ranks, piped.rank = wr % c.stage_ranks;
  const int stage = piped.stage;
  // The trainer's communicators: this stage's ranks (the reference's too) and the end stages'.
  PipelineComms comms = make_pipeline_comms(world, piped, c.tied);
  const glam::kernels::KernelContext ctx;
  const auto batch = glam::testing::random_batch(c.stage_ranks * c.microbatches * m.seq_len, m.vocab_size, 17);
  auto tokens_of = [&](const ExecShape& s, int64_t mb) {
    const int64_t first = (s.rank * s.microbatches + mb) * s.tokens();
    return MicroBatchTokens{batch.inputs.data() + first, batch.targets.data() + first};
  };
  const std::string where = c.name() + ", stage " + std::to_string(stage) + ": ";

  ExecShape s = piped;
  s.stages = 1, s.stage = 0, s.virtual_stages = 1;
  Transformer<T> ref(m, s, comms.stage(), ctx);
  ref.init_params(7);
  StepLoss ref_loss;
  std::vector<MoeLayerStats> ref_routing;
  for (int64_t mb = 0; mb < c.microbatches; ++mb) {
    const MicroBatchTokens t = tokens_of(s, mb);
    ref_loss.add(ref.run(t.inputs, t.targets, 3, true, nullptr, mb));
  }
  ref.allreduce_gradients();
  ref_routing = ref.step_moe_stats();

  s = piped;
  Transformer<T> pipe(m, s, comms.stage(), ctx, comms.links());
  pipe.init_params(7);
  StepLoss shares;
  for (const auto& pass : pipeline_layout(m, s).program(stage)) {
    if (pass.forward)
      shares.add(pipe.forward_pass(pass.chunk, pass.microbatch, tokens_of(s, pass.microbatch), 3));
    else
      pipe.backward_pass(pass.chunk, pass.microbatch, tokens_of(s, pass.microbatch));
  }
  pipe.wait_sends();
  pipe.allreduce_gradients();
  const StepLoss loss = pipe.reduce_pipeline_loss(shares);

  auto near = [&](double a, double b) { return std::abs(a - b) <= loss_tol * std::max(1.0, std::abs(b)); };
  check.expect(near(loss.total, ref_loss.total) && near(loss.ce, ref_loss.ce) && near(loss.z, ref_loss.z) &&
                   near(loss.aux, ref_loss.aux),
               where + "losses " + std::to_string(loss.total) + " / aux " + std::to_string(loss.aux) + " against " +
                   std::to_string(ref_loss.total) + " / " + std::to_string(ref_loss.aux));
  check.expect(ref_loss.aux > 0, where + "the reference has no balancing loss");

  // Gradients of the tensors this rank holds, against the reference's of the same name.
  std::map<std::string, const ParamInfo*> ref_params;
  for (const auto& p : ref.layout().params) ref_params[p.name] = &p;
  double worst = 0;
  int64_t held = 0;
  for (const auto& p : pipe.layout().params) {
    auto it = ref_params.find(p.name);
    if (it == ref_params.end() || it->second->elements() != p.elements()) {
      check.expect(false, where + "tensor " + p.name + " is not the reference's");
      continue;
    }
    const auto* g = pipe.grads() + p.offset;
    const auto* r = ref.grads() + it->second->offset;
    for (int64_t i = 0; i < p.elements(); ++i) {
      const double gi = static_cast<double>(g[i]), ri = static_cast<double>(r[i]);
      worst = std::max(worst, std::abs(gi - ri) / (1e-8 + std::abs(ri)));
    }
    // The tied embedding's second copy (last stage) is counted once.
    if (!(p.name == "embedding" && stage > 0)) held += p.elements();
  }
  check.expect(worst < grad_tol, where + "gradients differ by " + std::to_string(worst) + " (relative)");
  // The stages hold every tensor exactly once: their elements add up to the reference's.
  int64_t sums[2] = {held, ref.layout().total_elements};
  world.allreduce_sum(sums, 2);
  check.expect(sums[0] * c.stages == sums[1], where + "the stages hold " + std::to_string(sums[0]) +
                                                  " elements, the model " + std::to_string(sums[1] / c.stages));

  // Routing: the stages' counts together are the reference's (each group computed it once).
  std::vector<MoeLayerStats> routing = pipe.step_moe_stats();
  for (int what = 0; what < 3; ++what) {
    int64_t v[2] = {routing_total(routing, what), routing_total(ref_routing, what)};
    world.allreduce_sum(v, 2);
    check.expect(v[0] * c.stages == v[1] && v[1] > 0, where + "routing count " + std::to_string(what) + ": " +
                                                          std::to_string(v[0] * c.stages) + " against " +
                                                          std::to_string(v[1]));
  }
}

}  // namespace

int main() {
  return glam::testing::MpiCheck::run("pipeline check", [](glam::testing::MpiCheck& check) {
    const Case cases[] = {
        {2, 1, 2, 4, true},        // two stages of two expert-parallel ranks
        {4, 1, 1, 4, true},        // one block per stage
        {4, 1, 1, 2, false},       // fewer micro-batches than stages
        {2, 2, 2, 4, false},       // interleaved: chunks 0 and 2 on stage 0
        {2, 2, 2, 2, true},        // interleaved, one group of micro-batches (all forward passes first)
        {2, 2, 2, 4, true, true},  // bf16: per-slot bf16 loss gradients, one float32 logits chunk
    };
    for (const Case& c : cases) {
      if (c.bf16)
        check_case<glam::kernels::bf16>(check, c);
      else
        check_case<double>(check, c);
    }
  });
}
