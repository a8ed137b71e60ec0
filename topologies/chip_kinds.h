#pragma once
// Chip kinds are data: topologies/chips/<kind>.toml holds one chip's datasheet figures, each with
// its source. A cluster file names a kind and may override any figure.
#include <string>
#include <vector>

#include "cluster.h"

namespace glam {

// The figures of a known chip kind; throws ConfigError naming `file` and `key` (the cluster
// file and its chip.kind key) when the kind is unknown.
ChipSpec load_chip_kind(const std::string& kind, const std::string& file, const std::string& key);

// Refuses a runtime reserve that leaves no HBM: ConfigError naming `file` and the key `prefix` +
// runtime_reserved_bytes, or + hbm_bytes when `blame_hbm` (the file set the HBM, not the reserve).
void check_runtime_reserve(double reserved_bytes, double hbm_bytes, const std::string& file, const std::string& prefix,
                           bool blame_hbm);

// Sorted names of the known chip kinds.
std::vector<std::string> chip_kinds();

// One line per chip-file field.
std::string describe_chip_fields();

}  // namespace glam
