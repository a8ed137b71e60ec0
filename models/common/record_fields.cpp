#include "common/record_fields.h"

#include "common/errors.h"

namespace glam {

double record_op_time(const nlohmann::json& op, const char* field, bool required, const std::string& file,
                      const std::string& at) {
  const std::string key = at + "." + field;
  if (!op.is_object() || !op.contains(field)) {
    if (required) throw ConfigError(file, key, "(missing)", "a time in seconds");
    return 0.0;
  }
  const auto& v = op[field];
  if (!v.is_number() || !(v.get<double>() >= 0 && v.get<double>() <= 1e6))  // (a NaN fails both)
    throw ConfigError(file, key, v.dump(), "a time from 0 to 1e6 s");
  return v.get<double>();
}

std::string record_gemm_precision(const nlohmann::json& record, const std::string& file) {
  const nlohmann::json* device = record.is_object() && record.contains("device") ? &record["device"] : nullptr;
  if (!device || !device->is_object() || !device->contains("gemm_precision")) return "fp32";
  const auto& v = (*device)["gemm_precision"];
  const std::string p = v.is_string() ? v.get<std::string>() : "";
  if (p != "fp32" && p != "tf32" && p != "bf16")
    throw ConfigError(file, "device.gemm_precision", v.dump(), "\"fp32\", \"tf32\" or \"bf16\"");
  return p;
}

}  // namespace glam
