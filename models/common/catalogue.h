#pragma once
// Finds catalogue entries (models/*.toml, topologies/*.toml) by id, or takes a user's file path,
// and loads TOML with errors that name the file.
#include <filesystem>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace glam {

// Parses a TOML file; a missing file or a syntax error becomes a ConfigError naming the file
// (and the line and column for syntax errors).
toml::table load_toml_file(const std::filesystem::path& path);

// The folder holding one catalogue ("models" or "topologies"). $GLAM_HOME overrides the
// source tree the build was configured from.
std::filesystem::path catalogue_dir(const std::string& catalogue);

// An argument that names an existing file, or contains '/' or ends in ".toml", is a path;
// anything else is an id looked up in the catalogue. Unknown ids list the known ones.
std::filesystem::path resolve_catalogue_entry(const std::string& catalogue, const std::string& id_or_path);

// Sorted ids of every entry in a catalogue.
std::vector<std::string> catalogue_ids(const std::string& catalogue);

// Command-line arguments naming catalogue entries: ids and files as they are, shell patterns
// ('tpu-v4-*') as the catalogue's matching ids in size order ("tpu-v4-64" before "tpu-v4-256"); an
// entry named twice is kept once. A pattern matching nothing is a UsageError naming `option`.
std::vector<std::string> expand_catalogue_patterns(const std::string& catalogue, const std::vector<std::string>& args,
                                                   const std::string& option);

// The chip kind (topologies/chips/<kind>.toml) of a GPU by the name its driver reports ("NVIDIA
// H100 80GB HBM3" -> "h100", "NVIDIA A100-SXM4-80GB" -> "a100-80gb"); "" for a GPU the catalogue
// has no kind of (an A100 with 40 GB, a PCIe or NVL card, a GH200, an L40S).
std::string gpu_chip_kind(const std::string& device_name);

}  // namespace glam
