#include "energy/energy_model.h"

#include <algorithm>

namespace glam {

nlohmann::json StepEnergy::to_json() const {
  return {{"chip_compute_J", chip_compute_J}, {"chip_idle_J", chip_idle_J}, {"host_J", host_J},
          {"network_J", network_J},           {"facility_overhead_J", facility_overhead_J},
          {"it_J", it_J()},                   {"total_J", total_J()},
          {"average_power_per_chip_W", average_power_per_chip_W}};
}

StepEnergy step_energy(const SimulationInput& in, const StepResult& r, double pue) {
  const Cluster& c = in.cluster;
  const ChipSpec& chip = c.chip();
  const double chips = c.num_chips();
  const double T = r.step_time_s;
  ComputeModel compute(chip, in.profile, products_precision(in));
  StepEnergy e;
  // Busy-time integral of one rank of each stage: every rank of a stage runs the same program, and
  // each of the pp stages has chips / pp ranks.
  double busy_s = 0;
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const StepOp& op = r.graph.ops[i];
    if (op.kind == OpKind::kCollective) continue;
    const double d = r.timing[i].duration();
    if (d <= 0) continue;
    busy_s += d * compute.activity(op);
  }
  // A profile that measured the chip's power (glamexec calibrate on a GPU) replaces the chip kind's.
  const bool measured = in.profile.busy_W > 0;
  const double idle_W = measured ? in.profile.idle_W : chip.idle_W, busy_W = measured ? in.profile.busy_W : chip.busy_W;
  e.chip_idle_J = idle_W * T * chips;
  e.chip_compute_J = (busy_W - idle_W) * busy_s * chips / static_cast<double>(std::max<int64_t>(1, r.graph.stages));
  e.host_J = chip.host_W_per_chip * T * chips;
  // Links: idle power for the whole step, busy power while carrying the step's bytes.
  std::map<LinkKind, std::pair<double, double>> per_kind;  // bandwidth, busy - idle
  for (const auto& l : c.links()) {
    e.network_J += l.idle_W * T;
    per_kind[l.kind] = {l.bandwidth_Bps, l.busy_W - l.idle_W};
  }
  for (const auto& [kind, bytes] : r.link_bytes) {
    auto it = per_kind.find(kind);
    if (it != per_kind.end() && it->second.first > 0) e.network_J += bytes / it->second.first * it->second.second;
  }
  e.network_J += c.switch_W() * T;
  e.facility_overhead_J = (pue - 1) * e.it_J();
  e.average_power_per_chip_W = e.it_J() / T / chips;
  return e;
}

}  // namespace glam
