#include "model_table.h"

#include <cmath>
#include <cstdio>

#include "common/text_table.h"

namespace glam {

PaperComparison compare_with_paper(const std::string& printed, double computed) {
  PrintedCount p = parse_printed_count(printed);
  PaperComparison c;
  c.printed = p.value;
  c.computed = computed;
  c.relative_difference = (computed - p.value) / p.value;
  c.agrees = std::fabs(c.relative_difference) <= kPaperTolerance || std::fabs(computed - p.value) <= p.half_unit;
  return c;
}

ModelRow model_row(const ModelConfig& m) {
  ModelRow r{m, count_params(m), flops_per_token(m), std::nullopt, std::nullopt};
  const bool with_emb = m.paper_counts_embedding;
  if (m.paper_total_params)
    r.total = compare_with_paper(*m.paper_total_params, with_emb ? r.params.total : r.params.total_without_embedding);
  if (m.paper_activated_params)
    r.activated = compare_with_paper(*m.paper_activated_params,
                                     with_emb ? r.params.activated : r.params.activated_without_embedding);
  return r;
}

namespace {
// GFLOP per token: one decimal, or two significant digits for the tiny test models (0.011, not 0.0).
std::string format_gflop(double flops) {
  const double g = flops / 1e9;
  if (g >= 0.1 || g == 0) return format_fixed(g, 1);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%#.2g", g);  // '#': 0.010, not 0.01
  return buf;
}
}  // namespace

std::string render_model_table(const std::vector<ModelRow>& rows) {
  TextTable t({"id", "experts", "total", "paper", "diff", "activated", "paper", "diff", "emb", "GFLOP/tok inf",
               "GFLOP/tok train", "flag"},
              {false, true, true, true, true, true, true, true, false, true, true, false});
  std::string notes;
  for (const auto& r : rows) {
    auto cmp = [](const std::optional<PaperComparison>& c, double computed) -> std::vector<std::string> {
      if (!c) return {format_count(computed), "-", "-"};
      return {format_count(c->computed), format_count(c->printed), format_percent(c->relative_difference)};
    };
    auto tot = cmp(r.total, r.params.total);
    auto act = cmp(r.activated, r.params.activated);
    std::string flag;
    if (r.flagged()) {
      flag = "see note";
      notes += "  " + r.model.id + ": " + r.model.paper_note + "\n";
    }
    t.add_row({r.model.id, r.model.experts ? std::to_string(r.model.experts) : "-", tot[0], tot[1], tot[2], act[0],
               act[1], act[2], r.model.paper_counts_embedding ? "with" : "without",
               format_gflop(r.flops.forward()), format_gflop(r.flops.train()), flag});
  }
  std::string out = t.render();
  out +=
      "\nComputed counts follow the paper's convention for each row (emb: embedding counted with/without);\n"
      "FLOPs: 2 per multiply-add, activated weights and logits, attention over the full sequence.\n";
  if (!notes.empty()) out += "\nFlagged rows:\n" + notes;
  return out;
}

nlohmann::json model_row_json(const ModelRow& r) {
  using nlohmann::json;
  auto opt = [](const std::optional<PaperComparison>& c, auto field) -> json {
    if (!c) return nullptr;
    return (*c).*field;
  };
  json j = {
      {"id", r.model.id},
      {"experts", r.model.experts},
      {"layers", r.model.layers},
      {"d_model", r.model.d_model},
      {"total_params", r.params.total},
      {"activated_params", r.params.activated},
      {"total_params_without_embedding", r.params.total_without_embedding},
      {"activated_params_without_embedding", r.params.activated_without_embedding},
      {"paper_counts_embedding", r.model.paper_counts_embedding},
      {"paper_total_params", opt(r.total, &PaperComparison::printed)},
      {"paper_activated_params", opt(r.activated, &PaperComparison::printed)},
      {"total_params_relative_difference", opt(r.total, &PaperComparison::relative_difference)},
      {"activated_params_relative_difference", opt(r.activated, &PaperComparison::relative_difference)},
      {"agrees_with_paper", (!r.total || r.total->agrees) && (!r.activated || r.activated->agrees)},
      {"flagged", r.flagged()},
      {"flag_reason", r.model.paper_note},
      {"inference_flops_per_token", r.flops.forward()},
      {"train_flops_per_token", r.flops.train()},
      {"matmul_flops_per_token_forward", r.flops.matmul_forward},
      {"attention_flops_per_token_forward", r.flops.attention_forward},
      {"params_by_group",
       {{"embedding", r.params.embedding},
        {"attention", r.params.attention},
        {"position_bias", r.params.position_bias},
        {"norms", r.params.norms},
        {"dense_ffn", r.params.dense_ffn},
        {"router", r.params.router},
        {"experts", r.params.experts}}},
  };
  return j;
}

}  // namespace glam
