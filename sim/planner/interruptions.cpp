#include "planner/interruptions.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/text_table.h"

namespace glam {

nlohmann::json InterruptedRun::to_json() const {
  return {{"checkpoint_bytes", checkpoint_bytes},
          {"checkpoint_write_s", checkpoint_write_s},
          {"restart_s", restart_s},
          {"system_mtbf_hours", system_mtbf_s / 3600},
          {"checkpoint_interval_hours", interval_s / 3600},
          {"checkpoint_interval_steps", interval_steps},
          {"checkpoint_interval_is_optimum", interval_is_optimum},
          {"compute_hours", compute_s / 3600},
          {"wall_hours", wall_s / 3600},
          {"goodput", goodput()},
          {"checkpoints", checkpoints()},
          {"checkpoint_hours", checkpoint_total_s / 3600},
          {"expected_failures", expected_failures},
          {"restart_hours", restart_total_s / 3600},
          {"lost_work_hours", lost_work_s / 3600}};
}

std::string InterruptedRun::why_it_does_not_finish() const {
  return "a failure every " + format_duration(system_mtbf_s) + " on average, next to " +
         format_duration(checkpoint_write_s) + " per checkpoint and " + format_duration(restart_s) +
         " per restart: the run would take over 1,000 times its compute time";
}

double optimal_checkpoint_interval(double system_mtbf_s, double checkpoint_write_s) {
  // dT_w/dtau = 0 reduces to (1 - x) e^x = e^(-delta/M) for x = tau / M, whose left side falls from 1
  // to 0 over 0 < x < 1: bisection. Written as (1 - x) expm1(x) - x + (1 - e^(-delta/M)) so that
  // a checkpoint far shorter than the MTBF (x near 0) keeps its digits.
  const double d = checkpoint_write_s / system_mtbf_s;
  const double target = -std::expm1(-d);
  double lo = 0, hi = 1;
  for (int i = 0; i < 200 && hi - lo > 1e-15 * hi; ++i) {
    const double x = 0.5 * (lo + hi);
    ((1 - x) * std::expm1(x) - x + target > 0 ? lo : hi) = x;
  }
  return 0.5 * (lo + hi) * system_mtbf_s;
}

double expected_wall_time(double compute_s, double system_mtbf_s, double checkpoint_write_s, double restart_s,
                          double interval_s) {
  const double M = system_mtbf_s;
  const double t = M * std::exp(restart_s / M) * std::expm1((interval_s + checkpoint_write_s) / M) * compute_s / interval_s;
  return std::isfinite(t) ? t : std::numeric_limits<double>::infinity();
}

InterruptedRun interrupted_run(double steps, double step_s, int64_t chips, double checkpoint_bytes,
                               const InterruptionParameters& p) {
  InterruptedRun r;
  r.checkpoint_bytes = checkpoint_bytes;
  r.checkpoint_write_s = checkpoint_bytes / p.checkpoint_Bps;
  r.restart_s = p.restart_s + r.checkpoint_write_s;  // the same storage is read back
  r.system_mtbf_s = p.chip_mtbf_hours * 3600 / static_cast<double>(chips);
  r.compute_s = steps * step_s;
  r.interval_is_optimum = !p.interval_s;
  const double wanted = p.interval_s.value_or(optimal_checkpoint_interval(r.system_mtbf_s, r.checkpoint_write_s));
  // Checkpoints fall between steps; none is needed more often than every step, nor after the last.
  r.interval_steps = static_cast<int64_t>(std::clamp(std::round(wanted / step_s), 1.0, std::max(1.0, steps)));
  r.interval_s = static_cast<double>(r.interval_steps) * step_s;
  r.wall_s = expected_wall_time(r.compute_s, r.system_mtbf_s, r.checkpoint_write_s, r.restart_s, r.interval_s);
  // Expected times over the run (Daly's model): T_s / tau segments of L = tau + delta. A segment takes
  // e^(L/M) - 1 failed attempts of M - L / (e^(L/M) - 1) seconds each on average (an exponential time
  // cut short before L): work lost. Each failed attempt is followed by a restart phase, which fails
  // e^(R/M) - 1 times before one restart completes: M (e^(R/M) - 1) seconds per phase, failed attempts
  // included. These add up to Daly's T_w; every failure, restarts' included, to T_w / M.
  const double M = r.system_mtbf_s, L = r.interval_s + r.checkpoint_write_s;
  const double segments = r.checkpoints();
  r.checkpoint_total_s = segments * r.checkpoint_write_s;
  r.expected_failures = r.wall_s / M;
  r.lost_work_s = segments * (M * std::expm1(L / M) - L);
  r.restart_total_s = segments * std::expm1(L / M) * M * std::expm1(r.restart_s / M);
  return r;
}

}  // namespace glam
