// The FP8 linear layer on the GPU: the numbers of the CPU reference
// (cpu::fp8_matmul_forward/backward) from cuBLASLt's FP8 GEMMs (sm_89 and
// newer). Each operand is quantised on the device, with the scale of its own
// amax (src/core/fp8.h: current per-tensor scaling, powers of two): E4M3 for
// x and W, E5M2 for the output gradient. cuBLASLt multiplies the codes,
// accumulates in fp32 and applies the two dequantisation factors, which
// equals the CPU's GEMM of dequantised values up to the summation order.
//
// cuBLASLt's FP8 kernels take only the "TN" form (A transposed, B not: both
// operands contiguous along k), so each GEMM gets its operands in that
// layout (column-major, as in matmul.cu):
//   forward  out^T [O x N] = op_T(Wq  as I x O) (Xq   as I x N)   m=O n=N k=I
//   dx       dx^T  [I x N] = op_T(WqT as O x I) (dYq  as O x N)   m=I n=N k=O
//   dw       dw^T  [I x O] = op_T(XqT as N x I) (dYqT as N x O)   m=I n=O k=N
// where a trailing T marks a transposed copy written by the quantising
// kernel (row-major [I, O], [I, N] and [O, N]). N, I and O must be multiples
// of 16 (the config rules say so for the model's shapes).
//
// The codes, the amax slots and the scales live in one device scratch buffer
// (device_scratch.h) sized by reserve_fp8_matmul, so that a captured graph
// keeps valid addresses. A call: zero the amax slots, one amax kernel per
// operand, one quantising kernel per operand, the GEMMs.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "src/core/fp8.h"
#include "src/kernels/cuda/cublaslt_gemm.h"
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"
#include "src/kernels/cuda/device_scratch.h"

