#pragma once
// A whole training run from one simulated step: steps for the token budget, wall-clock days,
// chip-hours, energy (IT and facility) and emissions.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "energy/energy_model.h"
#include "engine/step_simulator.h"
#include "planner/interruptions.h"

namespace glam {

struct FacilityParameters {
  double pue = 1;
  double carbon_kg_per_kWh = 0;
  std::optional<double> price_per_kWh;
};

// The run's energy by part, MWh.
struct RunEnergy {
  double chip_compute = 0, chip_idle = 0, host = 0, network = 0, facility_overhead = 0;
  double it() const { return chip_compute + chip_idle + host + network; }
  double total() const { return it() + facility_overhead; }
};

struct TrainingEstimate {
  double tokens = 0;
  double steps = 0;
  double step_time_s = 0;
  // Expected wall-clock hours: the steps' time, plus checkpoints, restarts and lost work when
  // interruptions are modelled.
  double train_hours = 0;
  double chip_hours = 0;
  double tco2e = 0;
  double mfu = 0;
  std::optional<double> electricity_cost;
  StepEnergy step_energy;
  RunEnergy energy;
  double it_energy_MWh() const { return energy.it(); }
  // IT power per chip over the whole run: the step's, less where checkpoints and restarts keep the
  // chips at their idle power (the step's until the run's hours are known).
  double average_power_per_chip_W() const {
    return chip_hours > 0 ? it_energy_MWh() * 1e6 / chip_hours : step_energy.average_power_per_chip_W;
  }
  double facility_energy_MWh() const { return energy.total(); }
  FacilityParameters facility;
  std::optional<InterruptedRun> interruptions;
  nlohmann::json to_json() const;
};

// With interruption parameters, the run also writes checkpoints and loses time to failures: the chips
// draw the step's power while they compute (lost work included) and the step's idle, host and
// network power while they write checkpoints and restart.
TrainingEstimate estimate_training(const SimulationInput& in, const StepResult& step, double tokens,
                                   const FacilityParameters& facility,
                                   const std::optional<InterruptionParameters>& interruptions = {});

// The cluster's own figures, overridden where the user gave a value; throws UsageError on PUE < 1.
FacilityParameters facility_for(const Cluster& c, std::optional<double> pue, std::optional<double> carbon,
                                std::optional<double> price_per_kWh);

}  // namespace glam
