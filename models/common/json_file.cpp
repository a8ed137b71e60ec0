#include "common/json_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"

namespace glam {

nlohmann::json read_json_file(const std::string& path, const std::string& expected) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw ConfigError(path, "is a folder (expected " + expected + ")");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string why = error == ENOENT ? "no such file" : "cannot be opened (" + std::string(std::strerror(error)) + ")";
    throw ConfigError(path, why + " (expected " + expected + ")");
  }
  // Read whole first, so that a read error (a special file, an I/O error) names the file rather than
  // surfacing from inside the parser.
  std::ostringstream text;
  try {
    text << in.rdbuf();
  } catch (const std::exception& e) {
    throw ConfigError(path, std::string("cannot be read (") + e.what() + ")");
  }
  if (in.bad()) throw ConfigError(path, "cannot be read (an I/O error)");
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(path, std::string("not valid JSON: ") + e.what());
  }
}

}  // namespace glam
