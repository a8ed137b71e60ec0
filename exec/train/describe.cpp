#include "train/describe.h"

#include <optional>

#include <nlohmann/json.hpp>

#include "accounting.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "model_config.h"
#include "train/step_memory.h"
#include "train/trainer.h"

namespace glam::exec {

void run_describe(const DescribeOptions& o, std::ostream& out) {
  if (o.format != "text" && o.format != "json") throw UsageError("--format " + o.format + ": expected text or json");
  const ModelConfig whole = load_model(o.model);
  const ModelConfig m = first_layers(whole, o.layers);
  const int64_t tokens = o.batch_tokens > 0 ? o.batch_tokens : kDefaultBatchSequences * m.seq_len;
  const ParamCounts p = count_params(m);
  const FlopsPerToken f = flops_per_token(m);
  ShardingForMemory s;
  s.tokens_per_chip = tokens;
  const MemoryFootprint mem = memory_per_chip(m, s);
  // What glamexec train itself allocates for these tokens on one rank (it keeps every activation for
  // the backward pass, and the float32 logits), where the shape can run.
  std::optional<double> bf16_bytes, fp32_bytes;
  std::string why_not;
  if (tokens % m.seq_len != 0) {
    why_not = "--batch-tokens must be a multiple of seq_len " + std::to_string(m.seq_len);
  } else {
    ExecShape shape;
    shape.seq_len = m.seq_len;
    shape.seqs = tokens / m.seq_len;
    try {
      bf16_bytes = static_cast<double>(step_memory(m, shape, true).total());
      fp32_bytes = static_cast<double>(step_memory(m, shape, false).total());
    } catch (const UsageError& e) {
      why_not = e.what();
    }
  }

  if (o.format == "json") {
    nlohmann::json j = {{"model", m.id},
                        {"layers", m.layers},
                        {"model_layers", whole.layers},
                        {"parameters", {{"total", p.total}, {"activated", p.activated}}},
                        {"train_flops_per_token", f.train()},
                        {"batch_tokens", tokens},
                        {"one_chip_memory_bytes",
                         {{"weights", mem.weights_bytes},
                          {"gradients", mem.gradients_bytes},
                          {"optimizer", mem.optimizer_bytes},
                          {"activations", mem.activations_bytes},
                          {"working", mem.working_bytes},
                          {"total", mem.total_bytes()}}},
                        {"checkpoint_bytes", checkpoint_bytes(m)}};
    if (bf16_bytes) j["train_buffers_bytes"] = {{"bf16", *bf16_bytes}, {"fp32", *fp32_bytes}};
    else j["train_buffers_bytes"] = nullptr, j["train_refuses"] = why_not;
    out << j.dump(2) << "\n";
    return;
  }
  if (o.layers > 0) out << "first " << m.layers << " of " << whole.layers << " layers\n";
  // Counted as the executor holds them, embedding included (glamsim models follows each paper row's
  // convention instead).
  out << m.id << ": " << format_count(p.total) << " parameters, " << format_count(p.activated)
      << " activated (the embedding's " << format_count(p.embedding) << " included); "
      << (f.train() >= 1e9 ? format_fixed(f.train() / 1e9, 1) + " GFLOP" : format_fixed(f.train() / 1e6, 1) + " MFLOP")
      << " per token per step\n"
      << "one chip, " << tokens << " tokens: weights " << format_bytes(mem.weights_bytes) << ", gradients "
      << format_bytes(mem.gradients_bytes) << ", optimizer " << format_bytes(mem.optimizer_bytes) << ", activations "
      << format_bytes(mem.activations_bytes) << ", working buffers " << format_bytes(mem.working_bytes) << "\n"
      << "checkpoint (--save): " << format_bytes(checkpoint_bytes(m)) << " of float32 weights and optimizer state\n";
  if (bf16_bytes)
    out << "glamexec train, one rank, " << tokens << " tokens: " << format_bytes(*bf16_bytes)
        << " of device buffers in bf16, " << format_bytes(*fp32_bytes) << " in fp32\n";
  else
    out << "glamexec train: " << why_not << "\n";
}

}  // namespace glam::exec
