#pragma once
// Times the named regions of a training step. Op ids are the StepGraph's: "L{layer}.{op}.{fwd|bwd}"
// and the global ones ("embed.fwd", "logits.bwd", "grad_allreduce", "optimizer", ...). A region
// that runs several times in a step (several kernels under one id) is summed within the step.
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "kernel_context.h"

namespace glam::exec {

struct OpStats {
  std::vector<double> seconds;  // one entry per recorded step
  double flops = 0;             // per step
  double bytes = 0;             // per step
};

class OpTimer {
 public:
  // Each region waits for the context's queued kernels and the communicator's queued collectives
  // (NCCL runs them on another stream) at its start and end, so its time is its own.
  explicit OpTimer(const kernels::KernelContext* ctx = nullptr, Communicator* comm = nullptr) : ctx_(ctx), comm_(comm) {}

  class Scope {
   public:
    Scope(OpTimer* t, const std::string* id, double flops, double bytes);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpTimer* timer_;
    const std::string* id_;
    double flops_, bytes_;
    std::chrono::steady_clock::time_point start_;
  };
  // Null-safe: a null timer times nothing.
  static Scope time(OpTimer* t, const std::string& id, double flops = 0, double bytes = 0) {
    return Scope(t, &id, flops, bytes);
  }

  void set_recording(bool on) { recording_ = on; }
  // Prepended to the ids timed from now on: "mb{k}." for micro-batch k > 0, as the StepGraph names
  // the ops of its later micro-batches.
  void set_prefix(std::string prefix) { prefix_ = std::move(prefix); }
  bool recording() const { return recording_; }
  void begin_step();
  void end_step();  // closes the step: ops not seen this step get 0 for it
  const std::map<std::string, OpStats>& ops() const { return ops_; }
  int64_t steps() const { return steps_; }

 private:
  void add(const std::string& id, double seconds, double flops, double bytes);  // under prefix_ + id
  void add_under(const std::string& key, double seconds, double flops, double bytes);
  void wait_for_device() const;
  const kernels::KernelContext* ctx_;
  Communicator* comm_;
  bool recording_ = false;
  int64_t steps_ = 0;
  std::string prefix_;
  std::map<std::string, OpStats> ops_;
  std::map<std::string, double> current_seconds_, current_flops_, current_bytes_;
};

// median, p10, p90 of a sample (linear interpolation between order statistics)
double percentile(std::vector<double> v, double p);

}  // namespace glam::exec
