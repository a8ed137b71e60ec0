#include "common/text_table.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace glam {

TextTable::TextTable(std::vector<std::string> header, std::vector<bool> right_aligned) : right_(std::move(right_aligned)) {
  right_.resize(header.size(), false);
  rows_.push_back(std::move(header));
}

void TextTable::add_row(std::vector<std::string> row) {
  row.resize(rows_.front().size());
  rows_.push_back(std::move(row));
}

std::string TextTable::render() const {
  std::vector<size_t> width(rows_.front().size(), 0);
  for (const auto& r : rows_)
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t c = 0; c < r.size(); ++c) {
      std::string pad(width[c] - r[c].size(), ' ');
      if (c) s += "  ";
      s += right_[c] ? pad + r[c] : r[c] + pad;
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out += s + "\n";
  };
  line(rows_.front());
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  line(rule);
  for (size_t i = 1; i < rows_.size(); ++i) line(rows_[i]);
  return out;
}

std::string format_chips(int64_t chips) { return std::to_string(chips) + (chips == 1 ? " chip" : " chips"); }

std::string format_count(double value) {
  char buf[64];
  if (std::fabs(value) >= 1e15) {  // past the suffixes: 1.18e+18, not 1180636797T
    std::snprintf(buf, sizeof buf, "%.3g", value);
    return buf;
  }
  const char* suffix = "";
  double v = value;
  if (std::fabs(v) >= 1e12) v /= 1e12, suffix = "T";
  else if (std::fabs(v) >= 1e9) v /= 1e9, suffix = "B";
  else if (std::fabs(v) >= 1e6) v /= 1e6, suffix = "M";
  else if (std::fabs(v) >= 1e3) v /= 1e3, suffix = "K";
  int decimals = std::fabs(v) >= 100 ? 0 : std::fabs(v) >= 10 ? 1 : 2;
  std::snprintf(buf, sizeof buf, "%.*f%s", decimals, v, suffix);
  return buf;
}

std::string format_fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string format_shortest(double value) {
  char buf[64];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
}

std::string format_percent(double fraction, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.*f%%", decimals, fraction * 100);
  return buf;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (std::fabs(bytes) >= 1024 && u < 5) bytes /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

std::string format_digits(double value, int digits) {
  // One decimal fewer each time the value rounds up to the next power of ten.
  int decimals = std::max(digits - 1, 0);
  for (double bound = 10; decimals > 0 && std::fabs(value) >= bound - 0.5 * std::pow(10.0, -decimals); bound *= 10)
    --decimals;
  return format_fixed(value, decimals);
}

std::string format_seconds(double s) {
  // Three digits, trailing zeros kept (10.0 s beside 9.98 s in a column, not 10 s); each unit from
  // where three digits round up to it, and whole seconds past 999: %g would print 999.7 s as
  // 1e+03 s, and 0.9997 s as 1e+03 ms.
  if (s >= 999.5) return format_fixed(s, 0) + " s";
  if (s >= 0.9995) return format_digits(s, 3) + " s";
  if (s >= 0.9995e-3) return format_digits(s * 1e3, 3) + " ms";
  return format_digits(s * 1e6, 3) + " us";
}

std::string format_duration(double s) {
  if (s < 120) return format_fixed(s, 0) + " s";
  if (s < 2 * 3600) return format_fixed(s / 60, 1) + " min";
  if (s < 2 * 86400) return format_fixed(s / 3600, 1) + " h";
  return format_fixed(s / 86400, 1) + " days";
}

}  // namespace glam
