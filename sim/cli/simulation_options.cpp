#include "cli/simulation_options.h"

#include <filesystem>
#include <iostream>

#include "common/catalogue.h"
#include "common/cli_checks.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "compute/calibration_profile.h"
#include "plan/default_plan.h"
#include "report/layout_report.h"

namespace glam::cli {

void SimulationOptions::register_options(CLI::App& cmd, bool with_out_dir) {
  cmd.add_option("--model", model, "Model id or TOML file")->required();
  if (with_cluster) cmd.add_option("--cluster", cluster, "Cluster id or TOML file")->required();
  auto* plan = cmd.add_option("--plan", plan_file,
                              "Plan file (TOML: dp, ep, tp, pp, virtual_stages, batch_tokens, shard_weights, shard_optimizer, "
                              "sequence_parallel, recompute, mapping, microbatches, overlap_grad_reduction, attention)");
  cmd.add_option("--dp", dp, "Data-parallel width")->excludes(plan)->transform(cli_checks::integer_at_least(1));
  cmd.add_option("--ep", ep, "Expert-parallel width (divides dp and the experts; default: the chooser's, or with --dp and --tp the largest such)")->excludes(plan)->transform(cli_checks::integer_at_least(1));
  cmd.add_option("--tp", tp, "Tensor-parallel width")->excludes(plan)->transform(cli_checks::integer_at_least(1));
  cmd.add_option("--pp", pp, "Pipeline stages (1F1B; default: what --dp x --tp leave of the chips, else the chooser's)")
      ->excludes(plan)
      ->transform(cli_checks::integer_at_least(1));
  cmd.add_option("--virtual-stages", virtual_stages,
                 "Chunks of blocks per pipeline stage, for the interleaved 1F1B schedule (default: 1 when the layout "
                 "is given, else the chooser's)")
      ->excludes(plan)
      ->transform(cli_checks::integer_at_least(1));
  auto* zs = cmd.add_flag("--shard-weights", shard_weights,
                          "Shard weights over data parallelism too, experts over dp / ep (ZeRO-3 / GSPMD 2D; the "
                          "chooser then shards them in every layout)")
                 ->excludes(plan);
  cmd.add_flag("--shard-optimizer", shard_optimizer,
               "Shard the optimizer over data parallelism (ZeRO-1, Megatron-LM's distributed optimizer): master "
               "weights and optimizer state, gradients reduce-scattered, the updated weights all-gathered once per "
               "step (the chooser then shards it in every layout with dp > 1, and weights in none; it also tries it "
               "where there is more than Adafactor's state to shard: on GPU clusters, or with Adam)")
      ->excludes(plan)
      ->excludes(zs);
  auto* sp = cmd.add_flag("--sequence-parallel", sequence_parallel,
                          "With tp > 1, Megatron-LM's sequence parallelism: norms and router on 1/tp of the tokens, "
                          "all-gather and reduce-scatter for the tp all-reduces, 1/tp of the all-to-all per tp chip "
                          "(the chooser then uses it in every layout; default: on for MoE models on GPU clusters, as "
                          "Megatron-Core requires with tp > 1, off on TPU pods; glamexec does not run it)")
                 ->excludes(plan);
  cmd.add_flag("--no-sequence-parallel", no_sequence_parallel,
               "No sequence parallelism, also on GPU clusters (the tp all-reduces whole, every tp chip sending every "
               "token through the all-to-all)")
      ->excludes(plan)
      ->excludes(sp);
  cmd.add_option("--attention", attention,
                 "fused (one FlashAttention kernel: the [S, S] scores stay on chip, the backward pass recomputes "
                 "them), materialised (products and softmax over the scores in memory, as glamexec and XLA run them) "
                 "or auto: fused on GPU clusters, materialised on TPU pods")
      ->check(CLI::IsMember({"auto", "fused", "materialised"}))
      ->excludes(plan);
  cmd.add_flag("--recompute", recompute, "Recompute activations in the backward pass (the chooser then recomputes in every layout)")->excludes(plan);
  cmd.add_option("--mapping", mapping, "Ranks onto chips: auto (compact torus blocks) or linear (chip order)")
      ->check(CLI::IsMember({"auto", "linear"}))
      ->excludes(plan);
  cmd.add_option("--microbatches", microbatches,
                 "Gradient accumulation passes per step (default: the fewest that fit in memory; with pipeline "
                 "stages, up to 4 per stage)")
      ->excludes(plan)
      ->transform(cli_checks::integer_at_least(1, kMaxMicrobatches));
  cmd.add_option("--batch-tokens", batch_tokens, "Global tokens per step (default 1,048,576)")
      ->transform(cli_checks::integer_at_least(1, kMaxBatchTokens));
  cmd.add_option("--routing", routing, "uniform, skew=X (Zipf exponent) or a routing histogram / run record file");
  cmd.add_option("--fidelity", fidelity, "analytical or flow");
  cmd.add_option("--flow-max-flows", flow_max_flows,
                 "Largest phase (concurrent flows) played in SimGrid; larger ones are costed analytically")
      ->transform(cli_checks::integer_at_least(1));
  cmd.add_option("--calibration", calibration, "Calibration profile (TOML) from glamexec calibrate");
  if (with_layers)
    cmd.add_option("--layers", layers,
                   "Simulate only the first K blocks, as glamexec --layers runs them: their step and the memory "
                   "they hold (the output says so)")
        ->transform(cli_checks::integer_at_least(1));
  cmd.add_flag("--allow-oom", allow_oom, "Simulate a plan even if it does not fit in memory");
  cmd.add_option("--hbm-headroom", hbm_headroom,
                 "Share of each chip's HBM a plan leaves free beyond the runtime's reserve (the chip's "
                 "runtime_reserved_bytes: 2 GiB on GPUs, 0 on TPUs), for more margin: 0 to 0.9 (default 0)")
      ->transform(cli_checks::number_between(0, 0.9));
  cmd.add_flag("--layouts", list_layouts,
               "Also list every layout the plan chooser compared: memory per chip, step time, MFU");
  if (with_out_dir)
    cmd.add_option("--out", out_dir, "Write config.json, stats.txt, trace.json, layers.csv and host.txt here")
        ->check(cli_checks::output_path("a folder name"));
  cmd.add_option("--format", format, "text (or table) or json")->transform(cli_checks::output_format());
  cmd.add_flag("--quiet", quiet, "No progress messages");
}

std::string edited_copy_note(const std::string& model_arg, const ModelConfig& m) {
  namespace fs = std::filesystem;
  const fs::path given = resolve_catalogue_entry("models", model_arg);
  const fs::path entry = catalogue_dir("models") / (m.id + ".toml");
  std::error_code ec;
  if (!fs::exists(entry, ec) || fs::equivalent(given, entry, ec)) return "";
  return "model: " + m.id + " read from " + given.string() + ", not the catalogue's " + m.id +
         " (give the copy an id of its own to tell them apart)\n";
}

std::string fitting_hint(const ParallelPlan& plan, bool from_plan_file) {
  // Micro-batches are not offered: a fixed layout already gets as many as fitting it takes. A plan
  // file's settings are its keys (the command line's flags are refused beside --plan).
  auto setting = [&](const char* key, const char* flag) {
    return from_plan_file ? std::string(key) + " = true" : std::string(flag);
  };
  std::string savings = !plan.shard_weights && !plan.shard_optimizer
                            ? setting("shard_weights", "--shard-weights") + " or " + setting("shard_optimizer", "--shard-optimizer")
                            : "";
  if (!plan.recompute) savings += std::string(savings.empty() ? "" : ", or ") + setting("recompute", "--recompute");
  if (!savings.empty()) savings += from_plan_file ? " in the plan file may make it fit, or " : " may make it fit, or ";
  return "; " + savings +
         (from_plan_file ? "leave out --plan for a layout glamsim chooses to fit"
                         : "leave out --dp/--tp for a layout glamsim chooses to fit") +
         "; --allow-oom simulates it anyway";
}

CalibrationProfile calibration_for(const std::string& file, const Cluster& cluster) {
  CalibrationProfile profile = file.empty() ? default_profile(cluster.chip().kind) : load_profile(file);
  if (profile.device != cluster.chip().kind)
    throw UsageError("calibration profile " + profile.source + " describes " + profile.device + " chips, but " +
                     cluster.id() + " has " + cluster.chip().kind + " chips");
  return profile;
}

ResolvedSimulation SimulationOptions::resolve(bool show_progress) const {
  return resolve_for_cluster(cluster, show_progress);
}

ResolvedSimulation SimulationOptions::resolve_for_cluster(const std::string& cluster_id, bool show_progress) const {
  // Parse everything first so that bad input fails before any work.
  Fidelity fid = parse_fidelity(fidelity);
  RoutingSpec spec = parse_routing_spec(routing);
  ModelConfig m = load_model(model);
  Cluster c = load_cluster(cluster_id);
  CalibrationProfile profile = calibration_for(calibration, c);
  ParallelPlan base;
  // A plan file's sequence_parallel or the flags decide; else the cluster's convention.
  std::optional<bool> sequence_parallel_given;
  if (!plan_file.empty()) {
    PlanFile file = load_plan_file(plan_file);
    base = file.plan, sequence_parallel_given = file.sequence_parallel;
  } else {
    base.dp = dp, base.ep = ep, base.tp = tp, base.pp = pp, base.virtual_stages = virtual_stages, base.shard_weights = shard_weights,
    base.shard_optimizer = shard_optimizer, base.recompute = recompute, base.mapping = mapping, base.microbatches = microbatches;
    base.attention = attention;
    if (sequence_parallel || no_sequence_parallel) sequence_parallel_given = sequence_parallel;
  }
  apply_cluster_conventions(base, m, c, sequence_parallel_given);
  if (batch_tokens && base.batch_tokens && batch_tokens != base.batch_tokens)
    throw UsageError("--batch-tokens " + std::to_string(batch_tokens) + ": the plan file " + plan_file +
                     " sets batch_tokens = " + std::to_string(base.batch_tokens) + "; give the batch in one place");
  if (batch_tokens) base.batch_tokens = batch_tokens;
  if (!base.batch_tokens) base.batch_tokens = kDefaultBatchTokens;
  if (layers > m.layers)
    throw UsageError("--layers " + std::to_string(layers) + ": " + m.id + " has " + std::to_string(m.layers) + " blocks");
  if (layers > 0 && (base.pp > 1 || base.virtual_stages > 1))
    throw UsageError("--layers " + std::to_string(layers) + " simulates the first blocks of " + m.id +
                     " on one pipeline stage: use pp = 1 and virtual_stages = 1");
  if (layers > 0) base.pp = 1, base.virtual_stages = 1;  // the chooser keeps to one stage too
  if (spec.kind != "uniform" && !m.is_moe())
    throw UsageError("--routing " + routing + ": " + m.id + " is dense (no experts to route to)");
  SimulationInput in{m, c, base, spec, fid, profile, layers, flow_max_flows};
  in.hbm_headroom = hbm_headroom;
  // Checks the routing file against the model now rather than mid-simulation.
  int moe_blocks = 0;
  for (int64_t l = 0; l < (layers > 0 ? std::min(layers, m.layers) : m.layers); ++l) moe_blocks += m.is_moe_layer(l);
  expert_routing(spec, m, moe_blocks);

  ResolvedSimulation out{in, ""};
  // dp and tp fix a layout: the other axes take their defaults, not the chooser's picks.
  if (list_layouts && fixes_layout())
    throw UsageError("--layouts lists the layouts glamsim compares when it chooses the plan, but " +
                     std::string(plan_file.empty() ? "--dp and --tp" : "--plan " + plan_file) +
                     " fix the layout: leave out an axis to compare the others");
  if (fixes_layout()) {
    if (!base.ep) out.input.plan.ep = default_expert_parallelism(m, base.dp);
    // dp and tp given without pp: the stages are what the chips leave (one when dp x tp fills them).
    if (!base.virtual_stages) out.input.plan.virtual_stages = 1;
    if (!base.pp) {
      const int64_t n = c.num_chips(), replica = base.dp <= n && base.tp <= n ? base.dp * base.tp : 0;
      out.input.plan.pp = replica > 0 && n % replica == 0 ? n / replica : 1;
    }
    const bool choose_micro = base.microbatches == 0;  // not given on the command line nor in the plan file
    out.input.plan.microbatches = std::max<int64_t>(1, out.input.plan.microbatches);
    // A pipeline needs micro-batches to fill its stages.
    if (choose_micro && out.input.plan.pp > 1 && out.input.plan.dp <= out.input.plan.batch_tokens / m.seq_len)
      out.input.plan.microbatches = pipeline_microbatches(out.input.plan, m);
    try {
      validate_plan(out.input.plan, m, c);
    } catch (const UsageError& e) {  // a plan file's layout: the message names the file
      throw LayoutDoesNotApply(plan_file.empty() ? std::string(e.what()) : plan_file + ": " + e.what());
    }
    // A fixed layout that does not fit in one pass gets the fewest micro-batches that make it fit.
    const ModelConfig held = in.model_held();
    if (choose_micro && plan_memory(held, out.input.plan).total_bytes() > out.input.usable_hbm_bytes())
      out.input.plan.microbatches =
          std::max(out.input.plan.microbatches, fitting_microbatches(out.input.plan, held, out.input.usable_hbm_bytes()));
    out.plan_note = "";
  } else {
    if (show_progress) std::cerr << "glamsim: choosing a parallel layout...\r" << std::flush;
    PlanChoice choice = choose_plan(in, base, allow_oom);
    out.input.plan = choice.plan;
    out.layouts = std::move(choice.trials);
    out.hbm_bytes = out.input.usable_hbm_bytes();
    out.plan_note = choice.fitting > 0
                        ? "\nplan chosen by glamsim: fastest of " + std::to_string(choice.fitting) + " layouts that fit (" +
                              std::to_string(choice.candidates) + " considered)"
                        : "\nplan chosen by glamsim: none of the " + std::to_string(choice.candidates) +
                              " layouts considered fits; --allow-oom simulates the one with the smallest footprint "
                              "before micro-batches were added to fit (a pipeline keeps its own)";
    // The layouts are compared analytically: at flow fidelity only the chosen one is played in SimGrid,
    // so its flow step is not the figure the runner-up is set beside.
    const bool compared_analytically = fid != Fidelity::kAnalytical && choice.fitting > 0;
    if (compared_analytically)
      out.plan_note +=
          ", compared at analytical fidelity (this one: " + format_seconds(out.layouts[0].step_time_s) + ")";
    // How close the choice was: the next fastest layout (--layouts lists them all).
    if (choice.fitting > 1) {
      const LayoutTrial& best = out.layouts[0], &next = out.layouts[1];  // choice.trials, moved there
      out.plan_note += "; the runner-up, " + plan_short_label(next.plan) + ", steps in " +
                       format_seconds(next.step_time_s) + (compared_analytically ? " analytical" : "") + " (+" +
                       format_fixed(100 * (next.step_time_s / best.step_time_s - 1), 1) + "%)";
    }
    out.plan_note += "; override with --dp/--ep/--tp/--pp/--virtual-stages or --plan\n";
  }
  return out;
}

std::string ResolvedSimulation::layouts_text() const {
  return glam::layouts_text(layouts, input.plan, hbm_bytes);
}

nlohmann::json ResolvedSimulation::layouts_json() const { return glam::layouts_json(layouts, input.plan); }

}  // namespace glam::cli
