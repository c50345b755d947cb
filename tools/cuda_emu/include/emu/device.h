// The device language of the CUDA emulator: qualifiers, built-in variables,
// vector types, intrinsics, atomics, warp and block collectives, and the
// launch that tools/cuda_emu/compile_cu.sh substitutes for `<<<...>>>`.
//
// Execution model: a grid runs block after block on the calling host thread.
// The threads of a block are fibers that switch only at barriers
// (__syncthreads, __syncwarp, shuffles, votes), so shared memory, barriers
// and warp collectives behave as the programming model promises, and a
// barrier that not every thread reaches is reported as a deadlock. Resumption
// order alternates between ascending and descending thread index from block to
// block, so a read that is missing its barrier sees a different value in one
// of the two orders.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers ---------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One variable per function for all threads of the running block; blocks run
// one after another, so that is the block's shared memory. They all live in
// one section, which is filled with all-ones bytes before every block (a read
// before any write shows, as it would on a device, instead of seeing the
// previous block's values).
#define __shared__ static __attribute__((section("cuda_emu_shared"), aligned(16)))

// ---- built-in variables and vector types --------------------------------------
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

extern dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- the scheduler (tools/cuda_emu/fibers.cc) ---------------------------------
namespace emu {

// Index of the running thread in its block (x fastest), and the block's size.
int thread_rank();
int block_size();
// __syncthreads: waits for every thread of the block that has not exited.
// `site` names the barrier in the source: threads waiting at two different
// barriers at once is reported (a barrier in a divergent branch).
void sync_block(const char* site);
// __syncwarp(mask): waits for the lanes of `mask` in the running thread's warp.
void sync_warp(unsigned mask);
// Every lane of `mask` posts 8 bytes; after the call each can read all lanes'
// posts (lanes outside the mask read stale values, as their registers would be
// undefined on a device). Valid until the lane's next exchange.
const uint64_t* warp_exchange(unsigned mask, uint64_t mine);
// The same over the whole block (one slot per thread).
const uint64_t* block_exchange(uint64_t mine);
// The running block's dynamic shared memory (`extern __shared__` arrays).
unsigned char* dynamic_shared();
// Stops the running block with `why`: the launch fails, as after a device
// fault (a misuse the hardware would not survive). Never returns.
[[noreturn]] void fail_block(const char* why);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "exchange of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
inline int lane() { return thread_rank() & 31; }

}  // namespace emu

// ---- barriers, shuffles, votes ------------------------------------------------
#define EMU_STRINGIZE2(x) #x
#define EMU_STRINGIZE(x) EMU_STRINGIZE2(x)
#define __syncthreads() ::emu::sync_block(__FILE__ ":" EMU_STRINGIZE(__LINE__))
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::sync_warp(mask); }
inline int __syncthreads_or(int predicate) {
  const uint64_t* all = emu::block_exchange(predicate != 0);
  int any = 0;
  for (int i = 0; i < emu::block_size(); ++i) any |= static_cast<int>(all[i]);
  emu::sync_block("__syncthreads_or");  // every thread has read before the slots are reused
  return any;
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  const int lane = emu::lane();
  const int src = (lane & ~(width - 1)) | (src_lane & (width - 1));
  return emu::from_bits<T>(emu::warp_exchange(mask, emu::to_bits(v))[src]);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = emu::lane();
  const int src = lane ^ lane_mask;
  const bool inside = (src & ~(width - 1)) == (lane & ~(width - 1));
  const uint64_t* all = emu::warp_exchange(mask, emu::to_bits(v));
  return inside ? emu::from_bits<T>(all[src]) : v;
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = emu::lane();
  const int src = lane - static_cast<int>(delta);
  const uint64_t* all = emu::warp_exchange(mask, emu::to_bits(v));
  return src >= (lane & ~(width - 1)) ? emu::from_bits<T>(all[src]) : v;
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* all = emu::warp_exchange(mask, predicate != 0);
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && all[l]) bits |= 1u << l;
  return bits;
}
template <typename T>
unsigned __match_any_sync(unsigned mask, T value) {
  const uint64_t mine = emu::to_bits(value);
  const uint64_t* all = emu::warp_exchange(mask, mine);
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && all[l] == mine) bits |= 1u << l;
  return bits;
}

// ---- integer and float intrinsics ---------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// Correctly rounded single operations, never fused into a multiply-add (the
// reason kernels use them). The empty asm makes the compiler materialise each
// result, so -ffp-contract cannot merge it into a neighbouring operation.
template <typename T>
inline T emu_rounded(T x) {
  asm("" : "+x"(x));
  return x;
}
inline float __fmul_rn(float a, float b) { return emu_rounded(a * b); }
inline float __fadd_rn(float a, float b) { return emu_rounded(a + b); }
inline float __fsub_rn(float a, float b) { return emu_rounded(a - b); }
inline float __fdiv_rn(float a, float b) { return emu_rounded(a / b); }
inline float __fsqrt_rn(float a) { return emu_rounded(std::sqrt(a)); }
inline double __dmul_rn(double a, double b) { return emu_rounded(a * b); }
inline double __dadd_rn(double a, double b) { return emu_rounded(a + b); }
inline double __dsub_rn(double a, double b) { return emu_rounded(a - b); }

template <typename T>
T __ldg(const T* p) {
  return *p;
}

// CUDA's global min/max, for the int arguments the kernels use.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// ---- atomics: one host thread runs every fiber, so a plain read-modify-write ----
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

inline unsigned atomicMax(unsigned* address, unsigned value) {
  const unsigned old = *address;
  if (value > old) *address = value;
  return old;
}

// ---- launch --------------------------------------------------------------------
struct CUstream_st;
namespace emu {

struct LaunchShape {
  const void* kernel;
  const char* name;  // as spelled at the launch site
  const char* file;
  int line;
  dim3 grid;
  dim3 block;
  size_t shared_bytes;
  CUstream_st* stream;
};

// Checks the shape as the driver does (a failure becomes the sticky error that
// cudaGetLastError returns), then runs the grid, or records it into the
// stream's capture. Defined in runtime.cc.
void launch_grid(const LaunchShape& shape, std::function<void()> thread_main);

// `kernel<<<grid, block, shared, stream>>>(args...)` becomes
// `::emu::launch("kernel", __FILE__, __LINE__, kernel, grid, block, shared, stream)(args...)`. The arguments
// are converted to the parameter types and copied once, as the driver copies
// them into the launch (a captured launch keeps them).
template <typename... P>
class KernelLaunch {
 public:
  KernelLaunch(void (*kernel)(P...), LaunchShape shape) : kernel_(kernel), shape_(shape) {}

  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launch: wrong number of arguments");
    auto params = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(args)...);
    void (*kernel)(P...) = kernel_;
    launch_grid(shape_, [kernel, params] { std::apply(kernel, *params); });
  }

 private:
  void (*kernel_)(P...);
  LaunchShape shape_;
};

template <typename... P>
KernelLaunch<P...> launch(const char* name, const char* file, int line, void (*kernel)(P...), dim3 grid, dim3 block,
                          size_t shared_bytes = 0, CUstream_st* stream = nullptr) {
  return KernelLaunch<P...>(
      kernel, LaunchShape{reinterpret_cast<const void*>(kernel), name, file, line, grid, block, shared_bytes, stream});
}

}  // namespace emu
