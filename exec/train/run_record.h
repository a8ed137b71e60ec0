#pragma once
// The run record (JSON, schema "glam-run-record/1"): what the executor measured, per op id of
// the StepGraph, for the simulator's validation and calibration.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/op_timer.h"
#include "model/transformer.h"
#include "model_config.h"

namespace glam::exec {

struct RunDescription {
  const ModelConfig* model = nullptr;  // as run (layers possibly cut to layers_run)
  std::string model_file;
  int64_t layers_run = 0;
  int ranks = 1, dp = 1, ep = 1;  // ranks: all of them; dp, ep: within one pipeline stage
  int tp = 1;                     // tensor-parallel ranks per data-parallel rank
  int pp = 1, virtual_stages = 1;  // pipeline stages, and chunks per stage
  int64_t microbatches = 1;  // gradient accumulation passes per step
  std::string device_kind = "cpu", device_name, host;
  int threads = 1;
  int64_t batch_tokens = 0;  // one rank's tokens per step, all its micro-batches
  int64_t global_batch_tokens = 0, seq_len = 0, steps = 0, warmup_steps = 0;
  std::vector<double> step_times_s;  // timed steps only (with op_timing "alternate": those without op timers)
  std::vector<double> op_timed_step_times_s;  // op_timing "alternate": the steps that timed their ops
  std::string op_timing = "all";
  uint64_t seed = 0;      // initial weights, random routing, random tokens
  int64_t first_step = 1;  // update number of the first step (after --resume: the checkpoint's + 1)
  int64_t first_sequence = 0;  // the data's sequence where the first step starts (after --resume: the checkpoint's)
  std::vector<double> losses;        // every step
  std::vector<double> ce_losses;
  std::vector<MoeLayerStats> moe;    // summed over ranks and timed steps
  int64_t timed_steps = 0;
  std::string tokenizer, text;
};

// The timer's ops as the record lists them: id, median, p10, p90, FLOPs and bytes per step.
nlohmann::json timed_ops_json(const OpTimer& timer);

// `ops`: timed_ops_json of one rank of each pipeline stage, together (their ids name their stage).
nlohmann::json make_run_record(const RunDescription& run, const nlohmann::json& ops);

// The CPU's model name (/proc/cpuinfo) and the host name.
std::string cpu_model_name();
std::string host_name();

}  // namespace glam::exec
