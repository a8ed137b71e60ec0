#include "common/catalogue.h"

#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "common/errors.h"

namespace glam {
namespace fs = std::filesystem;

toml::table load_toml_file(const fs::path& path) {
  if (!fs::exists(path)) throw ConfigError(path.string(), "no such file");
  if (fs::is_directory(path)) throw ConfigError(path.string(), "is a folder, expected a TOML file");
  try {
    return toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw ConfigError(path.string(), "not valid TOML (line " + std::to_string(where.line) + ", column " +
                                         std::to_string(where.column) + "): " + std::string(e.description()));
  }
}

fs::path catalogue_dir(const std::string& catalogue) {
  if (const char* home = std::getenv("GLAM_HOME"); home && *home) return fs::path(home) / catalogue;
  return fs::path(GLAM_SOURCE_DIR) / catalogue;
}

std::vector<std::string> catalogue_ids(const std::string& catalogue) {
  std::vector<std::string> ids;
  fs::path dir = catalogue_dir(catalogue);
  if (!fs::is_directory(dir)) return ids;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().extension() == ".toml") ids.push_back(entry.path().stem().string());
  std::sort(ids.begin(), ids.end());
  return ids;
}

fs::path resolve_catalogue_entry(const std::string& catalogue, const std::string& id_or_path) {
  bool looks_like_path = id_or_path.find('/') != std::string::npos ||
                         (id_or_path.size() > 5 && id_or_path.ends_with(".toml"));
  if (looks_like_path || fs::is_regular_file(id_or_path)) return fs::path(id_or_path);
  fs::path candidate = catalogue_dir(catalogue) / (id_or_path + ".toml");
  if (fs::is_regular_file(candidate)) return candidate;
  std::string known;
  for (const auto& id : catalogue_ids(catalogue)) known += (known.empty() ? "" : ", ") + id;
  // "models" -> "model", "topologies" -> "cluster" (a topology file describes a whole cluster)
  const std::string kind = catalogue == "topologies" ? "cluster" : catalogue.substr(0, catalogue.size() - 1);
  throw UsageError("unknown " + kind + " id '" + id_or_path +
                   "': expected a file path or one of: " + known + " (catalogue " +
                   catalogue_dir(catalogue).string() + ")");
}

namespace {

// "tpu-v4-64" before "tpu-v4-256": digit runs compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      const std::string x = a.substr(i, i2 - i), y = b.substr(j, j2 - j);
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = i2, j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i, ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

}  // namespace

std::vector<std::string> expand_catalogue_patterns(const std::string& catalogue, const std::vector<std::string>& args,
                                                   const std::string& option) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& id) {
    if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  };
  for (const std::string& arg : args) {
    if (arg.find_first_of("*?[") == std::string::npos) {
      add(arg);
      continue;
    }
    std::vector<std::string> matches;
    for (const std::string& id : catalogue_ids(catalogue))
      if (::fnmatch(arg.c_str(), id.c_str(), 0) == 0) matches.push_back(id);
    if (matches.empty()) {
      std::string known;
      for (const std::string& id : catalogue_ids(catalogue)) known += (known.empty() ? "" : ", ") + id;
      throw UsageError(option + " '" + arg + "': matches nothing in the catalogue (" + known + ")");
    }
    std::sort(matches.begin(), matches.end(), natural_less);
    for (const std::string& id : matches) add(id);
  }
  return out;
}

std::string gpu_chip_kind(const std::string& device_name) {
  std::string name;
  for (char c : device_name)
    if (c != ' ' && c != '-' && c != '_') name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // The catalogue's kinds are the SXM parts: PCIe and NVL cards run at other clocks and power, and the
  // GH200 superchip is another part.
  for (const char* other : {"pcie", "nvl", "gh200"})
    if (name.find(other) != std::string::npos) return "";
  if (name.find("h200") != std::string::npos) return "h200";
  if (name.find("h100") != std::string::npos) return "h100";
  if (name.find("a100") != std::string::npos && name.find("80gb") != std::string::npos) return "a100-80gb";
  return "";
}

}  // namespace glam
