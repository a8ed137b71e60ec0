#include "model_config.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "common/catalogue.h"
#include "common/errors.h"
#include "common/schema.h"

namespace glam {
namespace {

using M = ModelConfig;

const Schema<M>& model_schema() {
  static const Schema<M> schema = [] {
    Schema<M> s;
    s.add("id", &M::id, "", "Catalogue id; equals the file name without .toml", required,
          Check<std::string>([](const std::string& id) -> std::optional<std::string> {
            const bool ok = !id.empty() && id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                "0123456789._-") == std::string::npos;
            if (ok) return std::nullopt;
            return std::string("a non-empty id of letters, digits, '.', '_' and '-'");
          }))
        .add("description", &M::description, "", "One line about the model", std::string())
        .add("source", &M::source, "", "Publication the architecture comes from", std::string())
        .add("from_paper", &M::from_paper, "", "True when the row is published; false for made-up configs", false)
        .add("architecture.layers", &M::layers, "", "Transformer blocks", required, positive_up_to<int64_t>(4096))
        .add("architecture.d_model", &M::d_model, "", "Model (embedding) width M", required, positive_up_to<int64_t>(int64_t{1} << 20))
        .add("architecture.ffn_hidden", &M::ffn_hidden, "", "Hidden width H of the dense FFN", required,
             positive_up_to<int64_t>(int64_t{1} << 22))
        .add("architecture.heads", &M::heads, "", "Attention heads", required, positive_up_to<int64_t>(int64_t{1} << 14))
        .add("architecture.head_dim", &M::head_dim, "", "Width of one attention head", required, positive_up_to<int64_t>(int64_t{1} << 14))
        .add("architecture.vocab_size", &M::vocab_size, "", "Vocabulary size V (SentencePiece pieces)", required,
             between<int64_t>(2, int64_t{1} << 24))  // one piece leaves nothing to predict
        .add("architecture.seq_len", &M::seq_len, "tokens", "Training sequence length", int64_t{1024},
             positive_up_to<int64_t>(int64_t{1} << 22))
        .add("architecture.ffn_kind", &M::ffn_kind, "", "Dense FFN: gated (3 matrices) or plain (2)",
             std::string("gated"), one_of({"gated", "plain"}))
        .add("architecture.ffn_activation", &M::ffn_activation, "", "Dense FFN activation", std::string("gelu"),
             one_of({"gelu", "relu", "silu"}))
        .add("architecture.position_encoding", &M::position_encoding, "", "How positions enter attention",
             std::string("relative_bias"), one_of({"relative_bias", "rotary", "absolute", "none"}))
        .add("architecture.relative_buckets", &M::relative_buckets, "", "T5-style relative position buckets",
             int64_t{32}, positive_up_to<int64_t>(int64_t{1} << 16))
        .add("architecture.relative_max_distance", &M::relative_max_distance, "tokens",
             "Distance beyond which relative positions share a bucket", int64_t{128}, positive_up_to<int64_t>(int64_t{1} << 22))
        .add("architecture.tied_embeddings", &M::tied_embeddings, "", "Input and output embeddings shared", true)
        .add("moe.experts", &M::experts, "", "Experts per MoE layer; 0 for a dense model", int64_t{0},
             non_negative_up_to<int64_t>(int64_t{1} << 16))
        .add("moe.every", &M::moe_every, "layers", "Every how many blocks the FFN is an MoE layer", int64_t{2},
             positive_up_to<int64_t>(4096))
        .add("moe.offset", &M::moe_offset, "", "Block index (mod every) that holds the MoE layer", int64_t{1},
             non_negative<int64_t>())
        .add_optional("moe.expert_hidden", &M::expert_hidden, "", "Hidden width of one expert (default: ffn_hidden)",
                      positive_up_to<int64_t>(int64_t{1} << 22))
        .add("moe.expert_kind", &M::expert_kind, "", "Expert FFN: plain (2 matrices) or gated (3)",
             std::string("plain"), one_of({"gated", "plain"}))
        .add("moe.expert_activation", &M::expert_activation, "", "Expert activation (the paper leaves it open)",
             std::string("gelu"), one_of({"gelu", "relu", "silu"}))
        .add("moe.top_k", &M::top_k, "", "Experts each token is sent to", int64_t{2}, positive_up_to<int64_t>(2))
        .add("moe.capacity_factor", &M::capacity_factor, "", "Expert capacity factor", 2.0, positive_up_to(1000.0))
        .add("moe.capacity_convention", &M::capacity_convention, "",
             "glam: C = cf*S/E rounded up to 4; gshard: C = cf*k*S/E", std::string("glam"),
             one_of({"glam", "gshard"}))
        .add("moe.group_tokens", &M::group_tokens, "tokens", "Tokens per routing group S", int64_t{1024},
             positive_up_to<int64_t>(int64_t{1} << 24))
        .add("moe.dispatch", &M::moe_dispatch, "",
             "padded: every capacity slot is sent and computed, empty ones included (GShard); kept: only the "
             "copies kept",
             std::string("padded"), one_of({"padded", "kept"}))
        .add("moe.second_expert_policy", &M::second_expert_policy, "",
             "all: always dispatch the second expert; random: keep it with probability min(1, g2/threshold)",
             std::string("all"), one_of({"all", "random"}))
        .add("moe.second_expert_threshold", &M::second_expert_threshold, "",
             "Threshold of the random second-expert policy", 0.2, positive<double>())
        // At most 10: GLaM's 0.01 and ST-MoE's 1e-3 z-loss are far below; weights near the float range
        // overflow the loss in the first step.
        .add("moe.aux_loss_weight", &M::aux_loss_weight, "", "Load-balancing loss weight", 0.01,
             between(0.0, 10.0))
        .add("training.z_loss_weight", &M::z_loss_weight, "", "Output z-loss weight", 1e-4, between(0.0, 10.0))
        .add("training.weight_precision", &M::weight_precision, "", "Master weights", std::string("float32"),
             one_of({"float32", "bfloat16"}))
        .add("training.activation_precision", &M::activation_precision, "", "Activations",
             std::string("bfloat16"), one_of({"float32", "bfloat16"}))
        .add("training.optimizer", &M::optimizer, "", "Optimizer", std::string("adafactor"),
             one_of({"adafactor", "adam"}))
        .add_optional("paper.total_params", &M::paper_total_params, "params", "Total parameters as printed (\"1.2T\")")
        .add_optional("paper.activated_params", &M::paper_activated_params, "params",
                      "Activated parameters per token as printed")
        .add("paper.counts_embedding", &M::paper_counts_embedding, "",
             "Whether the printed figures include the embedding matrix", true)
        .add("paper.note", &M::paper_note, "", "Why the printed figures disagree with the architecture, if they do",
             std::string());
    return s;
  }();
  return schema;
}

void check_printed(const std::optional<std::string>& text, const std::string& file, const std::string& key) {
  if (!text) return;
  try {
    parse_printed_count(*text);
  } catch (const std::invalid_argument&) {
    throw ConfigError(file, key, "\"" + *text + "\"", "a count such as \"130M\", \"1.9B\" or \"1.2T\"");
  }
}

// Rules that involve more than one field.
void validate(const ModelConfig& m, const std::string& file) {
  auto num = [](int64_t v) { return std::to_string(v); };
  if (m.is_moe()) {
    if (m.moe_offset >= m.moe_every)
      throw ConfigError(file, "moe.offset", num(m.moe_offset), "a value below moe.every = " + num(m.moe_every));
    if (m.moe_layers() == 0)
      throw ConfigError(file, "moe.every", num(m.moe_every),
                        "a spacing that leaves at least one MoE block among " + num(m.layers) + " layers");
    if (m.top_k > m.experts)
      throw ConfigError(file, "moe.top_k", num(m.top_k), "at most moe.experts = " + num(m.experts));
    if (m.experts == 1 && m.top_k != 1)
      throw ConfigError(file, "moe.top_k", num(m.top_k), "1 when there is a single expert");
  }
  if (m.is_moe() && m.seq_len % m.group_tokens != 0 && m.group_tokens % m.seq_len != 0)
    throw ConfigError(file, "moe.group_tokens", num(m.group_tokens),
                      "a divisor or multiple of architecture.seq_len = " + num(m.seq_len));
  // Attention may be wider than the model (GLaM 64B/64E: 128 x 128 = 2 x 8192), but a head
  // layout wider than 4 x d_model or narrower than d_model / 4 is almost surely a typo.
  int64_t width = m.attention_width();
  if (width * 4 < m.d_model || width > 4 * m.d_model)
    throw ConfigError(file, "architecture.head_dim", num(m.head_dim),
                      "heads x head_dim (" + num(m.heads) + " x " + num(m.head_dim) + " = " + num(width) +
                          ") between d_model/4 and 4 x d_model (d_model = " + num(m.d_model) + ")");
  if (m.position_encoding == "rotary" && m.head_dim % 2 != 0)
    throw ConfigError(file, "architecture.head_dim", num(m.head_dim), "an even size for rotary positions");
  check_printed(m.paper_total_params, file, "paper.total_params");
  check_printed(m.paper_activated_params, file, "paper.activated_params");
}

ModelConfig parse_table(const toml::table& table, const std::string& file) {
  ModelConfig m = model_schema().parse(table, file);
  validate(m, file);
  // MoE settings without moe.experts would be ignored silently (the model is dense): say so rather
  // than simulate something else. An explicit experts = 0 keeps them, for a dense baseline of an MoE file.
  if (const toml::table* moe = table["moe"].as_table(); moe && !moe->contains("experts") && !moe->empty()) {
    const auto first = moe->begin();  // named: the key and value refer into it
    throw ConfigError(file, "moe." + std::string(first->first.str()), toml_value_text(first->second),
                      "no MoE settings without moe.experts (the model is dense): set moe.experts, or 0 to keep "
                      "them unused");
  }
  return m;
}

}  // namespace

