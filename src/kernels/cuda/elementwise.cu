// Elementwise helpers on the GPU: out = a + b, x *= factor, and the sum of squares
// (for the global gradient norm) of one tensor or of a whole list in one
// reduction. Tensors F32 or BF16, each on its own; the list F32.
#include <stdexcept>
#include <string>
#include <vector>

#include "src/kernels/cuda/cuda_ops.h"
#include "src/kernels/cuda/dense_util.cuh"
#include "src/kernels/cuda/multi_tensor.cuh"

namespace moe::cuda {
namespace {

using namespace dense;

constexpr int kThreads = 256;
// sum_squares: at most kMaxPartials blocks of kThreads threads, each thread
// summing at least kItemsPerThread values; the block count is a function of n
// only, so the result does not depend on the device. sum_squares_many: at most
// kMaxPartials blocks too, a function of the list's sizes only.
constexpr int kMaxPartials = 1024;
constexpr int64_t kItemsPerThread = 8;

template <typename TO, typename TA, typename TB>
__global__ void add_kernel(TO* out, const TA* a, const TB* b, int64_t n, bool packed) {
  map_binary(out, a, b, n, packed, [](float x, float y) { return x + y; });
}

// `packed`: x 16-byte aligned and n a multiple of kPack (packable).
template <typename T>
__global__ void scale_inplace_kernel(T* x, int64_t n, float factor, bool packed) {
  if (packed) {
    for (int64_t i = global_index(); i < n / kPack; i += grid_stride()) {
      float v[kPack];
      load_pack(x, i, v);
#pragma unroll
      for (int k = 0; k < kPack; ++k) v[k] *= factor;
      store_pack(x, i, v);
    }
    return;
  }
  for (int64_t i = global_index(); i < n; i += grid_stride()) x[i] = from_f32<T>(to_f32(x[i]) * factor);
}

// out[i] = x[i] * noise first + i of the stream; the key words are read on
// the device, so a replayed graph draws each micro-batch's own noise.
template <typename TO, typename TX>
__global__ void multiply_noise_kernel(TO* out, const TX* x, int64_t n, const int32_t* key_words, uint64_t noise_stream,
                                      noise::Distribution d) {
  const uint64_t key = noise::stream_key(key_words, noise_stream), first = noise::first_index(key_words, n);
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    out[i] = from_f32<TO>(to_f32(x[i]) * noise::value(d, key, first + static_cast<uint64_t>(i)));
  }
}

// Row r of [R, C] draws as row row_id[r][1] of global micro-batch row_id[r][0].
template <typename TO, typename TX>
__global__ void multiply_noise_rows_kernel(TO* out, const TX* x, int64_t R, int64_t C, const int32_t* row_id,
                                           int64_t rows_per_micro_batch, const int32_t* key_words,
                                           uint64_t noise_stream, noise::Distribution d) {
  const uint64_t key = noise::stream_key(key_words, noise_stream);
  for (int64_t i = global_index(); i < R * C; i += grid_stride()) {
    const int64_t r = i / C, c = i % C;
    const uint64_t index =
        noise::row_first_index(row_id[2 * r], row_id[2 * r + 1], rows_per_micro_batch, C) + static_cast<uint64_t>(c);
    out[i] = from_f32<TO>(to_f32(x[i]) * noise::value(d, key, index));
  }
}

// ids[r] = (the key's global micro-batch, rows[r]).
__global__ void noise_row_ids_kernel(int32_t* ids, const int32_t* rows, int64_t R, const int32_t* key_words) {
  for (int64_t r = global_index(); r < R; r += grid_stride()) {
    ids[2 * r] = key_words[3];
    ids[2 * r + 1] = rows[r];
  }
}

// partials[block] = sum over the block's grid-stride share of x[i]^2, in double.
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_squares_partial_kernel(double* partials, const T* x, int64_t n) {
  __shared__ double shared[32];
  double acc = 0;
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    const double v = to_f32(x[i]);
    acc += v * v;
  }
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// sum_squares_many: one entry per non-empty tensor (multi_tensor.cuh).
struct SquaresEntry {
  const float* x;
  int64_t n, first_chunk;

  bool operator==(const SquaresEntry& o) const { return x == o.x && n == o.n && first_chunk == o.first_chunk; }
};

// partials[block] = sum of x^2 over the chunks blockIdx.x, + gridDim.x, ... of
// the list, in double, each thread in a fixed order, then block_sum.
__global__ void __launch_bounds__(kThreads)
    sum_squares_many_partial_kernel(double* partials, const SquaresEntry* table, int64_t count, int64_t chunks) {
  __shared__ double shared[32];
  double acc = 0;
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const multi_tensor::ChunkRange r = multi_tensor::chunk_range(table, count, c);
    const float* x = table[r.entry].x;
    for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
      const double v = x[i];
      acc += v * v;
    }
  }
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// One block: result[0] = sum of the `count` partials.
__global__ void __launch_bounds__(kThreads) sum_partials_kernel(double* result, const double* partials, int count) {
  __shared__ double shared[32];
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) result[0] = acc;
}

