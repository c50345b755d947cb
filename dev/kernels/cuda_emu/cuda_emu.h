// A tiny CUDA emulator for checking a kernel's logic on a machine without a
// GPU: each CTA runs its threads as fibers (ucontext) on one host thread,
// switching at __syncthreads / __syncwarp / shuffles, so barriers, shared
// memory and warp reductions behave as on the device. Blocks run one after
// another. WMMA is emulated in fp32 (one lane per warp does the tile's work;
// the fragment layouts are the documented row/col-major meanings, not the
// hardware's register layout). Nothing about speed, bank conflicts, alignment
// or the real tensor-core rounding is checked here: only indices, masks,
// tiling, barriers and the math.
//
// Use: transform.py rewrites a .cu (drops CUDA includes, turns <<<...>>>
// launches into emu_launch(...), dynamic __shared__ into emu_smem) and
// the result compiles with g++ -include cuda_emu.h.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

// ---- qualifiers and types ---------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// bf16 as its bit pattern, with the device's round-to-nearest-even conversion.
struct __nv_bfloat16 {
  uint16_t bits;
};
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0) return {static_cast<uint16_t>((u >> 16) | 0x40u)};
  return {static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// ---- runtime API subset -----------------------------------------------------
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
using cudaStream_t = void*;
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaGetDevice(int* d) { return *d = 0, cudaSuccess; }
// sm_80's limit: the stricter of the two architectures built.
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { return *v = 163 * 1024, cudaSuccess; }
inline cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaMalloc(void* p, size_t n) {
  *static_cast<void**>(p) = std::malloc(n ? n : 1);
  return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t n) {
  *p = static_cast<T*>(std::malloc(n ? n : 1));
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) { return std::free(p), cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

namespace moe::cuda {
inline void check(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) throw std::runtime_error("CUDA error in " + what);
}
inline cudaStream_t stream() { return nullptr; }
}  // namespace moe::cuda

// ---- fibers -----------------------------------------------------------------
namespace emu {

// Order in which runnable threads are resumed after each barrier: 0 in
// order, 1 reversed, 2 shuffled. A missing barrier shows as results that
// depend on it.
inline int schedule = 0;

struct Thread {
  ucontext_t ctx;
  bool done = false;
};

struct Block {
  std::vector<Thread> threads;
  std::vector<std::vector<char>> stacks;
  ucontext_t scheduler;
  int current = -1;
  uint64_t block_gen = 0;
  int block_arrived = 0;
  std::vector<uint64_t> warp_gen;
  std::vector<int> warp_arrived;
  std::vector<float> shuffle;  // one slot per thread
  std::function<void()> body;
};

inline Block* block = nullptr;
inline std::mt19937 rng(1);

}  // namespace emu

inline dim3 threadIdx, blockIdx, gridDim, blockDim;
inline unsigned char* emu_smem = nullptr;

namespace emu {

inline void yield() {
  Thread& t = block->threads[block->current];
  swapcontext(&t.ctx, &block->scheduler);
}

inline void sync_block() {
  const uint64_t gen = block->block_gen;
  if (++block->block_arrived == static_cast<int>(block->threads.size())) {
    block->block_arrived = 0;
    ++block->block_gen;
    return;
  }
  while (block->block_gen == gen) yield();
}

inline void sync_warp() {
  const int w = block->current / 32;
  const uint64_t gen = block->warp_gen[w];
  if (++block->warp_arrived[w] == 32) {
    block->warp_arrived[w] = 0;
    ++block->warp_gen[w];
    return;
  }
  while (block->warp_gen[w] == gen) yield();
}

inline void thread_entry() {
  block->body();
  block->threads[block->current].done = true;
  swapcontext(&block->threads[block->current].ctx, &block->scheduler);
}

// Runs every thread of one block to completion.
inline void run_block(unsigned n_threads, const std::function<void()>& body) {
  Block b;
  b.threads.resize(n_threads);
  b.stacks.assign(n_threads, std::vector<char>(256 * 1024));
  b.warp_gen.assign((n_threads + 31) / 32, 0);
  b.warp_arrived.assign((n_threads + 31) / 32, 0);
  b.shuffle.assign(n_threads, 0.0f);
  b.body = body;
  if (n_threads % 32 != 0) throw std::logic_error("emu: blockDim must be a multiple of 32");
  block = &b;
  for (unsigned i = 0; i < n_threads; ++i) {
    getcontext(&b.threads[i].ctx);
    b.threads[i].ctx.uc_stack.ss_sp = b.stacks[i].data();
    b.threads[i].ctx.uc_stack.ss_size = b.stacks[i].size();
    b.threads[i].ctx.uc_link = nullptr;
    makecontext(&b.threads[i].ctx, thread_entry, 0);
  }
  std::vector<int> order(n_threads);
  for (;;) {
    for (unsigned i = 0; i < n_threads; ++i) order[i] = static_cast<int>(i);
    if (schedule == 1) std::reverse(order.begin(), order.end());
    if (schedule == 2) std::shuffle(order.begin(), order.end(), rng);
    bool any = false;
    for (int i : order) {
      if (b.threads[i].done) continue;
      any = true;
      b.current = i;
      threadIdx = dim3(static_cast<unsigned>(i));
      swapcontext(&b.scheduler, &b.threads[i].ctx);
    }
    if (!any) break;
  }
  block = nullptr;
}

}  // namespace emu

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync_warp(); }
inline float __shfl_xor_sync(unsigned, float x, int lane_mask) {
  const int me = emu::block->current;
  emu::block->shuffle[me] = x;
  emu::sync_warp();
  const float y = emu::block->shuffle[(me & ~31) | ((me & 31) ^ lane_mask)];
  emu::sync_warp();
  return y;
}

// kernel<<<grid, block, smem, stream>>>(args...): blocks in order, each with
// exactly `smem` bytes of dynamic shared memory (malloc'd: ASan sees overruns).
template <typename Kernel, typename... Args>
void emu_launch(Kernel kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Args... args) {
  gridDim = grid;
  blockDim = block;
  const unsigned n_threads = block.x * block.y * block.z;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = dim3(x, y, z);
        std::vector<unsigned char> garbage(smem + 1);
        for (auto& c : garbage) c = static_cast<unsigned char>(emu::rng());  // shared memory starts as garbage
        unsigned char* s = static_cast<unsigned char*>(std::aligned_alloc(128, (smem + 127) / 128 * 128 + 128));
        std::memcpy(s, garbage.data(), smem);
        emu_smem = s;
        emu::run_block(n_threads, [&] { kernel(args...); });
        std::free(s);
      }
    }
  }
}

// ---- WMMA -------------------------------------------------------------------
namespace nvcuda::wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

inline bool leader() { return (emu::block->current & 31) == 0; }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float v[16][16];  // (row, col) of the 16 x 16 tile; only lane 0 of the warp holds it
};

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const __nv_bfloat16* p, unsigned ldm) {
  if (!leader()) return;
  constexpr bool row = std::is_same<Layout, row_major>::value;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = __bfloat162float(row ? p[r * ldm + c] : p[c * ldm + r]);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  if (!leader()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  if (!leader()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.v[r][c];
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float x) {
  if (!leader()) return;
  for (auto& row : f.v)
    for (float& e : row) e = x;
}
template <typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  if (!leader()) return;
  float out[16][16];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float s = c.v[m][n];
      for (int k = 0; k < 16; ++k) s = std::fma(a.v[m][k], b.v[k][n], s);
      out[m][n] = s;
    }
  std::memcpy(d.v, out, sizeof(out));
}
}  // namespace nvcuda::wmma
