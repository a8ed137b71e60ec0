#include "common/errors.h"

#include <cstdio>

namespace glam {

namespace {
// The value as it can be shown on one line of a terminal: control characters (a newline, a NUL that
// would cut the message short, an escape sequence) written as \n, \t or \xNN.
std::string printable(const std::string& value) {
  std::string out;
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (u < 0x20 || u == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else out += c;
  }
  return out;
}
}  // namespace

ConfigError::ConfigError(const std::string& file, const std::string& key, const std::string& value,
                         const std::string& expected)
    : std::runtime_error(printable(file) + ": key '" + printable(key) + "' = " + printable(value) + ": expected " +
                         expected),
      file_(file),
      key_(key) {}

ConfigError::ConfigError(const std::string& file, const std::string& problem)
    : std::runtime_error(printable(file) + ": " + problem), file_(file) {}

}  // namespace glam
