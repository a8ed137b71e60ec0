#include "common/errors.h"

namespace glam {

ConfigError::ConfigError(const std::string& file, const std::string& key, const std::string& value,
                         const std::string& expected)
    : std::runtime_error(file + ": key '" + key + "' = " + value + ": expected " + expected),
      file_(file),
      key_(key) {}

ConfigError::ConfigError(const std::string& file, const std::string& problem)
    : std::runtime_error(file + ": " + problem), file_(file) {}

}  // namespace glam
