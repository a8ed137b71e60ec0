#include "common/json_file.h"

#include <fstream>

#include "common/errors.h"

namespace glam {

nlohmann::json read_json_file(const std::string& path, const std::string& expected) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path, "no such file (expected " + expected + ")");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(path, std::string("not valid JSON: ") + e.what());
  }
}

}  // namespace glam
