#pragma once
// Plain-text tables for terminal output, and number formatting shared by every command.
#include <cstdint>
#include <string>
#include <vector>

namespace glam {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header, std::vector<bool> right_aligned = {});
  void add_row(std::vector<std::string> row);
  bool empty() const { return rows_.size() <= 1; }  // no rows under the header
  std::string render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

// 1161.8e9 -> "1.16T"; 96.65e9 -> "96.6B" (three significant digits, K/M/B/T suffix).
std::string format_count(double value);
// 1 -> "1 chip", 64 -> "64 chips".
std::string format_chips(int64_t chips);
// Fixed-point with the given decimals.
std::string format_fixed(double value, int decimals);
// `digits` significant digits, trailing zeros kept, no exponent: (9.996, 3) -> "10.0", (154.04, 4) ->
// "154.0"; from 10^digits (after rounding) whole numbers.
std::string format_digits(double value, int digits);
// The shortest text that reads back as the value: 0.9, 2, 1e+09, 1e-04.
std::string format_shortest(double value);
// Signed percentage: 0.0312 -> "+3.1%".
std::string format_percent(double fraction, int decimals = 1);
// 3.2e9 bytes -> "2.98 GiB".
std::string format_bytes(double bytes);
// Seconds as "7.41 s", "3.2 ms", "41 us".
std::string format_seconds(double seconds);
// A long span in the unit that reads best: "45 s", "12.5 min", "3.2 h", "4.1 days".
std::string format_duration(double seconds);

}  // namespace glam
