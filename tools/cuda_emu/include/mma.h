// The CUDA emulator's WMMA (nvcuda::wmma, 16x16x16 bf16 with fp32
// accumulation). Lane 0 of the warp holds and computes the whole tile; the
// other lanes' fragments are unused. So a load that runs before the other
// lanes have written its input, or a read of a stored tile before the warp
// synchronizes, sees stale values, as it may on a device. The products are
// plain fp32 fused multiply-adds in k order, not the tensor cores' rounding.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_runtime.h"

namespace nvcuda::wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "cuda_emu: only 16x16x16 WMMA tiles");
  float tile[16][16];  // (row, col); held by lane 0 of the warp
};

namespace detail {
inline bool leader() { return emu::lane() == 0; }
// What the hardware requires of every WMMA load and store: a 256-bit aligned
// pointer and a stride that is a multiple of 16 bytes.
template <typename T>
void check_operand(const T* p, unsigned ldm, const char* call) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) {
    emu::fail_block((std::string(call) + ": pointer not 256-bit aligned").c_str());
  }
  if (ldm * sizeof(T) % 16 != 0) {
    emu::fail_block((std::string(call) + ": ldm " + std::to_string(ldm) + " is not a multiple of 16 bytes").c_str());
  }
}
inline float value(const __nv_bfloat16& x) { return static_cast<float>(x); }
inline float value(const float& x) { return x; }
}  // namespace detail

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same<Layout, row_major>::value || std::is_same<Layout, col_major>::value,
                "matrix_a/matrix_b fragments name their layout");
  detail::check_operand(p, ldm, "wmma::load_matrix_sync");
  if (!detail::leader()) return;
  constexpr bool row = std::is_same<Layout, row_major>::value;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.tile[r][c] = detail::value(row ? p[r * ldm + c] : p[c * ldm + r]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  detail::check_operand(p, ldm, "wmma::load_matrix_sync");
  if (!detail::leader()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.tile[r][c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  detail::check_operand(p, ldm, "wmma::store_matrix_sync");
  if (!detail::leader()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.tile[r][c];
}

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float x) {
  if (!detail::leader()) return;
  for (auto& row : f.tile)
    for (float& e : row) e = detail::value(T(x));
}

template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  if (!detail::leader()) return;
  float out[16][16];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float s = c.tile[m][n];
      for (int k = 0; k < 16; ++k) s = std::fma(a.tile[m][k], b.tile[k][n], s);
      out[m][n] = s;
    }
  std::memcpy(d.tile, out, sizeof out);
}

}  // namespace nvcuda::wmma
