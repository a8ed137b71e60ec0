#pragma once
// The GPU's own energy counter: NVML's total energy since the driver loaded (Volta and newer), read
// around the timed steps, so that run records carry what the GPU drew and the simulator's energy
// model can be checked against it. NVML comes with the driver, not the toolkit, so it is loaded at
// run time: a machine without it (or a CPU-only build) only loses the energy figures.
#include <string>

namespace glam::exec {

class GpuEnergyMeter {
 public:
  // The GPU of the CUDA device index; never throws: available() and why_not() say how it went.
  explicit GpuEnergyMeter(int cuda_device);
  ~GpuEnergyMeter();
  GpuEnergyMeter(const GpuEnergyMeter&) = delete;
  GpuEnergyMeter& operator=(const GpuEnergyMeter&) = delete;

  bool available() const { return device_ != nullptr; }
  const std::string& why_not() const { return why_not_; }
  // Joules since the driver loaded; a negative value when unavailable or the read failed.
  double read_joules() const;

 private:
  void* library_ = nullptr;
  void* device_ = nullptr;
  void* energy_fn_ = nullptr;
  void* shutdown_fn_ = nullptr;
  std::string why_not_;
};

}  // namespace glam::exec
