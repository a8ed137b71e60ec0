#pragma once
// Declarative config schemas. Every field of a config struct is declared once, with its
// TOML key, type, unit, default and a one-line description; that single declaration drives
// parsing, the error messages, the `--help`-style field listing and the resolved-config dump.
//
//   Schema<ModelConfig> s;
//   s.add("architecture.layers", &ModelConfig::layers, "", "Transformer blocks", required, positive<int64_t>());
//   ModelConfig m = s.parse(table, "models/x.toml");
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "common/errors.h"

namespace glam {

// A check returns std::nullopt when the value is acceptable, else what was expected.
template <class T>
using Check = std::function<std::optional<std::string>(const T&)>;

template <class T>
Check<T> positive() {
  return [](const T& v) -> std::optional<std::string> {
    if (v > T{0}) return std::nullopt;
    return std::string(std::is_integral_v<T> ? "a positive integer" : "a positive number");
  };
}
template <class T>
Check<T> non_negative() {
  return [](const T& v) -> std::optional<std::string> {
    if (v >= T{0}) return std::nullopt;
    return std::string(std::is_integral_v<T> ? "a non-negative integer" : "a non-negative number");
  };
}
// A size with a bound: past it a config only hangs, exhausts memory or overflows the counts.
// `zero`: whether 0 is a valid value (non-negative) or not (positive).
template <class T>
Check<T> up_to(T hi, bool zero) {
  return [hi, zero](const T& v) -> std::optional<std::string> {
    if ((v > T{0} || (zero && v == T{0})) && v <= hi) return std::nullopt;
    std::ostringstream o;
    o << (zero ? "a non-negative " : "a positive ") << (std::is_integral_v<T> ? "integer" : "number") << " of at most "
      << hi;
    return o.str();
  };
}
template <class T>
Check<T> positive_up_to(T hi) {
  return up_to(hi, false);
}
template <class T>
Check<T> non_negative_up_to(T hi) {
  return up_to(hi, true);
}
template <class T>
Check<T> at_least(T lo) {
  return [lo](const T& v) -> std::optional<std::string> {
    if (v >= lo) return std::nullopt;
    std::ostringstream o;
    o << "a value >= " << lo;
    return o.str();
  };
}
template <class T>
Check<T> between(T lo, T hi) {
  return [lo, hi](const T& v) -> std::optional<std::string> {
    if (v >= lo && v <= hi) return std::nullopt;
    std::ostringstream o;
    o << "a value in [" << lo << ", " << hi << "]";
    return o.str();
  };
}
// A measured figure, or 0 for "not measured".
template <class T>
Check<T> zero_or_between(T lo, T hi) {
  const Check<T> in_range = between(lo, hi);
  return [in_range](const T& v) -> std::optional<std::string> {
    if (v == T{0} || !in_range(v)) return std::nullopt;
    return "0 (not measured) or " + *in_range(v);
  };
}
Check<std::string> one_of(std::vector<std::string> allowed);

// Marks a field without a default: the file must set it.
struct Required {};
inline constexpr Required required{};

// What an unknown key of a file was expected to be: the nearest known key at its level, if one is a
// likely misspelling, and the keys that level takes.
std::string unknown_key_expectation(const std::string& key, const std::set<std::string>& known);
std::string toml_value_text(const toml::node& node);

template <class Config>
class Schema {
 public:
  struct Field {
    std::string key;
    std::string type_name;
    std::string unit;
    std::string description;
    std::optional<std::string> default_text;  // nullopt: required
    std::function<void(Config&)> apply_default;
    std::function<void(Config&, const toml::node&, const std::string& file)> read;
    std::function<nlohmann::json(const Config&)> dump;
  };

  // A field with a default value.
  template <class T>
  Schema& add(std::string key, T Config::*member, std::string unit, std::string description,
              T default_value, Check<T> check = {}) {
    return add_impl<T>(std::move(key), member, std::move(unit), std::move(description),
                       std::optional<T>(std::move(default_value)), std::move(check));
  }
  // A field the file must set.
  template <class T>
  Schema& add(std::string key, T Config::*member, std::string unit, std::string description, Required,
              Check<T> check = {}) {
    return add_impl<T>(std::move(key), member, std::move(unit), std::move(description), std::nullopt,
                       std::move(check));
  }
  // An optional field: absent means "not given".
  template <class T>
  Schema& add_optional(std::string key, std::optional<T> Config::*member, std::string unit,
                       std::string description, Check<T> check = {}) {
    Field f;
    f.key = key;
    f.type_name = type_name<T>() + " (optional)";
    f.unit = std::move(unit);
    f.description = std::move(description);
    f.default_text = "unset";
    f.apply_default = [member](Config& c) { c.*member = std::nullopt; };
    f.read = [member, check, key](Config& c, const toml::node& node, const std::string& file) {
      T v = convert<T>(node, file, key);
      run_check(check, v, node, file, key);
      c.*member = v;
    };
    f.dump = [member](const Config& c) -> nlohmann::json {
      if (!(c.*member)) return nullptr;
      return *(c.*member);
    };
    fields_.push_back(std::move(f));
    return *this;
  }

  // Fills a Config from a TOML table: defaults first, then every key the file sets.
  // Unknown keys are errors (a misspelt key must not silently fall back to a default).
  Config parse(const toml::table& table, const std::string& file) const {
    Config c{};
    std::set<std::string> known;
    for (const auto& f : fields_) known.insert(f.key);
    // Unknown keys first: a misspelt required key is named as misspelt, not as missing.
    check_unknown_keys(table, "", known, file);
    for (const auto& f : fields_) {
      const toml::node* node = table.at_path(f.key).node();
      if (node) {
        f.read(c, *node, file);
      } else if (f.default_text) {
        f.apply_default(c);
      } else {
        throw ConfigError(file, f.key, "(missing)", with_article(f.type_name) + ": " + f.description);
      }
    }
    return c;
  }