// kMaxPartials partials and the result, allocated once (process lifetime,
// freed by the driver at exit, like the stream).
double* sum_squares_scratch() {
  static double* buffer = [] {
    double* p = nullptr;
    check(cudaMalloc(&p, (kMaxPartials + 1) * sizeof(double)), "sum_squares (scratch)");
    return p;
  }();
  return buffer;
}

}  // namespace

void add(const Tensor& out, const Tensor& a, const Tensor& b) {
  const char* op = "add";
  const auto args = {Arg{"out", out}, Arg{"a", a}, Arg{"b", b}};
  require_dtypes(is_float_type(out.dtype) && is_float_type(a.dtype) && is_float_type(b.dtype), op, args,
                 "out, a and b f32|bf16");
  require_shapes(out.numel() == a.numel() && out.numel() == b.numel(), op, "out, a and b differ in size", args);
  const int64_t n = out.numel();
  if (n == 0) return;
  const bool packed = packable(n, {out.data, a.data, b.data});
  with_float_type(out.dtype, [&](auto out_tag) {
    with_float_type(a.dtype, [&](auto a_tag) {
      with_float_type(b.dtype, [&](auto b_tag) {
        using TO = typename decltype(out_tag)::type;
        using TA = typename decltype(a_tag)::type;
        using TB = typename decltype(b_tag)::type;
        add_kernel<TO, TA, TB><<<grid_for(packed ? n / kPack : n, kThreads), kThreads, 0, stream()>>>(
            static_cast<TO*>(out.data), static_cast<const TA*>(a.data), static_cast<const TB*>(b.data), n, packed);
      });
    });
  });
  check_launch(op, args);
}

void scale_inplace(const Tensor& x, float factor) {
  const char* op = "scale_inplace";
  require_dtypes(is_float_type(x.dtype), op, {{"x", x}}, "x f32|bf16");
  const int64_t n = x.numel();
  if (n == 0) return;
  with_float_type(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const bool packed = packable(n, {x.data});
    scale_inplace_kernel<T><<<grid_for(packed ? n / kPack : n, kThreads), kThreads, 0, stream()>>>(
        static_cast<T*>(x.data), n, factor, packed);
  });
  check_launch(op, {{"x", x}});
}

void multiply_noise(const Tensor& out, const Tensor& x, const Tensor& key_4, uint64_t noise_stream,
                    const noise::Distribution& d) {
  const char* op = "multiply_noise";
  const auto args = {Arg{"out", out}, Arg{"x", x}, Arg{"key", key_4}};
  require_dtypes(is_float_type(out.dtype) && is_float_type(x.dtype) && key_4.dtype == DType::kI32, op, args,
                 "out and x f32|bf16, key i32");
  require_shapes(out.numel() == x.numel() && key_4.numel() == noise::kKeyWords, op, "want out and x alike, key [4]",
                 args);
  const int64_t n = x.numel();
  if (n == 0) return;
  with_float_type(out.dtype, [&](auto out_tag) {
    with_float_type(x.dtype, [&](auto x_tag) {
      using TO = typename decltype(out_tag)::type;
      using TX = typename decltype(x_tag)::type;
      multiply_noise_kernel<TO, TX><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
          static_cast<TO*>(out.data), static_cast<const TX*>(x.data), n, key_4.i32(), noise_stream, d);
    });
  });
  check_launch(op, args);
}

void multiply_noise_rows(const Tensor& out_RC, const Tensor& x_RC, const Tensor& row_id_R2,
                         int64_t rows_per_micro_batch, const Tensor& key_4, uint64_t noise_stream,
                         const noise::Distribution& d) {
  const char* op = "multiply_noise_rows";
  const auto args = {Arg{"out", out_RC}, Arg{"x", x_RC}, Arg{"row_id", row_id_R2}, Arg{"key", key_4}};
  require_dtypes(is_float_type(out_RC.dtype) && is_float_type(x_RC.dtype) && row_id_R2.dtype == DType::kI32 &&
                     key_4.dtype == DType::kI32,
                 op, args, "out and x f32|bf16, row_id and key i32");
  const int64_t R = row_id_R2.numel() / 2;
  require_shapes(x_RC.ndim == 2 && x_RC.size(0) == R && row_id_R2.numel() == 2 * R && out_RC.numel() == x_RC.numel() &&
                     key_4.numel() == noise::kKeyWords,
                 op, "want x and out [R, C], row_id [R, 2], key [4]", args);
  const int64_t C = x_RC.size(1);
  if (R * C == 0) return;
  with_float_type(out_RC.dtype, [&](auto out_tag) {
    with_float_type(x_RC.dtype, [&](auto x_tag) {
      using TO = typename decltype(out_tag)::type;
      using TX = typename decltype(x_tag)::type;
      multiply_noise_rows_kernel<TO, TX><<<grid_for(R * C, kThreads), kThreads, 0, stream()>>>(
          static_cast<TO*>(out_RC.data), static_cast<const TX*>(x_RC.data), R, C, row_id_R2.i32(), rows_per_micro_batch,
          key_4.i32(), noise_stream, d);
    });
  });
  check_launch(op, args);
}

