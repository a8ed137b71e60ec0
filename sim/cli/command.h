#pragma once
// Each glamsim subcommand lives in its own file and registers itself on the CLI11 app.
// A subcommand's callback does all validation first, then computes, then prints its whole
// output at once, so bad input never leaves partial output behind.
#include <CLI/CLI.hpp>

namespace glam::cli {

void add_models_command(CLI::App& app);
void add_topo_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_validate_command(CLI::App& app);
void add_collective_command(CLI::App& app);

}  // namespace glam::cli