  // Every resolved field, nested by the dotted keys.
  nlohmann::json dump(const Config& c) const {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& f : fields_) out[nlohmann::json::json_pointer("/" + slash_path(f.key))] = f.dump(c);
    return out;
  }

  // A dump written before some keys existed, completed with those keys' defaults (keys without a
  // default stay missing), so that it compares equal to today's dump of the same configuration.
  nlohmann::json with_defaults(nlohmann::json dumped) const {
    for (const auto& f : fields_) {
      const nlohmann::json::json_pointer at("/" + slash_path(f.key));
      if (!dumped.contains(at) && f.default_text) dumped[at] = nlohmann::json::parse(*f.default_text);
    }
    return dumped;
  }

  // One line per field: key, type, unit, default, description.
  std::string describe() const {
    std::ostringstream o;
    for (const auto& f : fields_) {
      o << f.key << "  " << f.type_name;
      if (!f.unit.empty()) o << " [" << f.unit << "]";
      o << "  default: " << (f.default_text ? *f.default_text : "required") << "  # " << f.description << "\n";
    }
    return o.str();
  }

  const std::vector<Field>& fields() const { return fields_; }

 private:
  template <class T>
  Schema& add_impl(std::string key, T Config::*member, std::string unit, std::string description,
                   std::optional<T> default_value, Check<T> check) {
    Field f;
    f.key = key;
    f.type_name = type_name<T>();
    f.unit = std::move(unit);
    f.description = std::move(description);
    if (default_value) {
      f.default_text = nlohmann::json(*default_value).dump();
      f.apply_default = [member, d = *default_value](Config& c) { c.*member = d; };
    }
    f.read = [member, check, key](Config& c, const toml::node& node, const std::string& file) {
      T v = convert<T>(node, file, key);
      run_check(check, v, node, file, key);
      c.*member = std::move(v);
    };
    f.dump = [member](const Config& c) -> nlohmann::json { return c.*member; };
    fields_.push_back(std::move(f));
    return *this;
  }

  template <class T>
  static std::string type_name() {
    if constexpr (std::is_same_v<T, bool>) return "boolean";
    else if constexpr (std::is_integral_v<T>) return "integer";
    else if constexpr (std::is_floating_point_v<T>) return "number";
    else if constexpr (std::is_same_v<T, std::string>) return "string";
    else if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "list of integers";
    else if constexpr (std::is_same_v<T, std::vector<double>>) return "list of numbers";
    else if constexpr (std::is_same_v<T, std::vector<std::string>>) return "list of strings";
    else static_assert(sizeof(T) == 0, "unsupported field type");
  }

  // "an integer", "a number".
  static std::string with_article(const std::string& noun) {
    const bool vowel = !noun.empty() && std::string("aeiou").find(noun[0]) != std::string::npos;
    return (vowel ? "an " : "a ") + noun;
  }

  template <class T>
  static T convert(const toml::node& node, const std::string& file, const std::string& key) {
    auto fail = [&]() -> T {
      const std::string type = type_name<T>();
      throw ConfigError(file, key, toml_value_text(node), with_article(type));
    };
    if constexpr (std::is_same_v<T, bool>) {
      if (auto v = node.value_exact<bool>()) return *v;
      return fail();
    } else if constexpr (std::is_integral_v<T>) {
      if (auto v = node.value_exact<int64_t>()) return static_cast<T>(*v);
      return fail();
    } else if constexpr (std::is_floating_point_v<T>) {
      // inf and nan pass the range checks' comparisons (nan fails them, inf does not): refused here.
      // An integer literal converts as an integer: value<double>() is empty past 2^53.
      if (auto i = node.value_exact<int64_t>()) return static_cast<T>(*i);
      if (node.is_floating_point() && std::isfinite(*node.value<double>())) return static_cast<T>(*node.value<double>());
      if (node.is_floating_point())
        throw ConfigError(file, key, toml_value_text(node), "a finite " + type_name<T>());
      return fail();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (auto v = node.value_exact<std::string>()) return *v;
      return fail();
    } else {
      using Elem = typename T::value_type;
      const toml::array* arr = node.as_array();
      if (!arr) return fail();
      T out;
      for (const auto& item : *arr) out.push_back(convert<Elem>(item, file, key));
      return out;
    }
  }

  template <class T>
  static void run_check(const Check<T>& check, const T& v, const toml::node& node, const std::string& file,
                        const std::string& key) {
    if (!check) return;
    if (auto expected = check(v)) throw ConfigError(file, key, toml_value_text(node), *expected);
  }

  static std::string slash_path(const std::string& dotted) {
    std::string s = dotted;
    for (char& ch : s)
      if (ch == '.') ch = '/';
    return s;
  }

  static void check_unknown_keys(const toml::table& t, const std::string& prefix, const std::set<std::string>& known,
                                 const std::string& file) {
    for (const auto& [k, v] : t) {
      std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      if (known.count(key)) continue;
      if (const toml::table* sub = v.as_table()) {
        bool is_section = false;
        for (const auto& kn : known)
          if (kn.rfind(key + ".", 0) == 0) is_section = true;
        if (is_section) {
          check_unknown_keys(*sub, key, known, file);
          continue;
        }
      }
      throw ConfigError(file, key, toml_value_text(v), unknown_key_expectation(key, known));
    }
  }

  std::vector<Field> fields_;
};

}  // namespace glam
