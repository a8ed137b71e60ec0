#pragma once
// Fields of an executor run record (glamexec train --record) that glamsim validate and glamexec
// calibrate --records both read: checked alike, so that the two never take different records.
#include <string>

#include <nlohmann/json.hpp>

namespace glam {

// An op's time (ops[i].median_s, p10_s, p90_s; `at` is "ops[i]"): a number from 0 to 1e6 s (an op a
// step did not run has 0; none takes longer than the timers' hours). A missing one is 0 unless
// `required`. Throws ConfigError naming `file` and the key.
double record_op_time(const nlohmann::json& op, const char* field, bool required, const std::string& file,
                      const std::string& at);

// device.gemm_precision, the products' arithmetic: "fp32" (also for records from before the key),
// "tf32" or "bf16". Throws ConfigError naming `file` and the key.
std::string record_gemm_precision(const nlohmann::json& record, const std::string& file);

}  // namespace glam
