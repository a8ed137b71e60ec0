#pragma once
// A whole training run from one simulated step: steps for the token budget, wall-clock days,
// chip-hours, energy (IT and facility) and emissions.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "energy/energy_model.h"
#include "engine/step_simulator.h"

namespace glam {

struct FacilityParameters {
  double pue = 1;
  double carbon_kg_per_kWh = 0;
  std::optional<double> price_per_kWh;
};

struct TrainingEstimate {
  double tokens = 0;
  double steps = 0;
  double step_time_s = 0;
  double train_hours = 0;
  double chip_hours = 0;
  double it_energy_MWh = 0;
  double facility_energy_MWh = 0;
  double tco2e = 0;
  double mfu = 0;
  std::optional<double> electricity_cost;
  StepEnergy step_energy;
  FacilityParameters facility;
  nlohmann::json to_json() const;
};

TrainingEstimate estimate_training(const SimulationInput& in, const StepResult& step, double tokens,
                                   const FacilityParameters& facility);

// The cluster's own figures, overridden where the user gave a value; throws UsageError on PUE < 1.
FacilityParameters facility_for(const Cluster& c, std::optional<double> pue, std::optional<double> carbon);

}  // namespace glam
