#include "planner/training_estimate.h"

#include <cmath>
#include <sstream>

#include "accounting.h"
#include "common/errors.h"

namespace glam {

namespace {
constexpr double kJoulesPerMWh = 3.6e9;
}

nlohmann::json TrainingEstimate::to_json() const {
  nlohmann::json j = {
      {"tokens", tokens},
      {"steps", steps},
      {"step_time_s", step_time_s},
      {"train_hours", train_hours},
      {"train_days", train_hours / 24},
      {"chip_hours", chip_hours},
      {"it_energy_MWh", it_energy_MWh()},
      {"facility_energy_MWh", facility_energy_MWh()},
      {"tco2e", tco2e},
      {"mfu", mfu},
      {"pue", facility.pue},
      {"carbon_kg_per_kWh", facility.carbon_kg_per_kWh},
      {"average_power_per_chip_W", average_power_per_chip_W()},
      {"energy_breakdown",
       {{"chip_compute_MWh", energy.chip_compute},
        {"chip_idle_MWh", energy.chip_idle},
        {"host_MWh", energy.host},
        {"network_MWh", energy.network},
        {"facility_overhead_MWh", energy.facility_overhead}}},
  };
  j["electricity_cost"] = electricity_cost ? nlohmann::json(*electricity_cost) : nlohmann::json(nullptr);
  if (interruptions) j["interruptions"] = interruptions->to_json();
  return j;
}

namespace {
std::string shortest(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}
}  // namespace

FacilityParameters facility_for(const Cluster& c, std::optional<double> pue, std::optional<double> carbon,
                                std::optional<double> price_per_kWh) {
  FacilityParameters f;
  f.pue = pue.value_or(c.pue());
  f.carbon_kg_per_kWh = carbon.value_or(c.carbon_kg_per_kWh());
  f.price_per_kWh = price_per_kWh ? price_per_kWh : c.price_per_kWh();
  const std::string pue_from = pue ? "--pue " : c.id() + ": facility PUE ";
  const std::string carbon_from = carbon ? "--carbon-intensity " : c.id() + ": carbon intensity ";
  // The ranges of the cluster files' facility figures.
  if (!(f.pue >= 1 && f.pue <= 10))
    throw UsageError(pue_from + shortest(f.pue) + ": expected a finite value of at least 1 (a facility cannot use " +
                     "less energy than its IT load) and at most 10");
  if (!(f.carbon_kg_per_kWh >= 0 && f.carbon_kg_per_kWh <= 10))
    throw UsageError(carbon_from + shortest(f.carbon_kg_per_kWh) + ": expected a finite kgCO2e/kWh from 0 to 10");
  // The cluster files' range (facility.price_per_kWh).
  if (price_per_kWh && !(*price_per_kWh >= 0 && *price_per_kWh <= 1e3))
    throw UsageError("--price-per-kwh " + shortest(*price_per_kWh) + ": expected a finite $/kWh from 0 to 1000");
  return f;
}

TrainingEstimate estimate_training(const SimulationInput& in, const StepResult& step, double tokens,
                                   const FacilityParameters& facility,
                                   const std::optional<InterruptionParameters>& interruptions) {
  TrainingEstimate t;
  t.tokens = tokens;
  t.facility = facility;
  t.steps = std::ceil(tokens / static_cast<double>(in.plan.batch_tokens));
  t.step_time_s = step.step_time_s;
  t.step_energy = step_energy(in, step, facility.pue);
  // Steps' worth of computing, and seconds of waiting at the step's idle, host and network power.
  double busy_steps = t.steps, idle_s = 0;
  if (interruptions) {
    t.interruptions = interrupted_run(t.steps, step.step_time_s, in.cluster.num_chips(), checkpoint_bytes(in.model),
                                      *interruptions);
    if (!t.interruptions->finishes()) return t;  // no hours or energy to speak of
    busy_steps = t.interruptions->busy_s() / step.step_time_s;
    idle_s = t.interruptions->idle_s();
  }
  t.train_hours = (t.interruptions ? t.interruptions->wall_s : t.steps * step.step_time_s) / 3600;
  t.chip_hours = t.train_hours * in.cluster.num_chips();
  const StepEnergy& e = t.step_energy;
  auto run_MWh = [&](double step_J, bool drawn_while_waiting) {
    return (step_J * busy_steps + (drawn_while_waiting ? step_J / step.step_time_s * idle_s : 0.0)) / kJoulesPerMWh;
  };
  t.energy.chip_compute = run_MWh(e.chip_compute_J, false);
  t.energy.chip_idle = run_MWh(e.chip_idle_J, true);
  t.energy.host = run_MWh(e.host_J, true);
  t.energy.network = run_MWh(e.network_J, true);
  t.energy.facility_overhead = (facility.pue - 1) * t.energy.it();
  t.tco2e = t.facility_energy_MWh() * facility.carbon_kg_per_kWh;  // MWh x kg/kWh = t
  t.mfu = step.mfu;
  if (facility.price_per_kWh) t.electricity_cost = t.facility_energy_MWh() * 1000 * *facility.price_per_kWh;
  return t;
}

}  // namespace glam
