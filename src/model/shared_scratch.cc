#include "src/model/shared_scratch.h"

#include <stdexcept>
#include <vector>

namespace moe {

Tensor SharedScratch::get(const std::string& role, std::initializer_list<int64_t> shape, DType dtype) {
  auto it = buffers_.find(role);
  if (it == buffers_.end()) return buffers_[role] = pool_.alloc(shape, dtype);
  const Tensor& t = it->second;
  const std::vector<int64_t> want(shape);
  if (t.dtype != dtype || std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim) != want) {
    throw std::logic_error("SharedScratch: role " + role + " is " + t.shape_string() + " " + dtype_name(t.dtype) +
                           ", asked for " + shape_text(want) + " " + dtype_name(dtype));
  }
  return t;
}

}  // namespace moe
