#include "plan/default_plan.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <system_error>
#include <thread>

#include <sched.h>

#include "common/errors.h"
#include "common/text_table.h"

namespace glam {

int64_t fitting_microbatches(const ParallelPlan& plan, const ModelConfig& m, double usable_hbm_bytes) {
  const int64_t sequences = plan.tokens_per_rank() / m.seq_len;
  for (int64_t mb = 1; mb <= std::min(sequences, kMaxMicrobatches); mb *= 2) {
    if (sequences % mb) break;
    ParallelPlan p = plan;
    p.microbatches = mb;
    if (plan_memory(m, p).total_bytes() <= usable_hbm_bytes) return mb;
  }
  return plan.microbatches;
}

int64_t pipeline_microbatches(const ParallelPlan& plan, const ModelConfig& m) {
  const int64_t sequences = plan.tokens_per_rank() / m.seq_len;
  int64_t mb = 1;
  while (mb * 2 <= std::min(4 * plan.pp, kMaxMicrobatches) && sequences % (mb * 2) == 0) mb *= 2;
  return mb;
}

namespace {

// The user's value when given (whatever it is), else the powers of two up to `most`.
std::vector<int64_t> given_or_powers_of_two(int64_t given, int64_t most) {
  if (given) return {given};
  std::vector<int64_t> out;
  for (int64_t v = 1; v <= most; v *= 2) out.push_back(v);
  return out;
}

// The largest expert parallelism below `ep` a layout may take: a divisor of the experts that divides
// dp (0: none). Fewer ranks per expert group replicate the experts over dp / ep (more memory, more
// gradient reduction) but keep the all-to-all in a smaller group, inside a node where it fits.
int64_t smaller_expert_parallelism(const ModelConfig& m, int64_t dp, int64_t ep) {
  for (int64_t e = ep - 1; e >= 1; --e)
    if (m.experts % e == 0 && dp % e == 0) return e;
  return 0;
}

// Whether to try the optimizer whole, sharded over dp (ZeRO-1), or both: sharded where there are dp
// ranks to shard over, weights not sharded already, and something worth sharding, a master copy
// beside the weights the products read (GPU clusters) or Adam's moments (Adafactor's factored moments
// alone are a few MiB); asked for, sharded wherever it can be.
std::vector<bool> optimizer_shardings(const ParallelPlan& base, const ModelConfig& m, int64_t dp, bool shard_weights) {
  if (shard_weights || dp < 2) return {false};
  if (base.shard_optimizer) return {true};
  if (base.narrow_weight_copy || m.optimizer == "adam") return {false, true};
  return {false};
}

// The cores this process may run on (its CPU affinity), at most 16: each simulation of a 4,096-chip
// step holds about 40 MB.
size_t usable_cores() {
  size_t cores = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) cores = static_cast<size_t>(std::max(1, CPU_COUNT(&set)));
  return std::min<size_t>(cores, 16);
}

// Simulates every fitting layout at analytical fidelity and fills in its figures, as many at once as
// the host has cores (the figures do not depend on how many).
void simulate_layouts(const SimulationInput& in, std::span<LayoutTrial> trials) {
  std::vector<LayoutTrial*> todo;
  for (LayoutTrial& t : trials)
    if (t.fits) todo.push_back(&t);
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> failures(todo.size());
  auto work = [&] {
    for (size_t i; (i = next++) < todo.size();) {
      LayoutTrial& trial = *todo[i];
      try {
        SimulationInput trial_input = in;  // (shares in's routed schedules)
        trial_input.plan = trial.plan;
        trial_input.fidelity = Fidelity::kAnalytical;
        trial_input.progress = nullptr;
        const StepResult r = simulate_step(trial_input);
        trial.step_time_s = r.step_time_s, trial.compute_s = r.compute_s, trial.exposed_comm_s = r.exposed_comm_s;
        trial.pipeline_bubble_s = r.pipeline_bubble_s, trial.alltoall_s = r.alltoall_s, trial.mfu = r.mfu;
      } catch (...) {
        failures[i] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < std::min(todo.size(), usable_cores()); ++t) {
    try {
      pool.emplace_back(work);
    } catch (const std::system_error&) {  // no more threads: the ones running share the work
      break;
    }
  }
  work();
  for (auto& t : pool) t.join();
  for (const auto& f : failures)
    if (f) std::rethrow_exception(f);
}

}  // namespace

int64_t default_expert_parallelism(const ModelConfig& m, int64_t dp) {
  return m.is_moe() ? smaller_expert_parallelism(m, dp, std::min(m.experts, dp) + 1) : 1;
}

PlanChoice choose_plan(const SimulationInput& in, const ParallelPlan& base, bool allow_oom) {
  const int64_t n = in.cluster.num_chips();
  const ModelConfig& m = in.model;
  const ModelConfig held = in.model_held();  // whose memory must fit
  const int64_t max_tp = std::min<int64_t>(in.cluster.chips_per_node() > 1 ? in.cluster.chips_per_node() : 16, m.heads);
  // Every valid layout, with the user's micro-batch count or one.
  std::vector<ParallelPlan> layouts;
  // Why the widest and the narrowest dp were refused (each different as a rule): what to change.
  struct Refusal {
    int64_t dp = 0;
    std::string layout, why;
  };
  std::optional<Refusal> widest, narrowest;
  for (int64_t tp = 1; tp <= max_tp; tp *= 2)
    for (int64_t pp : given_or_powers_of_two(base.pp, kMaxChosenStages)) {
      if ((base.tp && tp != base.tp) || n % (tp * pp) || m.layers % pp) continue;
      const int64_t dp = n / (tp * pp);
      if (base.dp && dp != base.dp) continue;
      const int64_t ep = base.ep ? base.ep : default_expert_parallelism(m, dp);
      // Interleaving (v chunks per stage) when there are stages to interleave.
      const std::vector<int64_t> chunk_counts =
          given_or_powers_of_two(base.virtual_stages, pp > 1 ? kMaxChosenVirtualStages : 1);
      for (int64_t v : chunk_counts)
        // Pipelines keep whole weights per stage unless the user asks for sharded ones: a stage would
        // gather them for every micro-batch. That rarely wins, and searching it triples the layouts
        // simulated (GLaM 64B/64E on tpu-v4-1024: 78 instead of 23, 0.7 s -> 5.6 s), though it can
        // (glam-8b-64e on tpu-v4-64 at 262,144 tokens: 2% faster). A sharded optimizer (ZeRO-1) gathers
        // once per step, so pipelines try it too. Recomputation and the shardings the user asked for are
        // in every layout. With dp = 1 there is nothing to shard over: that layout is the unsharded one.
        for (int shard = base.shard_weights ? 1 : 0;
             shard < (base.shard_optimizer || ((pp > 1 || dp < 2) && !base.shard_weights) ? 1 : 2); ++shard)
          for (bool optimizer : optimizer_shardings(base, m, dp, shard))
            for (int recompute = base.recompute ? 1 : 0; recompute < 2; ++recompute) {
              ParallelPlan p = base;
              p.dp = dp, p.tp = tp, p.pp = pp, p.virtual_stages = v, p.ep = ep, p.shard_weights = shard,
              p.shard_optimizer = optimizer, p.recompute = recompute;
              p.microbatches = base.microbatches ? base.microbatches : pp > 1 ? pipeline_microbatches(p, m) : 1;
              try {
                validate_plan(p, m, in.cluster);
              } catch (const UsageError& e) {
                // (A chunk count the model does not allow is no reason to report.)
                if (v == chunk_counts.front()) {
                  const Refusal r{dp, plan_short_label(p), e.what()};
                  if (!widest || dp > widest->dp) widest = r;
                  if (!narrowest || dp < narrowest->dp) narrowest = r;
                }
                continue;
              }
              layouts.push_back(p);
            }
    }
  if (layouts.empty()) {
    std::string why;
    if (!widest)  // no tp the chooser tries gives the dp (and tp) asked for
      why = "dp x tp x pp must be the " + format_chips(n) + ", with tp a power of two up to " +
            std::to_string(max_tp) + " and pp dividing the " + std::to_string(m.layers) + " blocks (" +
            (base.pp ? "" : "a power of two up to " + std::to_string(kMaxChosenStages) + ", ") +
            "leaving a whole dp)" + (base.dp ? " (--dp " + std::to_string(base.dp) + ")" : "") +
            (base.tp ? " (--tp " + std::to_string(base.tp) + ")" : "") +
            (base.pp ? " (--pp " + std::to_string(base.pp) + ")" : "");
    else if (widest->why == narrowest->why)  // the model's own constraint
      why = widest->why;
    else
      why = widest->layout + ": " + widest->why + " (the widest dp); " + narrowest->layout + ": " + narrowest->why +
            " (the narrowest)";
    throw LayoutDoesNotApply("no parallel layout of " + m.id + " on " + in.cluster.id() + " is valid; " + why);
  }

  // Layouts with the same groups route the same collectives: route each once for the whole search.
  SimulationInput search = in;
  if (!search.routed_schedules) search.routed_schedules = std::make_shared<RoutedScheduleCache>(in.cluster);
  PlanChoice best;
  best.candidates = static_cast<int>(layouts.size());
  double best_time = std::numeric_limits<double>::infinity();
  std::optional<ParallelPlan> smallest;
  double smallest_bytes = std::numeric_limits<double>::infinity();
  // `fallback`: the plan --allow-oom simulates when nothing fits is the smallest of the layouts as
  // generated, before micro-batches are added to make them fit (a pipeline's own are kept).
  double smallest_any = std::numeric_limits<double>::infinity();
  // The least any layout holds in weights, gradients and optimizer state: beyond HBM, no batch fits.
  double smallest_state = std::numeric_limits<double>::infinity();
  // Each batch of layouts: footprints first, then the fitting ones simulated side by side (each
  // simulation is independent), then the fastest taken in the order they were generated.
  auto consider = [&](const std::vector<ParallelPlan>& plans, bool fallback) {
    const size_t first = best.trials.size();
    for (const ParallelPlan& p : plans) {
      LayoutTrial& trial = best.trials.emplace_back();
      trial.plan = p;
      const MemoryFootprint fp = plan_memory(held, p);
      const double bytes = trial.memory_bytes = fp.total_bytes();
      smallest_any = std::min(smallest_any, bytes);
      smallest_state = std::min(smallest_state, fp.weights_bytes + fp.gradients_bytes + fp.optimizer_bytes);
      if (fallback && bytes < smallest_bytes) smallest_bytes = bytes, smallest = p;
      trial.fits = bytes <= in.usable_hbm_bytes();
      best.fitting += trial.fits ? 1 : 0;
    }
    simulate_layouts(search, std::span<LayoutTrial>(best.trials).subspan(first));
    for (size_t i = first; i < best.trials.size(); ++i)
      if (best.trials[i].fits && best.trials[i].step_time_s < best_time)
        best_time = best.trials[i].step_time_s, best.plan = best.trials[i].plan;
  };
  consider(layouts, true);
  // Layouts that do not fit in one pass (or in the pipeline's micro-batches) again with gradient
  // accumulation, the fewest micro-batches that fit: it shrinks every product and, with sharded
  // weights, gathers them once per micro-batch, but a layout that needs it can still be the fastest
  // (glam-1.7b-64e on dgx-h100-8: dp 8 in 16 micro-batches, 3.85 s, against 5.66 s for the best
  // layout fitting without).
  if (base.microbatches == 0) {
    std::vector<ParallelPlan> retries;
    for (ParallelPlan p : layouts) {
      const int64_t tried = p.microbatches;
      p.microbatches = std::max(tried, fitting_microbatches(p, held, in.usable_hbm_bytes()));
      if (p.microbatches == 1 && best.fitting == 0) {
        // Nothing fits even in one pass: the smallest footprint micro-batching reaches, for the
        // message. (A layout that fits in no micro-batch count is not listed twice otherwise.)
        const int64_t sequences = p.tokens_per_rank() / m.seq_len;
        while (sequences % (p.microbatches * 2) == 0 && p.microbatches * 2 <= kMaxMicrobatches) p.microbatches *= 2;
      }
      if (p.microbatches > tried) retries.push_back(p);
    }
    consider(retries, false);
    best.candidates = static_cast<int>(best.trials.size());  // the micro-batched retries were considered too
  }
  // Smaller expert groups, where the chooser picks ep. Where every expert computes the same number of
  // tokens (capacity-padded dispatch, or uniform routing), a smaller group can at best save the
  // all-to-all, for the same products and more gradient reduction: each fitting layout whose step less
  // its all-to-all time beats the best steps down to the next smaller ep while that is faster
  // (glam-1.7b-64e on dgx-a100-64: ep 64 1.63 s, ep 32 1.58 s), and also tries ep 1, no all-to-all at
  // all (glam-0.1b-64e on dgx-h100-64: ep 64 0.124 s, ep 1 0.100 s; on tpu-v4-64 the step times do not
  // fall steadily on the way there). On GPU clusters it also tries the largest group inside one node,
  // whose all-to-all stays on NVLink: the step times need not fall steadily down to it either
  // (glam-0.1b-64e on dgx-h100-64, 2^19 tokens: ep 32 63.3 ms, ep 16 64.0 ms, ep 8 61.2 ms). With kept
  // (dropless) dispatch and uneven routing a smaller group also evens out the hottest rank's experts,
  // in no steady way: every fitting layout tries every ep.
  if (!base.ep && m.is_moe()) {
    const bool products_fixed = m.padded_dispatch() || in.routing.kind == "uniform";
    std::set<std::string> seen;
    for (const LayoutTrial& t : best.trials) seen.insert(plan_short_label(t.plan));
    auto with_ep = [&](const LayoutTrial& t, int64_t ep) -> std::optional<ParallelPlan> {
      if (!t.fits || ep < 1 || (products_fixed && t.step_time_s - t.alltoall_s >= best_time)) return std::nullopt;
      ParallelPlan p = t.plan;
      p.ep = ep;
      if (base.microbatches == 0) p.microbatches = std::max(p.microbatches, fitting_microbatches(p, held, in.usable_hbm_bytes()));
      try {
        validate_plan(p, m, in.cluster);
      } catch (const UsageError&) {
        return std::nullopt;
      }
      if (!seen.insert(plan_short_label(p)).second) return std::nullopt;
      return p;
    };
    std::vector<size_t> parents;
    for (size_t i = 0; i < best.trials.size(); ++i) parents.push_back(i);
    for (bool first_round = true; !parents.empty(); first_round = false) {
      std::vector<ParallelPlan> stepping;  // one ep down, to step further while faster
      std::vector<double> parent_times;
      std::vector<ParallelPlan> others;    // ep 1, or every ep when the products vary with it
      for (size_t i : parents) {
        const LayoutTrial& t = best.trials[i];
        const int64_t next = smaller_expert_parallelism(m, t.plan.dp, t.plan.ep);
        if (!products_fixed) {
          for (int64_t ep = next; ep >= 1; ep = smaller_expert_parallelism(m, t.plan.dp, ep))
            if (auto p = with_ep(t, ep)) others.push_back(*p);
          continue;
        }
        if (auto p = with_ep(t, next)) stepping.push_back(*p), parent_times.push_back(t.step_time_s);
        if (first_round) {
          if (auto p = with_ep(t, 1)) others.push_back(*p);
          int64_t in_node = t.plan.ep;  // expert groups are tp-wide ranks side by side
          while (in_node > 1 && in_node * t.plan.tp > in.cluster.chips_per_node())
            in_node = smaller_expert_parallelism(m, t.plan.dp, in_node);
          if (in.cluster.chips_per_node() > 1 && in_node < next)
            if (auto p = with_ep(t, in_node)) others.push_back(*p);
        }
      }
      const size_t first = best.trials.size();
      const size_t stepped = stepping.size();
      stepping.insert(stepping.end(), others.begin(), others.end());
      consider(stepping, false);  // in one batch: simulated side by side
      parents.clear();
      for (size_t k = 0; k < stepped; ++k)
        if (best.trials[first + k].fits && best.trials[first + k].step_time_s < parent_times[k]) parents.push_back(first + k);
    }
    best.candidates = static_cast<int>(best.trials.size());
  }
  // Stable: equal layouts keep the order they were generated in, so the chosen one (the first of
  // the fastest) comes first.
  std::stable_sort(best.trials.begin(), best.trials.end(), [](const LayoutTrial& a, const LayoutTrial& b) {
    if (a.fits != b.fits) return a.fits;
    return a.fits ? a.step_time_s < b.step_time_s : a.memory_bytes < b.memory_bytes;
  });
  if (best.fitting == 0) {
    if (!allow_oom) {
      const std::string advice =
          smallest_state > in.usable_hbm_bytes()
              ? " (weights, gradients and optimizer state alone need at least " + format_bytes(smallest_state) +
                    ": use more chips, or --allow-oom to simulate it anyway)"
              : " (use more chips, a smaller batch, or --allow-oom to simulate it anyway)";
      throw PlanDoesNotFit("no parallel layout of " + m.id + " fits " + in.cluster.id() + ": the smallest needs " +
                               format_bytes(smallest_any) + " per chip, HBM holds " + format_bytes(in.usable_hbm_bytes()) +
                               usable_hbm_note(in) + advice,
                           smallest_any, in.usable_hbm_bytes());
    }
    best.plan = *smallest;
  }
  return best;
}

}  // namespace glam
