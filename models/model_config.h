#pragma once
// The model description: any decoder-only dense or MoE Transformer, read from a TOML file
// (models/<id>.toml or a user's path). Field declarations live in model_config.cpp.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "routing_rules.h"

namespace glam {

struct ModelConfig {
  // identity
  std::string id;
  std::string description;
  std::string source;     // publication the architecture comes from, or "" for a made-up config
  bool from_paper = false;

  // architecture
  int64_t layers = 0;
  int64_t d_model = 0;
  int64_t ffn_hidden = 0;  // hidden size of the dense FFN
  int64_t heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t seq_len = 0;
  std::string ffn_kind;        // "gated" (three matrices) or "plain" (two)
  std::string ffn_activation;  // "gelu", "relu", "silu"
  std::string position_encoding;  // "relative_bias", "rotary", "absolute", "none"
  int64_t relative_buckets = 0;
  int64_t relative_max_distance = 0;
  bool tied_embeddings = true;

  // mixture of experts (experts == 0: dense model)
  int64_t experts = 0;
  int64_t moe_every = 0;   // a block is MoE when (index % moe_every) == moe_offset
  int64_t moe_offset = 0;
  std::optional<int64_t> expert_hidden;  // defaults to ffn_hidden
  std::string expert_kind;
  std::string expert_activation;
  int64_t top_k = 0;
  double capacity_factor = 0;
  std::string capacity_convention;  // "glam" or "gshard" (kernels/routing_rules.h)
  int64_t group_tokens = 0;         // tokens per routing group S
  std::string second_expert_policy;  // "all" or "random"
  // What the dispatch moves and the experts compute: "padded", every capacity slot, empty ones
  // included (GShard's fixed shapes, as GLaM trained and as this executor runs), or "kept", only the
  // copies kept (variable-size dispatch and grouped products).
  std::string moe_dispatch;
  bool padded_dispatch() const { return moe_dispatch != "kept"; }
  double second_expert_threshold = 0;
  double aux_loss_weight = 0;
  double z_loss_weight = 0;

  // numerics and training
  std::string weight_precision;      // "float32", "bfloat16"
  std::string activation_precision;  // "float32", "bfloat16"
  std::string optimizer;             // "adafactor" or "adam"

  // the published figures, as printed ("1.2T", "96.6B"), kept beside the architecture
  std::optional<std::string> paper_total_params;
  std::optional<std::string> paper_activated_params;
  bool paper_counts_embedding = true;  // which of our two counts the printed figure corresponds to
  std::string paper_note;              // why a row disagrees with the architecture, when it does

  // derived helpers
  bool is_moe() const { return experts > 0; }
  bool is_moe_layer(int64_t index) const { return is_moe() && moe_every > 0 && index % moe_every == moe_offset; }
  int64_t moe_layers() const;
  int64_t dense_layers() const { return layers - moe_layers(); }
  int64_t attention_width() const { return heads * head_dim; }
  int64_t expert_hidden_size() const { return expert_hidden.value_or(ffn_hidden); }
  CapacityConvention capacity_rule() const;
  int64_t capacity_per_group() const;  // slots per expert in one routing group
  static int64_t precision_bytes(const std::string& precision);
};

// Loads a model by catalogue id or file path; throws ConfigError / UsageError.
ModelConfig load_model(const std::string& id_or_path);
ModelConfig parse_model(const std::string& toml_text, const std::string& file_name);
// The model's first `layers` layers (0: all of it), as the executor runs with --layers; a cut that
// holds no MoE block is a dense model. Throws UsageError for a count outside [0, layers].
ModelConfig first_layers(ModelConfig m, int64_t layers);

// Every resolved field (defaults included), nested by section.
nlohmann::json model_to_json(const ModelConfig& m);
// A model_to_json of an earlier version (a checkpoint's or a run record's), completed with the
// defaults of the keys added since, for comparison with today's.
nlohmann::json model_json_with_defaults(const nlohmann::json& saved);
// One key where a saved configuration and today's differ: dotted ("architecture.layers"), with each
// side's value as JSON ("" where that side lacks the key).
struct ConfigDifference {
  std::string key, saved, now;
};
// How two model_to_json configurations differ in what a run computes: the architecture, the routing
// and the training arithmetic, not the id, description, source or the paper's printed figures.
std::vector<ConfigDifference> computed_differences(const nlohmann::json& saved, const nlohmann::json& now);
// One line per field: key, type, unit, default, description.
std::string describe_model_fields();

// "1.2T" -> 1.2e12 and the half-unit of its last printed digit (0.05e12), for comparisons
// that respect the paper's rounding. Throws std::invalid_argument on malformed text.
struct PrintedCount {
  double value = 0;
  double half_unit = 0;
};
PrintedCount parse_printed_count(const std::string& text);

}  // namespace glam
