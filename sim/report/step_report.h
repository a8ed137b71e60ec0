#pragma once
// Everything `glamsim run` writes: the readable summary, the JSON document, and the gem5-style
// output folder (config.json, stats.txt, trace.json, layers.csv).
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "common/text_table.h"
#include "engine/step_simulator.h"

namespace glam {

struct HostFigures {
  double wall_time_s = 0;
  double peak_rss_bytes = 0;
};

// A chip's memory by part (bytes): weights, gradients, optimizer, activations, working.
nlohmann::json memory_breakdown_json(const MemoryFootprint& m);
// The same parts as indented rows under a "memory per chip" row (run's and plan's text reports).
void add_memory_breakdown_rows(TextTable& t, const MemoryFootprint& mem);
// "calibration: ..." with a newline: the profile the compute times rest on, and a default's figures
// (the text reports' last line, since every figure above depends on it).
std::string calibration_line(const CalibrationProfile& cal);

nlohmann::json step_summary_json(const SimulationInput& in, const StepResult& r, const HostFigures& host);
std::string step_summary_text(const SimulationInput& in, const StepResult& r, const HostFigures& host);

// The files of the output folder, by name. stats.txt holds simulated figures only, so the same
// inputs give byte-identical files; host figures go to host.txt.
std::map<std::string, std::string> step_output_files(const SimulationInput& in, const StepResult& r,
                                                     const HostFigures& host);

// Peak resident memory of this process.
double peak_rss_bytes();

}  // namespace glam