namespace moe::cuda {
namespace {

using dense::Arg;
using dense::check_launch;
using dense::global_index;
using dense::grid_for;
using dense::grid_stride;

constexpr int kAmaxThreads = 256;
constexpr int kTile = 32, kTileRows = 8;  // quantising: 32 x 32 tiles, 32 x 8 threads

// Slot s of the scratch header (kFp8ScratchAlign bytes, cuda_ops.h): amax
// bits (uint32) at 4 s, the dequantisation factor (float) at 64 + 4 s.
constexpr int kSlots = 3;  // x, w, dout

// Every block's max of |x| into *amax_bits (the bits of a non-negative float
// order as the floats do). NaN is skipped by fmaxf, as on the CPU.
template <typename T>
__global__ void __launch_bounds__(kAmaxThreads) amax_kernel(const T* x, int64_t n, unsigned* amax_bits) {
  __shared__ float shared[32];
  float m = 0.0f;
  for (int64_t i = global_index(); i < n; i += grid_stride()) m = fmaxf(m, fabsf(to_f32(x[i])));
  m = block_max(m, shared);
  if (threadIdx.x == 0) {
    uint32_t bits;
    memcpy(&bits, &m, 4);
    atomicMax(amax_bits, bits);
  }
}

// codes[r, c] (if not null) and codes_t[c, r] (if not null) = the code of
// x[r, c] x 2^k, k = scale_exponent(amax); *dequant = 2^-k. The transposed
// copy goes through a shared tile, so both writes are along rows.
template <typename T>
__global__ void __launch_bounds__(kTile* kTileRows)
    quantize_kernel(const T* x, int64_t R, int64_t C, const unsigned* amax_bits, fp8::Format f, uint8_t* codes,
                    uint8_t* codes_t, float* dequant) {
  __shared__ uint8_t tile[kTile][kTile + 1];
  const int k = fp8::scale_exponent(fp8::float_of_bits(*amax_bits), f);
  const float scale = fp8::exp2i(k);
  if (blockIdx.x == 0 && threadIdx.x == 0 && threadIdx.y == 0) *dequant = fp8::exp2i(-k);
  const int64_t tiles_c = (C + kTile - 1) / kTile, tiles = (R + kTile - 1) / kTile * tiles_c;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = t / tiles_c * kTile, c0 = t % tiles_c * kTile;
    for (int dy = threadIdx.y; dy < kTile; dy += kTileRows) {
      const int64_t r = r0 + dy, c = c0 + threadIdx.x;
      if (r < R && c < C) {
        const uint8_t q = fp8::encode(to_f32(x[r * C + c]) * scale, f);
        if (codes != nullptr) codes[r * C + c] = q;
        tile[dy][threadIdx.x] = q;
      }
    }
    if (codes_t == nullptr) continue;
    __syncthreads();
    for (int dx = threadIdx.y; dx < kTile; dx += kTileRows) {
      const int64_t c = c0 + dx, r = r0 + threadIdx.x;
      if (r < R && c < C) codes_t[c * R + r] = tile[threadIdx.x][dx];
    }
    __syncthreads();
  }
}

int64_t rows_of(const Tensor& t) { return t.ndim == 0 || t.size(-1) == 0 ? 0 : t.numel() / t.size(-1); }

// The scratch buffer of this call, carved into the header and up to four code arrays.
struct Scratch {
  unsigned* amax;  // [kSlots]
  float* dequant;  // [kSlots]
  uint8_t* region[4];
};

DeviceScratch& scratch_buffer() {
  static DeviceScratch scratch("FP8 codes and scales");
  return scratch;
}

Scratch scratch_for(const char* op, int64_t N, int64_t I, int64_t O, std::initializer_list<int64_t> sizes) {
  auto* base = static_cast<uint8_t*>(scratch_buffer().get(static_cast<size_t>(fp8_matmul_scratch_bytes(N, I, O)), op));
  Scratch s{reinterpret_cast<unsigned*>(base), reinterpret_cast<float*>(base + 64), {}};
  int64_t at = kFp8ScratchAlign;
  int r = 0;
  for (const int64_t bytes : sizes) {
    s.region[r++] = base + at;
    at += fp8_scratch_round_up(bytes);
  }
  check(cudaMemsetAsync(s.amax, 0, kSlots * sizeof(unsigned), stream()), std::string(op) + " (amax slots)");
  return s;
}

// Quantises t ([R, C], act) into codes and/or codes_t with the scale of its
// own amax (slot `slot`).
void quantize(const char* op, const Tensor& t, int64_t R, int64_t C, fp8::Format f, const Scratch& s, int slot,
              uint8_t* codes, uint8_t* codes_t) {
  dense::with_float_type(t.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = static_cast<const T*>(t.data);
    amax_kernel<T><<<grid_for(R * C, kAmaxThreads, 1024), kAmaxThreads, 0, stream()>>>(x, R * C, s.amax + slot);
    check_launch(op, {Arg{"amax of", t}});
    const int64_t tiles = (R + kTile - 1) / kTile * ((C + kTile - 1) / kTile);
    const unsigned blocks = static_cast<unsigned>(tiles < 65536 ? tiles : 65536);
    quantize_kernel<T>
        <<<blocks, dim3(kTile, kTileRows), 0, stream()>>>(x, R, C, s.amax + slot, f, codes, codes_t, s.dequant + slot);
    check_launch(op, {Arg{"quantising", t}});
  });
}

void require_fp8_shapes(const char* op, int64_t N, int64_t I, int64_t O, std::initializer_list<Arg> args) {
  dense::require_shapes(N % 16 == 0 && I % 16 == 0 && O % 16 == 0, op,
                        "cuBLASLt's FP8 GEMMs need rows, in and out features multiples of 16", args);
}

}  // namespace

void reserve_fp8_matmul(int64_t N, int64_t I, int64_t O) {
  scratch_buffer().get(static_cast<size_t>(fp8_matmul_scratch_bytes(N, I, O)), "reserve_fp8_matmul");
}

