// Helpers shared by the dense-op kernels (embedding, rmsnorm, rope, swiglu,
// elementwise, adamw, cross_entropy .cu): fp32 <-> storage conversion, dtype
// checks and dispatch, warp/block reductions, grid sizes and launch checks.
// Included by .cu files only (nvcc); not part of any C++ header.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "src/core/tensor.h"
#include "src/kernels/cuda/cuda_check.h"
#include "src/kernels/cuda/device_math.cuh"
#include "src/kernels/cuda/stream.h"

namespace moe::cuda::dense {

// ---- dtype checks and dispatch (host) ------------------------------------------

// A named tensor argument, for error messages: "x [37, 100] bf16".
struct Arg {
  const char* name;
  const Tensor& t;
};

inline std::string describe(std::initializer_list<Arg> args) {
  std::string s;
  for (const Arg& a : args) {
    if (!s.empty()) s += ", ";
    s += std::string(a.name) + " " + a.t.shape_string() + " " + dtype_name(a.t.dtype);
  }
  return s;
}

inline bool is_float_type(DType t) { return t == DType::kF32 || t == DType::kBF16; }

// Throws std::logic_error "op: unsupported dtypes (x [..] i32, ...); wants ..." unless ok.
inline void require_dtypes(bool ok, const char* op, std::initializer_list<Arg> args, const char* wants) {
  if (!ok) throw std::logic_error(std::string(op) + ": unsupported dtypes (" + describe(args) + "); wants " + wants);
}

// Throws std::logic_error "op: what (shapes)" unless ok.
inline void require_shapes(bool ok, const char* op, const std::string& what, std::initializer_list<Arg> args) {
  if (!ok) throw std::logic_error(std::string(op) + ": " + what + " (" + describe(args) + ")");
}

// One block per row: the row count must fit gridDim.x (2^31 - 1).
inline void require_grid_rows(int64_t rows, const char* op, std::initializer_list<Arg> args) {
  require_shapes(rows <= int64_t{0x7fffffff}, op, "more rows than a grid has blocks (2^31 - 1)", args);
}

// After a launch: throws naming the op and the tensors if the launch failed.
// The message is only built on failure, so a successful launch costs one call.
inline void check_launch(const char* op, std::initializer_list<Arg> args) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) check(status, std::string(op) + " " + describe(args));
}

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<float>{}) or f(Tag<bf16>{}) for an F32 or BF16 dtype. Callers
// check the dtypes first (require_dtypes) so the message can name the op.
template <typename F>
void with_float_type(DType t, F&& f) {
  if (t == DType::kF32) {
    f(Tag<float>{});
  } else if (t == DType::kBF16) {
    f(Tag<bf16>{});
  } else {
    throw std::logic_error(std::string("dense kernel dispatch: dtype ") + dtype_name(t) + " is not f32 or bf16");
  }
}

// ---- launch geometry -----------------------------------------------------------

// Blocks for a grid-stride loop over n items, capped (the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = int64_t{1} << 20) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

__device__ __forceinline__ int64_t global_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ---- 16-byte accesses --------------------------------------------------------------
// The memory-bound kernels move eight values at a time: one 16-byte word of
// bf16 or two of f32, instead of eight 2- or 4-byte accesses. Pack i is
// elements [8i, 8i + 8); the base pointer must be 16-byte aligned (aligned16).

constexpr int kPack = 8;

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether every tensor of a kernel can be read in packs: aligned, and `n`
// (the row length, or the element count) a multiple of kPack.
inline bool packable(int64_t n, std::initializer_list<const void*> pointers) {
  if (n % kPack != 0) return false;
  for (const void* p : pointers)
    if (p != nullptr && !aligned16(p)) return false;
  return true;
}

// kPack values of T as the 16-byte words that move them.
template <typename T>
union PackWords {
  static constexpr int kWords = kPack * static_cast<int>(sizeof(T)) / 16;
  uint4 word[kWords];
  T value[kPack];
};

template <typename T>
__device__ __forceinline__ void load_pack(const T* p, int64_t i, float (&v)[kPack]) {
  PackWords<T> pack;
  const uint4* src = reinterpret_cast<const uint4*>(p + i * kPack);
#pragma unroll
  for (int w = 0; w < PackWords<T>::kWords; ++w) pack.word[w] = src[w];
#pragma unroll
  for (int k = 0; k < kPack; ++k) v[k] = to_f32(pack.value[k]);
}

template <typename T>
__device__ __forceinline__ void store_pack(T* p, int64_t i, const float (&v)[kPack]) {
  PackWords<T> pack;
#pragma unroll
  for (int k = 0; k < kPack; ++k) pack.value[k] = from_f32<T>(v[k]);
  uint4* dst = reinterpret_cast<uint4*>(p + i * kPack);
#pragma unroll
  for (int w = 0; w < PackWords<T>::kWords; ++w) dst[w] = pack.word[w];
}

// A grid-stride loop of out[i] = f(a[i], b[i]) over n values: in packs where
// `packed` (every pointer 16-byte aligned, n a multiple of kPack: packable()),
// else one value at a time; the same f, so the same bits either way. out may
// be a or b: each element is read before the same thread writes it.
template <typename TO, typename TA, typename TB, typename F>
__device__ __forceinline__ void map_binary(TO* out, const TA* a, const TB* b, int64_t n, bool packed, F f) {
  if (packed) {
    for (int64_t i = global_index(); i < n / kPack; i += grid_stride()) {
      float av[kPack], bv[kPack];
      load_pack(a, i, av);
      load_pack(b, i, bv);
#pragma unroll
      for (int k = 0; k < kPack; ++k) av[k] = f(av[k], bv[k]);
      store_pack(out, i, av);
    }
    return;
  }
  for (int64_t i = global_index(); i < n; i += grid_stride()) out[i] = from_f32<TO>(f(to_f32(a[i]), to_f32(b[i])));
}

}  // namespace moe::cuda::dense
