#pragma once
// Errors that reach the user. Both kinds end a command with exit code 2 before any
// output is written; everything else is a bug and exits 1.
#include <stdexcept>
#include <string>

namespace glam {

// Bad content in a config file: names the file, the key, the value and what was expected, on one line
// (control characters in the file name, key or value are escaped).
class ConfigError : public std::runtime_error {
 public:
  ConfigError(const std::string& file, const std::string& key, const std::string& value,
              const std::string& expected);
  // For problems that concern a whole file (missing, not TOML).
  ConfigError(const std::string& file, const std::string& problem);

  const std::string& file() const { return file_; }
  const std::string& key() const { return key_; }

 private:
  std::string file_;
  std::string key_;
};

// Bad command-line usage or an input that is not a config file (a plan that cannot be built).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A parallel layout that one cluster cannot run (--dp 64 over 8 chips, no layout of the chooser's
// valid there): plan --compare makes it that cluster's row instead of ending the comparison.
class LayoutDoesNotApply : public UsageError {
 public:
  using UsageError::UsageError;
};

inline constexpr int kExitBadInput = 2;

}  // namespace glam
