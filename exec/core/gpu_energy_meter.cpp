#include "core/gpu_energy_meter.h"

#include <dlfcn.h>

#include <exception>

#include "device.h"

namespace glam::exec {
namespace {

// The few NVML entry points used, with their C signatures (nvml.h is not in the CUDA toolkit);
// every NVML call returns 0 (NVML_SUCCESS) on success.
using InitFn = int (*)();
using ShutdownFn = int (*)();
using HandleByPciFn = int (*)(const char* pci_bus_id, void** device);
using EnergyFn = int (*)(void* device, unsigned long long* millijoules);

}  // namespace

GpuEnergyMeter::GpuEnergyMeter(int cuda_device) {
  std::string pci;
  try {
    pci = kernels::cuda_device_pci_bus_id(cuda_device);
  } catch (const std::exception& e) {  // no such device
    why_not_ = e.what();
    return;
  }
  if (pci.empty()) {
    why_not_ = "no CUDA device";
    return;
  }
  library_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!library_) {
    why_not_ = "NVML (libnvidia-ml.so.1) not found";
    return;
  }
  auto init = reinterpret_cast<InitFn>(dlsym(library_, "nvmlInit_v2"));
  auto by_pci = reinterpret_cast<HandleByPciFn>(dlsym(library_, "nvmlDeviceGetHandleByPciBusId_v2"));
  energy_fn_ = dlsym(library_, "nvmlDeviceGetTotalEnergyConsumption");
  void* shutdown = dlsym(library_, "nvmlShutdown");
  if (!init || !by_pci || !energy_fn_ || !shutdown) {
    why_not_ = "NVML lacks the energy counter entry points";
    return;
  }
  if (const int rc = init(); rc != 0) {
    why_not_ = "nvmlInit_v2 returned " + std::to_string(rc);
    return;
  }
  shutdown_fn_ = shutdown;  // from here on, the destructor pairs the init
  void* device = nullptr;
  if (const int rc = by_pci(pci.c_str(), &device); rc != 0 || !device) {
    why_not_ = "NVML does not know the GPU at PCI " + pci + " (" + std::to_string(rc) + ")";
    return;
  }
  unsigned long long mj = 0;
  if (const int rc = reinterpret_cast<EnergyFn>(energy_fn_)(device, &mj); rc != 0) {
    why_not_ = "the GPU has no energy counter (NVML " + std::to_string(rc) + ")";
    return;
  }
  device_ = device;
}

GpuEnergyMeter::~GpuEnergyMeter() {
  if (shutdown_fn_) reinterpret_cast<ShutdownFn>(shutdown_fn_)();
  if (library_) dlclose(library_);
}

double GpuEnergyMeter::read_joules() const {
  if (!device_) return -1;
  unsigned long long mj = 0;
  if (reinterpret_cast<EnergyFn>(energy_fn_)(device_, &mj) != 0) return -1;
  return static_cast<double>(mj) * 1e-3;
}

}  // namespace glam::exec
