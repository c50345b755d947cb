// Floats as unsigned keys in the same order: a < b as floats exactly when
// ordered_bits(a) < ordered_bits(b), for every float that is not NaN; -0 sorts
// just below +0, and NaN (positive) above +infinity. Sorts and selections that
// must agree between the CPU and a GPU's radix passes compare these keys.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOE_FLOAT_ORDER_FN __host__ __device__ inline
#else
#define MOE_FLOAT_ORDER_FN inline
#endif

namespace moe {

MOE_FLOAT_ORDER_FN uint32_t ordered_bits(float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  // Negative floats: all bits flipped (a larger magnitude is smaller);
  // positive ones: the sign bit set, so they follow every negative one.
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

}  // namespace moe
