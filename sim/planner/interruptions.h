#pragma once
// Interruptions of a long run: the chips fail now and then, the run restarts from its last
// checkpoint, and writing checkpoints costs time too. Failures are taken as a Poisson process (each
// chip independent, exponential times between failures), which is what Daly's model assumes:
//
//   J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
//   Future Generation Computer Systems 22 (2006) 303-312.
//
// With M the cluster's mean time between failures, delta the time to write a checkpoint, R the time
// to restart (R includes reading the checkpoint back), tau the compute between checkpoints and T_s
// the failure-free compute time, the expected wall-clock time is (Daly's eq. 13, failures allowed
// during checkpoints and restarts too)
//
//   T_w = M exp(R / M) (exp((tau + delta) / M) - 1) T_s / tau,
//
// which is smallest at tau = M (1 + W0(-exp(-1 - delta / M))) (W0: Lambert's principal branch);
// Young's sqrt(2 delta M) is its first-order approximation.
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace glam {

struct InterruptionParameters {
  double chip_mtbf_hours = 0;       // mean time between interruptions of one chip (with its host share)
  double checkpoint_Bps = 0;        // write and read bandwidth of the checkpoint storage, whole cluster
  double restart_s = 600;           // from a failure to training again, before the checkpoint read
  std::optional<double> interval_s;  // compute between checkpoints; empty: the optimum
};

struct InterruptedRun {
  double checkpoint_bytes = 0;
  double checkpoint_write_s = 0;  // delta
  double restart_s = 0;           // R: the restart and the checkpoint read
  double system_mtbf_s = 0;       // M = chip MTBF / chips
  double interval_s = 0;          // tau, a whole number of steps
  int64_t interval_steps = 0;
  bool interval_is_optimum = false;
  double compute_s = 0;           // T_s, failure-free
  double wall_s = 0;              // T_w, expected
  // T_w split: compute, checkpoint writes (T_s / tau of them), restarts (failed attempts included),
  // and work lost since the last checkpoint (with any checkpoint write a failure cut short).
  double checkpoint_total_s = 0;
  double expected_failures = 0;   // T_w / M
  double restart_total_s = 0;
  double lost_work_s = 0;         // charged as compute
  double goodput() const { return compute_s / wall_s; }
  double checkpoints() const { return compute_s / interval_s; }
  // Failures so frequent, next to a checkpoint and a restart, that the run would take over 1,000 times
  // its compute time (or for ever) are taken as a run that does not finish.
  bool finishes() const { return wall_s <= 1000 * compute_s; }
  std::string why_it_does_not_finish() const;
  // Seconds the chips compute (the run's steps and the ones done again) and seconds they wait.
  double busy_s() const { return compute_s + lost_work_s; }
  double idle_s() const { return checkpoint_total_s + restart_total_s; }
  nlohmann::json to_json() const;
};

// The tau that minimises T_w for a cluster MTBF M and a checkpoint write time delta (seconds).
double optimal_checkpoint_interval(double system_mtbf_s, double checkpoint_write_s);

// Daly's expected wall-clock time (above); infinity when it overflows.
double expected_wall_time(double compute_s, double system_mtbf_s, double checkpoint_write_s, double restart_s,
                          double interval_s);

// The run of `steps` steps of `step_s` seconds on `chips` chips, checkpointing `checkpoint_bytes`.
// The interval is rounded to whole steps, at least one.
InterruptedRun interrupted_run(double steps, double step_s, int64_t chips, double checkpoint_bytes,
                               const InterruptionParameters& p);

}  // namespace glam
