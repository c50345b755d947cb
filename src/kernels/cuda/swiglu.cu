// SwiGLU gate on the GPU, elementwise: out = silu(a) * b, silu(a) = a * sigmoid(a).
// a and b share one dtype, da and db another; out and dout their own; each F32 or BF16.
#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 256;

// exp(-a) overflows to inf for very negative a, giving sigmoid = 0, not NaN (as on the CPU).
__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

__device__ __forceinline__ float swiglu(float a, float b) { return a * sigmoid(a) * b; }

// d silu(a)/da = sigmoid(a) * (1 + a * (1 - sigmoid(a))): the gradients of a
// and b, given g = dout.
__device__ __forceinline__ void swiglu_grad(float g, float a, float b, float& da, float& db) {
  const float sig = sigmoid(a);
  da = g * b * sig * (1.0f + a * (1.0f - sig));
  db = g * a * sig;
}

// `packed`: every tensor 16-byte aligned and n a multiple of kPack (packable).
template <typename TO, typename TA>
__global__ void swiglu_forward_kernel(TO* out, const TA* a, const TA* b, int64_t n, bool packed) {
  map_binary(out, a, b, n, packed, [](float av, float bv) { return swiglu(av, bv); });
}

// Writes da and db.
template <typename TD, typename TDO, typename TA>
__global__ void swiglu_backward_kernel(TD* da, TD* db, const TDO* dout, const TA* a, const TA* b, int64_t n,
                                       bool packed) {
  if (packed) {
    for (int64_t i = global_index(); i < n / kPack; i += grid_stride()) {
      float g[kPack], av[kPack], bv[kPack], dav[kPack], dbv[kPack];
      load_pack(dout, i, g);
      load_pack(a, i, av);
      load_pack(b, i, bv);
#pragma unroll
      for (int k = 0; k < kPack; ++k) swiglu_grad(g[k], av[k], bv[k], dav[k], dbv[k]);
      store_pack(da, i, dav);
      store_pack(db, i, dbv);
    }
    return;
  }
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    float dav, dbv;
    swiglu_grad(to_f32(dout[i]), to_f32(a[i]), to_f32(b[i]), dav, dbv);
    da[i] = from_f32<TD>(dav);
    db[i] = from_f32<TD>(dbv);
  }
}

}  // namespace

void swiglu_forward(const Tensor& out, const Tensor& a, const Tensor& b) {
  const char* op = "swiglu_forward";
  const auto args = {Arg{"out", out}, Arg{"a", a}, Arg{"b", b}};
  require_dtypes(is_float_type(out.dtype) && is_float_type(a.dtype) && b.dtype == a.dtype, op, args,
                 "out f32|bf16, a and b both f32 or both bf16");
  const int64_t n = a.numel();
  require_shapes(b.numel() == n && out.numel() == n, op, "a, b and out differ in size", args);
  if (n == 0) return;
  with_float_type(out.dtype, [&](auto out_tag) {
    with_float_type(a.dtype, [&](auto a_tag) {
      using TO = typename decltype(out_tag)::type;
      using TA = typename decltype(a_tag)::type;
      const bool packed = packable(n, {out.data, a.data, b.data});
      swiglu_forward_kernel<TO, TA><<<grid_for(packed ? n / kPack : n, kThreads), kThreads, 0, stream()>>>(
          static_cast<TO*>(out.data), static_cast<const TA*>(a.data), static_cast<const TA*>(b.data), n, packed);
    });
  });
  check_launch(op, args);
}

void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dout, const Tensor& a, const Tensor& b) {
  const char* op = "swiglu_backward";
  const auto args = {Arg{"da", da}, Arg{"db", db}, Arg{"dout", dout}, Arg{"a", a}, Arg{"b", b}};
  require_dtypes(is_float_type(da.dtype) && db.dtype == da.dtype && is_float_type(dout.dtype) &&
                     is_float_type(a.dtype) && b.dtype == a.dtype,
                 op, args, "da and db both f32 or both bf16, dout f32|bf16, a and b both f32 or both bf16");
  const int64_t n = a.numel();
  require_shapes(b.numel() == n && da.numel() == n && db.numel() == n && dout.numel() == n, op,
                 "da, db, dout, a and b differ in size", args);
  if (n == 0) return;
  with_float_type(da.dtype, [&](auto d_tag) {
    with_float_type(dout.dtype, [&](auto dout_tag) {
      with_float_type(a.dtype, [&](auto a_tag) {
        using TD = typename decltype(d_tag)::type;
        using TDO = typename decltype(dout_tag)::type;
        using TA = typename decltype(a_tag)::type;
        const bool packed = packable(n, {da.data, db.data, dout.data, a.data, b.data});
        swiglu_backward_kernel<TD, TDO, TA><<<grid_for(packed ? n / kPack : n, kThreads), kThreads, 0, stream()>>>(
            static_cast<TD*>(da.data), static_cast<TD*>(db.data), static_cast<const TDO*>(dout.data),
            static_cast<const TA*>(a.data), static_cast<const TA*>(b.data), n, packed);
      });
    });
  });
  check_launch(op, args);
}

}  // namespace moe::cuda
