#include "train/run_record.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <thread>

#include "accounting.h"

namespace glam::exec {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown CPU";
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

namespace {
std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}
}  // namespace

nlohmann::json timed_ops_json(const OpTimer& timer) {
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& [id, st] : timer.ops())
    ops.push_back({{"id", id},
                   {"median_s", percentile(st.seconds, 0.5)},
                   {"p10_s", percentile(st.seconds, 0.1)},
                   {"p90_s", percentile(st.seconds, 0.9)},
                   {"flops", st.flops},
                   {"bytes", st.bytes}});
  return ops;
}

nlohmann::json make_run_record(const RunDescription& run, const nlohmann::json& ops) {
  using nlohmann::json;
  const ModelConfig& m = *run.model;
  json r;
  r["schema"] = "glam-run-record/1";
  r["model"] = {{"id", m.id}, {"file", run.model_file}, {"layers_run", run.layers_run}};
  r["model_config"] = model_to_json(m);
  r["plan"] = {{"ranks", run.ranks}, {"dp", run.dp},         {"ep", run.ep},
               {"tp", run.tp},      {"pp", run.pp},         {"virtual_stages", run.virtual_stages},
               {"microbatches", run.microbatches}};
  r["device"] = {{"kind", run.device_kind}, {"name", run.device_name}, {"host", run.host}, {"threads", run.threads},
                 {"host_cores", static_cast<int>(std::thread::hardware_concurrency())}};
  r["batch_tokens"] = run.batch_tokens;
  r["global_batch_tokens"] = run.global_batch_tokens;
  r["seq_len"] = run.seq_len;
  r["steps"] = run.steps;
  r["warmup_steps"] = run.warmup_steps;
  r["seed"] = run.seed;
  r["first_step"] = run.first_step;
  r["data"] = {{"text", run.text}, {"tokenizer", run.tokenizer}, {"first_sequence", run.first_sequence}};
  double median = percentile(run.step_times_s, 0.5);
  r["step_time_s"] = {{"median", median},
                      {"p10", percentile(run.step_times_s, 0.1)},
                      {"p90", percentile(run.step_times_s, 0.9)},
                      {"all", run.step_times_s}};
  r["op_timing"] = run.op_timing;
  if (!run.op_timed_step_times_s.empty())
    r["op_timed_step_time_s"] = {{"median", percentile(run.op_timed_step_times_s, 0.5)},
                                 {"all", run.op_timed_step_times_s}};
  // One rank's FLOPs: with pipeline stages, a stage's average.
  double op_flops = 0;
  for (const auto& op : ops) op_flops += op["flops"].get<double>();
  op_flops /= run.pp;
  r["ops"] = ops;
  // Model FLOPs of the step (the accounting's convention, all ranks together).
  double model_flops = flops_per_token(m).train() * static_cast<double>(run.global_batch_tokens);
  r["model_flops_per_step"] = model_flops;
  r["op_flops_per_step_per_rank"] = op_flops;
  r["tokens_per_s"] = median > 0 ? static_cast<double>(run.global_batch_tokens) / median : 0.0;
  r["achieved_flops_per_s"] = median > 0 ? model_flops / median : 0.0;
  r["losses"] = run.losses;
  r["ce_losses"] = run.ce_losses;
  json moe = json::array();
  for (const auto& st : run.moe)
    moe.push_back({{"layer", st.layer},
                   {"expert_load", st.expert_load},
                   {"expert_dropped", st.expert_dropped},
                   {"dropped_tokens", st.dropped()},
                   {"routed_tokens", st.routed},
                   {"skipped_second_copies", st.skipped},
                   {"timed_steps", run.timed_steps}});
  r["moe_layers"] = moe;
  r["created_utc"] = utc_now();
  return r;
}

}  // namespace glam::exec