int64_t ModelConfig::moe_layers() const {
  if (!is_moe()) return 0;
  int64_t n = 0;
  for (int64_t i = 0; i < layers; ++i) n += is_moe_layer(i) ? 1 : 0;
  return n;
}

CapacityConvention ModelConfig::capacity_rule() const {
  CapacityConvention c = CapacityConvention::kGlam;
  parse_capacity_convention(capacity_convention, c);
  return c;
}

int64_t ModelConfig::capacity_per_group() const {
  if (!is_moe()) return 0;
  return expert_capacity(capacity_rule(), capacity_factor, top_k, group_tokens, experts);
}

int64_t ModelConfig::precision_bytes(const std::string& precision) { return precision == "float32" ? 4 : 2; }

ModelConfig load_model(const std::string& id_or_path) {
  auto path = resolve_catalogue_entry("models", id_or_path);
  return parse_table(load_toml_file(path), path.string());
}

ModelConfig first_layers(ModelConfig m, int64_t layers) {
  if (layers < 0 || layers > m.layers)
    throw UsageError("--layers " + std::to_string(layers) + ": " + m.id + " has " + std::to_string(m.layers) + " layers");
  if (layers > 0) m.layers = layers;
  if (m.is_moe() && m.moe_layers() == 0) m.experts = 0;
  return m;
}