void noise_row_ids(const Tensor& ids_R2, const Tensor& rows_R, const Tensor& key_4) {
  const char* op = "noise_row_ids";
  const auto args = {Arg{"ids", ids_R2}, Arg{"rows", rows_R}, Arg{"key", key_4}};
  require_dtypes(ids_R2.dtype == DType::kI32 && rows_R.dtype == DType::kI32 && key_4.dtype == DType::kI32, op, args,
                 "ids, rows and key i32");
  const int64_t R = rows_R.numel();
  require_shapes(ids_R2.numel() == 2 * R && key_4.numel() == noise::kKeyWords, op, "want ids [R, 2], rows [R], key [4]",
                 args);
  if (R == 0) return;
  noise_row_ids_kernel<<<grid_for(R, kThreads), kThreads, 0, stream()>>>(ids_R2.i32(), rows_R.i32(), R, key_4.i32());
  check_launch(op, args);
}

// Two kernels (per-block partials, then one block over the partials), both in
// double and in a fixed order. HOST SYNC: the result is copied to the host on
// stream() and the host waits for the stream (cudaStreamSynchronize) before
// returning; this is the one place this op family reads a device value.
double sum_squares(const Tensor& x) {
  const char* op = "sum_squares";
  require_dtypes(is_float_type(x.dtype), op, {{"x", x}}, "x f32|bf16");
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const unsigned blocks = grid_for(n, static_cast<int>(kThreads * kItemsPerThread), kMaxPartials);
  double* partials = sum_squares_scratch();
  double* result = partials + kMaxPartials;
  with_float_type(x.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sum_squares_partial_kernel<T><<<blocks, kThreads, 0, stream()>>>(partials, static_cast<const T*>(x.data), n);
  });
  check_launch(op, {{"x", x}});
  sum_partials_kernel<<<1, kThreads, 0, stream()>>>(result, partials, static_cast<int>(blocks));
  check_launch(op, {{"x", x}});
  double host = 0;
  check(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost, stream()),
        std::string(op) + " (copy to host) " + x.shape_string());
  check(cudaStreamSynchronize(stream()), std::string(op) + " (host sync) " + x.shape_string());
  return host;
}

// The two kernels of sum_squares, over the whole list: per-block partials of
// the list's chunks, then one block over the partials (the same scratch). The
// table goes up only when the list changed (multi_tensor.cuh). HOST SYNC: one,
// at the end, as in sum_squares.
double sum_squares_many(const std::vector<Tensor>& xs) {
  const char* op = "sum_squares_many";
  static multi_tensor::ChunkTable<SquaresEntry> table;  // process lifetime (multi_tensor.cuh)
  table.clear();
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    if (!multi_tensor::f32_on_device(x)) {  // the message is built only on failure: this loop runs every step
      throw std::logic_error(std::string(op) + ": tensor " + std::to_string(i) + " is " + multi_tensor::placed(x) +
                             "; wants f32 device tensors");
    }
    table.add({static_cast<const float*>(x.data), x.numel(), 0});
  }
  if (table.count() == 0) return 0.0;
  const SquaresEntry* entries = table.upload(op);
  const unsigned blocks = multi_tensor::blocks_for(table.chunks(), kMaxPartials);
  double* partials = sum_squares_scratch();
  double* result = partials + kMaxPartials;
  sum_squares_many_partial_kernel<<<blocks, kThreads, 0, stream()>>>(partials, entries, table.count(), table.chunks());
  multi_tensor::check_list_launch(op, table.count(), table.chunks());
  sum_partials_kernel<<<1, kThreads, 0, stream()>>>(result, partials, static_cast<int>(blocks));
  multi_tensor::check_list_launch(op, table.count(), table.chunks());
  double host = 0;
  check(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost, stream()),
        std::string(op) + " (copy to host)");
  check(cudaStreamSynchronize(stream()), std::string(op) + " (host sync)");
  return host;
}

}  // namespace moe::cuda
