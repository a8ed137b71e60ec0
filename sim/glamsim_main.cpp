// glamsim: plans and simulates GLaM training on TPU pods and GPU clusters.
#include <iostream>
#include <system_error>

#include "cli/command.h"
#include "common/cli_checks.h"
#include "common/errors.h"

int main(int argc, char** argv) {
  CLI::App app{"glamsim: simulate and plan Mixture-of-Experts (GLaM) training on TPU pods and GPU clusters"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "glamsim 0.1.0");
  glam::cli::add_models_command(app);
  glam::cli::add_topo_command(app);
  glam::cli::add_run_command(app);
  glam::cli::add_plan_command(app);
  glam::cli::add_validate_command(app);
  glam::cli::add_collective_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return glam::cli_checks::report_parse_error(app, e, "glamsim");
  } catch (const glam::ConfigError& e) {
    std::cerr << "glamsim: error: " << e.what() << "\n";
    return glam::kExitBadInput;
  } catch (const glam::UsageError& e) {
    std::cerr << "glamsim: error: " << e.what() << "\n";
    return glam::kExitBadInput;
  } catch (const std::system_error& e) {  // the file system failed an output: not the program's fault
    std::cerr << "glamsim: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "glamsim: internal error: " << e.what() << "\n";
    return 1;
  }
  return glam::cli_checks::stdout_exit_code("glamsim");
}
