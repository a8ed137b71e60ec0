#pragma once
// Command-line options shared by `glamsim run` and `glamsim plan`: model, cluster, plan,
// batch, routing, fidelity and calibration, resolved into a SimulationInput with every
// check done before any simulation starts.
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/step_simulator.h"
#include "plan/default_plan.h"

namespace glam::cli {

struct ResolvedSimulation {
  SimulationInput input;
  std::string plan_note;  // how the plan was chosen
  std::vector<LayoutTrial> layouts;  // what the chooser compared; empty when the user fixed the plan
  double hbm_bytes = 0;  // usable per chip (HBM less the headroom)
  // --layouts: the table (text) or the array (json) of the layouts compared.
  std::string layouts_text() const;
  nlohmann::json layouts_json() const;
};

struct SimulationOptions {
  std::string model, cluster, plan_file, routing = "uniform", fidelity = "analytical", calibration, out_dir;
  std::string format = "text";
  std::string mapping = "auto";
  std::string attention = "auto";
  int64_t dp = 0, ep = 0, tp = 0, pp = 0, virtual_stages = 0, batch_tokens = 0, layers = 0, microbatches = 0;  // layers 0: all
  size_t flow_max_flows = 16384;
  double hbm_headroom = 0;
  bool shard_weights = false, shard_optimizer = false, recompute = false, sequence_parallel = false, no_sequence_parallel = false, allow_oom = false, quiet = false, list_layouts = false;
  bool with_cluster = true;
  bool with_layers = true;  // --layers (not for plan: a plan is a whole training run)

  void register_options(CLI::App& cmd, bool with_out_dir = true);
  // A plan file or an axis of the layout given (--dp, --ep, --tp, --pp, --virtual-stages, --microbatches).
  bool gives_a_layout() const { return !plan_file.empty() || dp || ep || tp || pp || virtual_stages || microbatches; }
  // A plan file, or dp and tp: the layout is fixed (the other axes take their defaults); else the chooser picks.
  bool fixes_layout() const { return !plan_file.empty() || (dp && tp); }
  // Loads and validates everything; throws ConfigError / UsageError.
  ResolvedSimulation resolve(bool show_progress) const;
  ResolvedSimulation resolve_for_cluster(const std::string& cluster_id, bool show_progress) const;
};

// "model: glam-8b-64e read from ./variant.toml, not the catalogue's glam-8b-64e\n" when the model
// file given keeps the id of a catalogue entry it is not (an edited copy), whose outputs would
// otherwise read as the catalogue model's; "" otherwise.
std::string edited_copy_note(const std::string& model_arg, const ModelConfig& m);

// What may make a fixed layout that does not fit in memory fit: the savings `plan` does not use yet,
// or glamsim's own choice of layout; then --allow-oom. Ends an error message.
std::string fitting_hint(const ParallelPlan& plan, bool from_plan_file);

// The profile a command runs with: the file's (empty: the chip kind's defaults), refused when it
// describes another kind of chip than the cluster's.
CalibrationProfile calibration_for(const std::string& file, const Cluster& cluster);

inline constexpr int64_t kDefaultBatchTokens = 1 << 20;  // GLaM: 1M-token batches

}  // namespace glam::cli
