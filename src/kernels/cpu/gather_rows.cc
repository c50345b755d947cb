#include <cstring>
#include <stdexcept>
#include <string>

#include "src/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

void gather_rows(void* dst, const void* src, const int32_t* index_R, int64_t R, int64_t rows, int64_t row_bytes) {
  for (int64_t i = 0; i < R; ++i) {
    if (index_R[i] < 0 || index_R[i] >= rows) {
      throw std::logic_error("gather_rows: index " + std::to_string(index_R[i]) + " outside the " +
                             std::to_string(rows) + " rows of src");
    }
    std::memcpy(static_cast<char*>(dst) + i * row_bytes, static_cast<const char*>(src) + index_R[i] * row_bytes,
                static_cast<size_t>(row_bytes));
  }
}

}  // namespace moe::cpu
