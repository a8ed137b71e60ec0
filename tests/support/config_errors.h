#pragma once
// Helpers for the bad-config tests of every config kind (models, clusters, ...).
#include <gtest/gtest.h>

#include <string>

#include "common/errors.h"

namespace glam::testing {

// `text` with the first occurrence of `from` replaced; fails the test if `from` is absent.
inline std::string replaced(std::string text, const std::string& from, const std::string& to) {
  auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return pos == std::string::npos ? text : text.replace(pos, from.size(), to);
}

// Parses `text` as file "user/bad.toml" with `parse(text, file)` and returns the ConfigError's
// message, checking it names the file and fits on one line; fails the test if nothing is thrown.
template <class Parse>
std::string config_error_of(Parse parse, const std::string& text) {
  try {
    parse(text, "user/bad.toml");
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file(), "user/bad.toml");
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error for:\n" << text;
  return "";
}

}  // namespace glam::testing
