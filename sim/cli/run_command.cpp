#include <unistd.h>

#include <chrono>
#include <iostream>

#include "cli/command.h"
#include "cli/simulation_options.h"
#include "common/atomic_output.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "report/step_report.h"

namespace glam::cli {

void add_run_command(CLI::App& app) {
  auto opts = std::make_shared<SimulationOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Simulate one training step of a model on a cluster");
  opts->register_options(*cmd);
  cmd->callback([opts] {
    auto t0 = std::chrono::steady_clock::now();
    if (!opts->out_dir.empty())
      check_output_folder("--out", opts->out_dir, {"config.json", "stats.txt", "trace.json", "layers.csv", "host.txt"});
    bool show_progress = !opts->quiet && isatty(STDERR_FILENO);
    ResolvedSimulation sim = opts->resolve(show_progress);
    if (show_progress)
      sim.input.progress = [t0](double done) {
        // Only runs that last more than a couple of seconds report progress.
        double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (elapsed > 2) std::cerr << "\rglamsim: simulating the step, " << static_cast<int>(100 * done) << "% of ops" << std::flush;
      };
    StepResult r = simulate_step(sim.input);
    if (show_progress) std::cerr << "\r\033[K" << std::flush;
    if (!r.fits_memory && !opts->allow_oom)
      throw UsageError("the plan needs " + format_bytes(r.memory.total_bytes()) + " per chip but " +
                       sim.input.cluster.id() + " chips hold " + format_bytes(sim.input.usable_hbm_bytes()) +
                       usable_hbm_note(sim.input) +
                       " (weights " + format_bytes(r.memory.weights_bytes) + ", gradients " +
                       format_bytes(r.memory.gradients_bytes) + ", optimizer " +
                       format_bytes(r.memory.optimizer_bytes) + ", activations " +
                       format_bytes(r.memory.activations_bytes) + ", working buffers " +
                       format_bytes(r.memory.working_bytes) +
                       (r.memory.communication_bytes > 0
                            ? ", all-to-all channels " + format_bytes(r.memory.communication_bytes)
                            : "") +
                       ")" + fitting_hint(sim.input.plan, !opts->plan_file.empty()));
    HostFigures host;
    host.wall_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    host.peak_rss_bytes = peak_rss_bytes();
    if (!opts->out_dir.empty()) write_directory_atomically(opts->out_dir, step_output_files(sim.input, r, host));
    if (opts->format == "json") {
      nlohmann::json j = step_summary_json(sim.input, r, host);
      if (opts->list_layouts) j["layouts"] = sim.layouts_json();
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << step_summary_text(sim.input, r, host) << edited_copy_note(opts->model, sim.input.model)
                << sim.plan_note;
      if (opts->list_layouts) std::cout << sim.layouts_text();
    }
  });
}

}  // namespace glam::cli