ModelConfig parse_model(const std::string& toml_text, const std::string& file_name) {
  try {
    return parse_table(toml::parse(toml_text, file_name), file_name);
  } catch (const toml::parse_error& e) {
    throw ConfigError(file_name, "not valid TOML (line " + std::to_string(e.source().begin.line) +
                                     "): " + std::string(e.description()));
  }
}

nlohmann::json model_to_json(const ModelConfig& m) { return model_schema().dump(m); }

nlohmann::json model_json_with_defaults(const nlohmann::json& saved) {
  return saved.is_object() ? model_schema().with_defaults(saved) : saved;
}

std::vector<ConfigDifference> computed_differences(const nlohmann::json& saved, const nlohmann::json& now) {
  auto computed = [](const nlohmann::json& config) {
    nlohmann::json out = nlohmann::json::object();
    for (const char* section : {"architecture", "moe", "training"})
      if (config.is_object() && config.contains(section)) out[section] = config[section];
    return out.empty() ? out : out.flatten();  // (an empty object flattens to {"": null})
  };
  const nlohmann::json a = computed(model_json_with_defaults(saved)), b = computed(now);
  auto dotted = [](std::string pointer) {  // "/architecture/layers" -> "architecture.layers"
    std::replace(pointer.begin(), pointer.end(), '/', '.');
    return pointer.substr(1);
  };
  std::vector<ConfigDifference> out;
  for (const auto& [key, value] : b.items())
    if (const auto it = a.find(key); it == a.end() || *it != value)
      out.push_back({dotted(key), it == a.end() ? "" : it->dump(), value.dump()});
  for (const auto& [key, value] : a.items())
    if (!b.contains(key)) out.push_back({dotted(key), value.dump(), ""});
  return out;
}

std::string describe_model_fields() { return model_schema().describe(); }

PrintedCount parse_printed_count(const std::string& text) {
  if (text.empty()) throw std::invalid_argument("empty count");
  double scale = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'K': scale = 1e3; break;
    case 'M': scale = 1e6; break;
    case 'B': scale = 1e9; break;
    case 'T': scale = 1e12; break;
    default: break;
  }
  if (scale != 1) digits.pop_back();
  if (digits.empty() || digits.find_first_not_of("0123456789.") != std::string::npos ||
      std::count(digits.begin(), digits.end(), '.') > 1)
    throw std::invalid_argument("malformed count: " + text);
  size_t dot = digits.find('.');
  int decimals = dot == std::string::npos ? 0 : static_cast<int>(digits.size() - dot - 1);
  PrintedCount p;
  p.value = std::stod(digits) * scale;
  p.half_unit = 0.5 * std::pow(10.0, -decimals) * scale;
  return p;
}

}  // namespace glam
