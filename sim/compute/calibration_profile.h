#pragma once
// Calibration profile: how close a chip gets to its roofline per op kind, and how its
// collectives deviate from the link model. Measured profiles come from `glamexec calibrate`;
// until one exists, defaults per chip kind (calibration_profile.cpp) are used.
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "step_graph.h"

namespace glam {

// Efficiency as a function of an op's size, interpolated in log space between points and
// held flat above the last. A single point is a constant. The time an efficiency gives, size /
// efficiency, never falls as the size grows: where the points rise steeply (a noisy measurement), a
// size takes as long as the slowest smaller one.
struct EfficiencyCurve {
  std::vector<double> sizes;   // FLOPs (compute curves) or bytes (memory and network curves)
  std::vector<double> values;  // fraction of peak, in (0, 1]
  // Below the first point the efficiency is held, or with hold_time the time (a curve with the
  // latency inside it, as measured collectives are: a smaller buffer is no faster).
  double at(double size, bool hold_time = false) const;
};

// A collective measured over groups of `ranks` ranks: bus bandwidth (NCCL-tests' convention: the
// bytes each rank's link carries over the time, latency included) as a fraction of the profile's
// link bandwidth, by per-rank buffer bytes.
struct CollectiveCurve {
  CollectiveKind kind = CollectiveKind::kAllReduce;
  int ranks = 2;
  EfficiencyCurve bus_efficiency;
  // The latency is inside the measurement: below the smallest buffer measured the time is held.
  double at(double bytes) const { return bus_efficiency.at(bytes, true); }
};

struct CalibrationProfile {
  std::string source;  // file it came from, or "default for <chip kind>"
  bool from_file = false;  // read from a file (measured), not a chip kind's defaults
  std::string device;  // chip kind it describes
  std::string precision;  // the measured products' arithmetic (fp32, tf32, bf16); empty in older profiles
  // The host and the device (CPU model or GPU name) it measured, as run records name them; empty in
  // older profiles and in defaults.
  std::string host, device_name;
  EfficiencyCurve matmul, attention, memory;
  // Curves for single ops by op_curve_key ("attn_softmax.fwd") or, from older profiles, by name
  // for every phase ("attn_softmax"), measured by running the executor's own kernels; they take
  // precedence over the curve of the op's kind. Sizes are
  // FLOPs for matrix ops and bytes for memory-bound ones, as the StepGraph counts them.
  std::map<std::string, EfficiencyCurve> ops;
  // The same measured with one rank alone on the host and speedup_threads threads (CPU profiles;
  // relative to peak_flops and memory_bandwidth_Bps, so values may exceed 1). Used for one-rank
  // runs with that many threads.
  std::map<std::string, EfficiencyCurve> ops_alone;
  double op_overhead_s = 0;           // fixed cost per op (kernel launch, dispatch)
  EfficiencyCurve network_bandwidth;  // fraction of link bandwidth reached, by message size
  double network_latency_factor = 1;  // multiplies link latencies
  // Fixed cost of every collective call beyond its routes' latencies (the library's launch and
  // protocol), where no measured curve covers the collective.
  double collective_base_latency_s = 0;
  // Measured on hosts without datasheet figures (CPUs): the chip's compute peak (the best GEMM
  // rate), memory bandwidth, threads per rank, and the point-to-point link between ranks.
  // Zero when the profile uses the chip kind's datasheet figures.
  double peak_flops = 0;
  double memory_bandwidth_Bps = 0;
  int threads = 0;
  int speedup_threads = 0;    // a rank with this many threads runs products
  double thread_speedup = 1;  // this much faster than with `threads` (measured, small products scale poorly)
  double link_bandwidth_Bps = 0;
  double link_latency_s = 0;
  // Measured chip power (GPUs, from their energy counters): idle, and running the best products
  // back to back. Zero when the profile uses the chip kind's figures.
  double idle_W = 0;
  double busy_W = 0;
  // Measured collectives; where one exists for a collective's kind, it replaces network_bandwidth
  // and the route latencies for that collective.
  std::vector<CollectiveCurve> collectives;
  // The curve of `kind` measured at the group size nearest `ranks` (by ratio); nullptr if none.
  const CollectiveCurve* collective_curve(CollectiveKind kind, int ranks) const;
  // The share of link bandwidth a collective's flows reach: `measured` (the collective's curve, or
  // nullptr) at the buffer, else network_bandwidth at the buffer or at the flow's size, as the
  // schedule streams it (CollectiveSchedule::efficiency_at_buffer).
  double link_efficiency(const CollectiveCurve* measured, bool at_buffer, double buffer_bytes,
                         double flow_bytes) const {
    return measured ? measured->at(buffer_bytes) : network_bandwidth.at(at_buffer ? buffer_bytes : flow_bytes);
  }
  nlohmann::json to_json() const;
};

CalibrationProfile default_profile(const std::string& chip_kind);
// Throws ConfigError naming the file and key on bad content.
CalibrationProfile load_profile(const std::string& path);

}  // namespace glam