void fp8_matmul_forward(const Tensor& out_NO, const Tensor& x_NI, const Tensor& w_OI) {
  const char* op = "fp8_matmul_forward";
  const int64_t N = rows_of(x_NI), I = w_OI.size(1), O = w_OI.size(0);
  const auto args = {Arg{"out", out_NO}, Arg{"x", x_NI}, Arg{"w", w_OI}};
  dense::require_dtypes(
      dense::is_float_type(x_NI.dtype) && w_OI.dtype == x_NI.dtype && dense::is_float_type(out_NO.dtype), op, args,
      "x and w one of f32 and bf16; out f32 or bf16");
  require_fp8_shapes(op, N, I, O, args);
  if (N == 0 || O == 0 || I == 0) return;
  const Scratch s = scratch_for(op, N, I, O, {N * I, O * I});
  uint8_t *xq = s.region[0], *wq = s.region[1];
  quantize(op, x_NI, N, I, fp8::Format::kE4M3, s, 0, xq, nullptr);
  quantize(op, w_OI, O, I, fp8::Format::kE4M3, s, 1, wq, nullptr);
  lt_gemm([&] { return std::string(op) + " " + dense::describe(args); }, true, false, O, N, I,
          {wq, CUDA_R_8F_E4M3, I, s.dequant + 1}, {xq, CUDA_R_8F_E4M3, I, s.dequant + 0}, out_NO.data, O,
          blas_type(out_NO.dtype), false);
}

void fp8_matmul_backward(const Tensor& dx_NI, const Tensor& dw_OI, const Tensor& dout_NO, const Tensor& x_NI,
                         const Tensor& w_OI, bool accumulate_dx) {
  const char* op = "fp8_matmul_backward";
  const int64_t N = rows_of(x_NI), I = w_OI.size(1), O = w_OI.size(0);
  const auto args = {Arg{"dw", dw_OI}, Arg{"dout", dout_NO}, Arg{"x", x_NI}, Arg{"w", w_OI}};
  dense::require_dtypes(dense::is_float_type(x_NI.dtype) && w_OI.dtype == x_NI.dtype &&
                            dense::is_float_type(dout_NO.dtype) && dw_OI.dtype == DType::kF32 &&
                            (dx_NI.data == nullptr || dense::is_float_type(dx_NI.dtype)),
                        op, args, "x and w one of f32 and bf16; dout and dx f32 or bf16; dw f32");
  require_fp8_shapes(op, N, I, O, args);
  if (N == 0 || O == 0 || I == 0) return;
  const Scratch s = scratch_for(op, N, I, O, {N * O, N * O, O * I, N * I});
  uint8_t *dyq = s.region[0], *dyq_t = s.region[1], *wq_t = s.region[2], *xq_t = s.region[3];
  const bool with_dx = dx_NI.data != nullptr;
  quantize(op, dout_NO, N, O, fp8::Format::kE5M2, s, 2, with_dx ? dyq : nullptr, dyq_t);
  quantize(op, x_NI, N, I, fp8::Format::kE4M3, s, 0, nullptr, xq_t);
  const auto what = [&] { return std::string(op) + " " + dense::describe(args); };
  if (with_dx) {
    quantize(op, w_OI, O, I, fp8::Format::kE4M3, s, 1, nullptr, wq_t);
    lt_gemm(what, true, false, I, N, O, {wq_t, CUDA_R_8F_E4M3, O, s.dequant + 1},
            {dyq, CUDA_R_8F_E5M2, O, s.dequant + 2}, dx_NI.data, I, blas_type(dx_NI.dtype), accumulate_dx);
  }
  lt_gemm(what, true, false, I, O, N, {xq_t, CUDA_R_8F_E4M3, N, s.dequant + 0},
          {dyq_t, CUDA_R_8F_E5M2, N, s.dequant + 2}, dw_OI.data, I, CUDA_R_32F, true);
}

}  // namespace moe::cuda
