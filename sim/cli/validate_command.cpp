#include <filesystem>
#include <iostream>
#include <set>
#include <system_error>

#include "cli/command.h"
#include "common/atomic_output.h"
#include "common/cli_checks.h"
#include "validate/validation.h"

namespace glam::cli {

void add_validate_command(CLI::App& app) {
  struct Options {
    std::vector<std::string> records;
    std::string calibration, out_dir, format = "text", fidelity = "analytical";
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("validate", "Simulate executor run records and compare with what they measured");
  cmd->add_option("records", opts->records, "Run records (glamexec train --record)")->required();
  cmd->add_option("--calibration", opts->calibration, "Calibration profile of the device the records ran on");
  cmd->add_option("--fidelity", opts->fidelity, "analytical or flow");
  cmd->add_option("--out", opts->out_dir, "Write report.md, plot.svg and validation.json here")
      ->check(cli_checks::output_path("a folder name"));
  cmd->add_option("--format", opts->format, "text (or table) or json")->transform(cli_checks::output_format());
  cmd->callback([opts] {
    if (!opts->out_dir.empty()) check_output_folder("--out", opts->out_dir, {"report.md", "plot.svg", "validation.json"});
    // A record given twice would count twice in the medians.
    std::set<std::filesystem::path> seen;
    for (const auto& record : opts->records) {
      std::error_code ec;
      const std::filesystem::path same = std::filesystem::weakly_canonical(record, ec);
      if (!seen.insert(ec ? std::filesystem::path(record) : same).second)
        throw UsageError("record " + record + " is given twice: each record once");
    }
    std::optional<std::string> profile;
    if (!opts->calibration.empty()) profile = opts->calibration;
    ValidationSummary s = validate_records(opts->records, profile, parse_fidelity(opts->fidelity));
    if (!opts->out_dir.empty())
      write_directory_atomically(opts->out_dir, {{"report.md", s.to_markdown("plot.svg")},
                                                 {"plot.svg", s.plot_svg()},
                                                 {"validation.json", s.to_json().dump(2) + "\n"}});
    if (opts->format == "json") std::cout << s.to_json().dump(2) << "\n";
    else std::cout << s.to_text();
  });
}

}  // namespace glam::cli
