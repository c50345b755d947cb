// Tensor: a typed view of memory (pointer, shape, dtype, device). It does not
// own its memory; TensorPool (tensor_pool.h) does. Ops take Tensors so that one
// signature serves the CPU and CUDA backends: the device travels with the data.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace moe {

enum class DType { kF32, kBF16, kI32 };
enum class Device { kCpu, kCuda };

int64_t dtype_bytes(DType t);
const char* dtype_name(DType t);

struct Tensor {
  static constexpr int kMaxDims = 4;

  void* data = nullptr;
  std::array<int64_t, kMaxDims> shape{};
  int ndim = 0;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;

  int64_t numel() const;
  int64_t size(int dim) const;  // negative dims count from the end
  int64_t bytes() const { return numel() * dtype_bytes(dtype); }
  std::string shape_string() const;  // "[4, 512, 256]"

  // Typed access; each checks the dtype (a mismatch is a bug: it throws std::logic_error).
  float* f32() const;
  int32_t* i32() const;

  // The same memory with another shape of equal numel.
  Tensor reshaped(std::initializer_list<int64_t> new_shape) const;
  // Rows [begin, begin + count) of dim 0.
  Tensor rows(int64_t begin, int64_t count) const;
};

// Elements of a shape, and its text as in messages: "[4, 64]".
int64_t numel_of(const std::vector<int64_t>& shape);
std::string shape_text(const std::vector<int64_t>& shape);

// A view of memory owned elsewhere (host memory unless told), 1 to 4 dims.
Tensor view_of(void* data, const std::vector<int64_t>& shape, DType dtype = DType::kF32, Device device = Device::kCpu);

}  // namespace moe
