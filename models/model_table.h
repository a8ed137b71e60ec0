#pragma once
// The catalogue table of `glamsim models`: computed accounting beside the paper's printed figures.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "accounting.h"
#include "model_config.h"

namespace glam {

// Parameters are compared with the paper within this relative tolerance, or when the computed
// count rounds to the printed figure (the paper prints "1.2T" for 1.16T).
inline constexpr double kPaperTolerance = 0.03;

struct PaperComparison {
  double printed = 0;
  double computed = 0;   // under the row's convention (with or without the embedding)
  double relative_difference = 0;
  bool agrees = false;   // within kPaperTolerance or within the printed rounding
};
PaperComparison compare_with_paper(const std::string& printed, double computed);

struct ModelRow {
  ModelConfig model;
  ParamCounts params;
  FlopsPerToken flops;
  std::optional<PaperComparison> total, activated;
  // Rows whose paper note explains a disagreement.
  bool flagged() const { return !model.paper_note.empty(); }
};
ModelRow model_row(const ModelConfig& m);

std::string render_model_table(const std::vector<ModelRow>& rows);
nlohmann::json model_row_json(const ModelRow& row);

}  // namespace glam
