#include "common/schema.h"

#include <algorithm>

#include "common/text_table.h"

namespace glam {

Check<std::string> one_of(std::vector<std::string> allowed) {
  return [allowed](const std::string& v) -> std::optional<std::string> {
    for (const auto& a : allowed)
      if (a == v) return std::nullopt;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + ("\"" + a + "\"");
    return "one of " + list;
  };
}

std::string toml_value_text(const toml::node& node) {
  std::ostringstream o;
  if (node.is_table()) return "(a table)";
  if (const toml::array* arr = node.as_array()) {
    // One short line, whatever the array's size: errors are single lines.
    constexpr size_t kShown = 16;
    o << "[";
    for (size_t i = 0; i < arr->size() && i < kShown; ++i) o << (i ? ", " : "") << toml_value_text(*arr->get(i));
    if (arr->size() > kShown) o << ", ... (" << arr->size() << " values)";
    o << "]";
    return o.str();
  }
  if (auto str = node.value_exact<std::string>()) return "\"" + *str + "\"";
  if (auto number = node.value_exact<double>()) {
    // 0.9, not 0.90000000000000002; and 2.0, still a float.
    std::string text = format_shortest(*number);
    if (text.find_first_of(".eni") == std::string::npos) text += ".0";
    return text;
  }
  node.visit([&](auto&& v) { o << v; });
  return o.str();
}

namespace {

// Edits (insertions, deletions, substitutions) between two keys: how far a misspelling strayed.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string unknown_key_expectation(const std::string& key, const std::set<std::string>& known) {
  const size_t dot = key.rfind('.');
  const std::string prefix = dot == std::string::npos ? "" : key.substr(0, dot + 1);
  const std::string name = key.substr(prefix.size());
  const std::string level = prefix.empty() ? "the file" : "[" + prefix.substr(0, prefix.size() - 1) + "]";
  std::set<std::string> here;  // the names this level takes: keys, or the sections below it
  for (const auto& k : known)
    if (k.rfind(prefix, 0) == 0) here.insert(k.substr(prefix.size(), k.find('.', prefix.size()) - prefix.size()));
  if (here.count(name)) {  // a section given a value: its keys belong in a table
    std::string keys;
    for (const auto& k : known)
      if (k.rfind(key + ".", 0) == 0) keys += (keys.empty() ? "" : ", ") + k.substr(key.size() + 1);
    return "a table [" + key + "] of its keys (" + keys + ")";
  }
  if (here.empty()) return "no key here (" + level + " takes none)";
  std::string nearest, list;
  size_t best = std::max<size_t>(2, name.size() / 3) + 1;  // a likely misspelling: a few edits at most
  for (const auto& h : here) {
    list += (list.empty() ? "" : ", ") + h;
    if (const size_t d = edit_distance(name, h); d < best) best = d, nearest = h;
  }
  std::string out = "a known key";
  if (!nearest.empty()) out += " (did you mean " + prefix + nearest + "?)";
  return out + "; " + level + " takes: " + list;
}

}  // namespace glam
