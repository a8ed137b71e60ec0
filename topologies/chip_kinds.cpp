#include "chip_kinds.h"

#include <algorithm>
#include <filesystem>

#include "common/catalogue.h"
#include "common/errors.h"
#include "common/schema.h"

namespace glam {
namespace {

namespace fs = std::filesystem;

// What a chip file holds: the ChipSpec figures plus where they come from.
struct ChipFile {
  std::string kind, description, source;
  double peak_flops_bf16 = 0, peak_flops_fp32 = 0, hbm_bytes = 0, hbm_bandwidth_Bps = 0;
  double runtime_reserved_bytes = 0, all_to_all_peer_bytes = 0;
  double idle_W = 0, busy_W = 0, host_W_per_chip = 0;
};

const Schema<ChipFile>& chip_schema() {
  static const Schema<ChipFile> schema = [] {
    using C = ChipFile;
    Schema<C> s;
    s.add("kind", &C::kind, "", "Chip kind; equals the file name without .toml", required)
        .add("description", &C::description, "", "One line about the chip", std::string())
        .add("source", &C::source, "", "Where the figures come from", std::string())
        .add("peak_flops_bf16", &C::peak_flops_bf16, "FLOP/s", "Dense bfloat16 peak", required, between(1e6, 1e18))
        .add("peak_flops_fp32", &C::peak_flops_fp32, "FLOP/s", "float32 peak (matrix units where fp32 uses them)",
             required, between(1e6, 1e18))
        .add("hbm_bytes", &C::hbm_bytes, "bytes", "HBM capacity", required, between(1e6, 1e15))
        .add("hbm_bandwidth_Bps", &C::hbm_bandwidth_Bps, "B/s", "HBM bandwidth", required, between(1e6, 1e17))
        .add("runtime_reserved_bytes", &C::runtime_reserved_bytes, "bytes",
             "HBM the software stack holds before a step allocates (runtime context, library workspaces, "
             "communication buffers, allocator slack); plans fit in the rest",
             0.0, between(0.0, 1e15))
        .add("all_to_all_peer_bytes", &C::all_to_all_peer_bytes, "bytes",
             "HBM the collective library's point-to-point channels take for each peer in the same node once an "
             "all-to-all has run; plans with expert parallelism count it for the expert all-to-all's peers",
             0.0, between(0.0, 1e12))
        .add("idle_W", &C::idle_W, "W", "Chip power when idle", required, between(0.0, 1e5))
        .add("busy_W", &C::busy_W, "W", "Chip power when fully busy (TDP-like)", required, between(1e-3, 1e5))
        .add("host_W_per_chip", &C::host_W_per_chip, "W", "Share of host, CPU, NIC and fans per chip", 0.0,
             between(0.0, 1e5));
    return s;
  }();
  return schema;
}

fs::path chips_dir() { return catalogue_dir("topologies") / "chips"; }

}  // namespace

std::vector<std::string> chip_kinds() {
  std::vector<std::string> kinds;
  if (!fs::is_directory(chips_dir())) return kinds;
  for (const auto& e : fs::directory_iterator(chips_dir()))
    if (e.is_regular_file() && e.path().extension() == ".toml") kinds.push_back(e.path().stem().string());
  std::sort(kinds.begin(), kinds.end());
  return kinds;
}

ChipSpec load_chip_kind(const std::string& kind, const std::string& file, const std::string& key) {
  auto kinds = chip_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
    std::string known;
    for (const auto& k : kinds) known += (known.empty() ? "" : ", ") + k;
    throw ConfigError(file, key, "\"" + kind + "\"",
                      "a known chip kind: one of " + known + " (files in " + chips_dir().string() + ")");
  }
  fs::path path = chips_dir() / (kind + ".toml");
  ChipFile c = chip_schema().parse(load_toml_file(path), path.string());
  if (c.kind != kind)
    throw ConfigError(path.string(), "kind", "\"" + c.kind + "\"", "\"" + kind + "\", the file name");
  if (c.busy_W < c.idle_W)
    throw ConfigError(path.string(), "busy_W", std::to_string(c.busy_W), "at least idle_W");
  check_runtime_reserve(c.runtime_reserved_bytes, c.hbm_bytes, path.string(), "", false);
  return ChipSpec{c.kind,   c.peak_flops_bf16, c.peak_flops_fp32, c.hbm_bytes, c.hbm_bandwidth_Bps,
                  c.idle_W, c.busy_W,          c.host_W_per_chip, c.runtime_reserved_bytes,
                  c.all_to_all_peer_bytes};
}

void check_runtime_reserve(double reserved_bytes, double hbm_bytes, const std::string& file, const std::string& prefix,
                           bool blame_hbm) {
  if (reserved_bytes < hbm_bytes) return;
  if (blame_hbm)
    throw ConfigError(file, prefix + "hbm_bytes", nlohmann::json(hbm_bytes).dump(),
                      "more than the chip's runtime_reserved_bytes (" + nlohmann::json(reserved_bytes).dump() + ")");
  throw ConfigError(file, prefix + "runtime_reserved_bytes", nlohmann::json(reserved_bytes).dump(),
                    "less than the chip's HBM (" + nlohmann::json(hbm_bytes).dump() + " bytes)");
}

std::string describe_chip_fields() { return chip_schema().describe(); }

}  // namespace glam
