// The CUDA emulator's device memory: one reserved address range that the host
// can only touch while emulated device work runs (kernels, copies, cuBLASLt,
// NCCL). Host code that dereferences a device pointer, which would crash or
// read garbage on a real GPU, faults here at once.
#pragma once

#include <cstddef>
#include <string>

namespace emu {

constexpr size_t kDeviceBytes = size_t{16} << 30;  // what the emulated GPU reports

void* device_alloc(size_t bytes);  // nullptr when the range is full
bool device_free(void* p);         // false for a pointer device_alloc did not return

// True when [p, p + bytes) lies inside one live allocation.
bool is_device_range(const void* p, size_t bytes);
// True when p is inside the reserved range at all (live or not).
bool is_device_address(const void* p);
// "0x... (inside no allocation)" style description for error messages.
std::string describe_address(const void* p, size_t bytes);

// While one is alive, device memory is readable and writable from the host.
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

}  // namespace emu
