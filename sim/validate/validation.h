#pragma once
// Simulated against measured: for each executor run record, simulate the same model, first
// layers, plan, batch, routing histograms and device, and compare the step and every op id.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compute/calibration_profile.h"
#include "engine/step_simulator.h"
#include "validate/run_record.h"

namespace glam {

struct OpComparison {
  std::string id;
  int stage = 0;  // the pipeline stage that runs it
  double measured_s = 0, simulated_s = 0;
  std::string collective;  // "all_to_all", "all_reduce", ... for collectives; empty for compute ops
  std::string axis;        // the ranks it runs over: "tp", "dp", "ep", "pp", ... (collectives only)
  double error() const { return (simulated_s - measured_s) / measured_s; }
};

struct RecordValidation {
  RunRecord record;
  std::string cluster;
  double simulated_step_s = 0;
  double step_error() const { return (simulated_step_s - record.step_median_s) / record.step_median_s; }
  // The energy model's mean chip power over the record's measured energy window (no host share):
  // idle power all window long, plus the simulated step's above-idle power for the share of the
  // window the steps take at the measured pace (timed steps x measured median step; the op timers'
  // extra waits count as idle). Beside the GPUs' measured power when the record has it
  // (record.measured_power_W > 0).
  double simulated_chip_power_W = 0;
  double power_error() const { return (simulated_chip_power_W - record.measured_power_W) / record.measured_power_W; }
  std::string chip_kind;                   // the simulated chip
  double chip_runtime_reserved_bytes = 0;  // what plans keep back on it (ChipSpec)
  std::vector<OpComparison> ops;  // op ids present in both
  std::vector<std::string> unmatched;  // measured op ids the simulation does not have
  // Op ids whose time came from a profile curve measured only at sizes far from theirs (a guess).
  int64_t ops_beyond_measured = 0;
  // How the machine the calibration profile measured differs from the record's (its host or its
  // device name), or that the profile names none; empty where they agree or the record names none.
  std::string machine_note;
  // What the comparison left out or assumed: measured ops it did not compare, uniform routing for a
  // record without routing histograms. Shown with the table, so no figure hides them.
  std::vector<std::string> notes() const;
  // Measured and simulated seconds per step of each collective kind over each axis ("all_reduce over
  // tp"), summed over its op ids.
  std::map<std::string, std::pair<double, double>> collectives() const;
  // Pipeline stages: each stage's time in its compared ops (measured, simulated) per step; the rest
  // of the step it waits (the bubble, and the other stages' longer passes).
  std::vector<std::pair<double, double>> stage_busy() const;
};

struct ValidationSummary {
  std::vector<RecordValidation> records;
  std::string calibration;  // the profile's file, or "" for the chip kind's defaults
  std::string fidelity;     // analytical or flow
  std::string command() const;  // the glamsim validate command that reproduces this summary
  double median_abs_step_error = 0, max_abs_step_error = 0, median_abs_op_error = 0;
  // Over each record's collectives per step by kind and axis (RecordValidation::collectives).
  double median_abs_collective_error = 0, max_abs_collective_error = 0;
  nlohmann::json to_json() const;
  std::string to_text() const;
  std::string to_markdown(const std::string& plot_file) const;
  std::string plot_svg() const;  // simulated against measured, log-log, one point per op and step
};

// The simulation input matching a record: a CPU record runs on a single-node cluster of `ranks`
// CPU "chips" whose compute, memory and links come from the calibration profile; a CUDA record
// on one H200 (or a DGX H200 node for several ranks).
SimulationInput simulation_for(const RunRecord& r, const std::optional<CalibrationProfile>& profile,
                               Fidelity fidelity);

// The host a calibration profile measured, as a cluster: one node of as many ranks as its largest
// measured collective group, with the profile's figures (as a record of those ranks would run on).
// Throws UsageError when it measured no collectives (one rank).
Cluster profile_host_cluster(const CalibrationProfile& profile);

// Throws ConfigError / UsageError on a record or profile that does not fit.
ValidationSummary validate_records(const std::vector<std::string>& record_files,
                                   const std::optional<std::string>& profile_file, Fidelity fidelity);

}  // namespace glam
