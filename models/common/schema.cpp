#include "common/schema.h"

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

}  // namespace glam
