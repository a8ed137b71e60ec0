#pragma once
// Reads an executor run record (glamexec train --record), schema "glam-run-record/1".
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_config.h"

namespace glam {

inline constexpr const char* kRunRecordSchema = "glam-run-record/1";

struct MeasuredOp {
  std::string id;
  double median_s = 0, p10_s = 0, p90_s = 0;
};

struct RunRecord {
  std::string file;
  ModelConfig model;
  int64_t layers_run = 0;  // 0: all of the model's layers
  // The model as the run held it: its first layers_run blocks, or all of them.
  ModelConfig model_run() const { return first_layers(model, layers_run); }
  int64_t ranks = 1, dp = 1, ep = 1, tp = 1;
  int64_t microbatches = 1;  // gradient accumulation passes per step (records before them: 1)
  int64_t pp = 1, virtual_stages = 1;  // pipeline stages and chunks per stage (dp, ep: within a stage)
  std::string device_kind;  // "cpu" or "cuda"
  std::string device_name;
  std::string host;  // the host's name (empty: not recorded)
  int threads = 0;
  int host_cores = 0;  // hardware threads of the host the record ran on (0: not recorded)
  std::string gemm_precision = "fp32";  // the executor's --precision: fp32, tf32 or bf16 products
  std::string activation_precision = "float32";  // "bfloat16" with --precision bf16 (older records: float32)
  // device.energy: the GPUs' mean power over the timed steps from their energy counters (0: not
  // measured, e.g. CPU records), the window's seconds and the steps in it
  double measured_power_W = 0;
  double energy_window_s = 0;
  int64_t energy_steps = 0;
  // device.memory: the device's memory in all and what was free before the step's buffers (GPU records;
  // 0: not recorded). The difference is what the runtime held (CUDA context, cuBLAS, NCCL).
  int64_t device_total_bytes = 0, free_bytes_before = 0;
  int64_t runtime_held_bytes() const {
    return device_total_bytes > 0 && free_bytes_before > 0 ? device_total_bytes - free_bytes_before : 0;
  }
  int64_t global_batch_tokens = 0;
  double step_median_s = 0, step_p10_s = 0, step_p90_s = 0;
  std::vector<MeasuredOp> ops;
  bool has_moe_loads = false;
};

// Throws ConfigError naming the file and key: another schema version, missing fields, a model
// file that no longer exists.
RunRecord load_run_record(const std::string& path);

}  // namespace glam
