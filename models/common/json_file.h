#pragma once
// Reads a JSON input file (run records, routing histograms) with the project's errors: a missing
// file or bad JSON is a ConfigError naming the file and what was expected.
#include <string>

#include <nlohmann/json.hpp>

namespace glam {

// `expected` says what the file should have been ("an executor run record").
nlohmann::json read_json_file(const std::string& path, const std::string& expected);

}  // namespace glam
