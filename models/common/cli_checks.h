#pragma once
// Option checks and parse-error reporting shared by glamsim and glamexec (CLI11). CLI11's own
// range checks print "Value 0 not in range 0.000000 to 1.79e308"; these name the option, the value
// and what was expected, in the programs' "<program>: error: ..." form.
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>

#include <CLI/CLI.hpp>

#include "common/errors.h"

namespace glam::cli_checks {

// A whole number of at least `lo` (and at most `hi`).
inline CLI::Validator integer_at_least(int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max()) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
          return "got '" + text + "', expected a whole number " +
                 (hi == std::numeric_limits<int64_t>::max() ? "of at least " + std::to_string(lo)
                                                            : "from " + std::to_string(lo) + " to " + std::to_string(hi));
        text = std::to_string(v);  // CLI11 converts with base 0: "010" would be octal 8
        return "";
      },
      "INT>=" + std::to_string(lo));
}

// A finite number from `lo` to `hi` (fractions, shares).
inline CLI::Validator number_between(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        double v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || end != text.data() + text.size() || !(v >= lo && v <= hi))
          return "got '" + text + "', expected a number from " + CLI::detail::to_string(lo) + " to " +
                 CLI::detail::to_string(hi);
        return "";
      },
      "NUMBER");
}

// A path to write to, `what` it names ("a file name", "a folder name"): an empty one is refused, not
// taken for no output.
inline CLI::Validator output_path(const std::string& what) {
  return CLI::Validator(
      [what](std::string& text) -> std::string { return text.empty() ? "got '', expected " + what : ""; }, "PATH");
}

// --format of both programs: "text" (also spelt "table") or "json"; "table" is read as "text".
inline CLI::Validator output_format() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text == "table") text = "text";
        return text == "text" || text == "json" ? "" : "got '" + text + "', expected text (or table) or json";
      },
      "text|json");
}

// A non-negative whole number that fits 64 bits (seeds): no sign, no wrap-around.
inline CLI::Validator unsigned_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || end != text.data() + text.size())
          return "got '" + text + "', expected a whole number from 0 to 18446744073709551615";
        text = std::to_string(v);  // as above: decimal, whatever CLI11's base detection would make of it
        return "";
      },
      "UINT");
}

// The exit code once the output is out: 0, or 1 after an error when standard output did not take all
// of it (a full disk, a closed descriptor), which would otherwise pass for success with the figures lost.
// (A reader that closes a pipe early ends the program by SIGPIPE first. Under mpirun the ranks write
// to mpirun's pipe: only mpirun sees the disk, so there --record is the output to rely on.)
inline int stdout_exit_code(const char* program) {
  errno = 0;
  std::cout.flush();
  const bool written = std::cout.good() && std::fflush(stdout) == 0 && !std::ferror(stdout);
  if (written) return 0;
  std::cerr << program << ": error: could not write the output to standard output"
            << (errno ? std::string(" (") + std::strerror(errno) + ")" : std::string()) << "\n";
  return 1;
}

// What main does with a CLI11 parse error: --help and --version print and exit 0 (1 when the output is
// lost); anything else is one line on stderr and exit code 2.
inline int report_parse_error(CLI::App& app, const CLI::ParseError& e, const std::string& program) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {  // --help, --version
    app.exit(e);
    return stdout_exit_code(program.c_str());
  }
  std::string what = e.what();
  // "glamexec frobnicate": CLI11 says only that a subcommand is required.
  if (app.get_subcommands().empty() && !app.remaining().empty() && app.remaining().front().rfind('-', 0) != 0) {
    what = "unknown command '" + app.remaining().front() + "': expected one of";
    for (const CLI::App* sub : app.get_subcommands({})) what += " " + sub->get_name();
  }
  std::cerr << program << ": error: " << what << " (" << program << " --help lists the commands and options)\n";
  return kExitBadInput;
}

}  // namespace glam::cli_checks
