#pragma once
// The emulated GPU's memory: allocations in one reserved address range (the arena), each between
// guard bytes, and readable and writable only while something the GPU would do is running: a kernel,
// a copy or memset, a product, an NCCL call. Host code that reads or writes device memory directly
// (a crash or garbage on a real GPU) faults, and the fault is reported as such.
#include <cstddef>

namespace glam_emu {

// Zero-initialised? No: filled with 0xff bytes, as a GPU leaves memory unwritten. Null when out of room.
void* device_allocate(size_t bytes);
// False for a pointer device_allocate did not return.
bool device_release(void* p);
// Whether [p, p + bytes) lies inside one allocation.
bool on_device(const void* p, size_t bytes);
// Throws std::runtime_error when a guard byte changed: something wrote outside an allocation.
void check_guards();

// Marks bytes as not to be touched (poison) or as usable again, for the kernels built with
// AddressSanitizer; nothing in a program built without it.
void poison(const void* p, size_t bytes);
void unpoison(const void* p, size_t bytes);

// Device memory is accessible while one of these is alive (any thread).
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

}  // namespace glam_emu
