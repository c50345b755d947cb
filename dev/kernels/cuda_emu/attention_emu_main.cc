// src/kernels/cuda/attention.cu run on the CPU through cuda_emu.h, against
// the CPU reference, with the tolerances of tests/gpu/attention_gpu_test.cc.
// It checks the kernels' indices, masks, tiling, barriers and math on a
// machine without a GPU; it says nothing of speed or of the real tensor
// cores. Build and run with run.sh (g++ with ASan and UBSan; compiled with
// -include cuda_emu.h, like the rewritten kernel file).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "src/core/bf16.h"
#include "src/core/tensor.h"
#include "src/kernels/cpu/cpu_ops.h"
#include "src/kernels/cuda/cuda_ops.h"

namespace {

using moe::DType;

int failures = 0;

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// "Device" memory: host bytes in the tensor's dtype, tagged kCuda.
struct Buffer {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  moe::Tensor t;
  Buffer(const std::vector<float>& host, std::vector<int64_t> shape, DType dtype) {
    void* data;
    if (dtype == DType::kBF16) {
      for (float x : host) bf16.push_back(moe::f32_to_bf16(x));
      data = bf16.data();
    } else {
      f32 = host;
      data = f32.data();
    }
    t = moe::view_of(data, shape, dtype, moe::Device::kCuda);
  }
  std::vector<float> read() const {
    if (t.dtype == DType::kF32) return f32;
    std::vector<float> out;
    for (uint16_t h : bf16) out.push_back(moe::bf16_to_f32(h));
    return out;
  }
};

std::vector<float> rounded(bool bf, std::vector<float> v) {
  if (bf)
    for (auto& x : v) x = moe::bf16_to_f32(moe::f32_to_bf16(x));
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

void check_close(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                 const std::string& what) {
  size_t worst = 0;
  double worst_excess = -1e300;
  for (size_t i = 0; i < got.size(); ++i) {
    const double excess =
        std::isnan(got[i]) ? 1e30 : std::abs(double(got[i]) - want[i]) - (atol + rtol * std::abs(want[i]));
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  const bool ok = worst_excess <= 0;
  if (!ok) ++failures;
  std::printf("%s %s: worst element %zu got %.7g want %.7g (rtol %g, atol %.3g)\n", ok ? "ok  " : "FAIL", what.c_str(),
              worst, got[worst], want[worst], rtol, atol);
}

void run_case(DType dtype, int64_t B, int64_t T, int64_t H, int64_t G, int64_t Dh, uint32_t seed) {
  const bool bf = dtype == DType::kBF16;
  const std::string name = std::string(moe::dtype_name(dtype)) + " B=" + std::to_string(B) + " T=" + std::to_string(T) +
                           " H=" + std::to_string(H) + " G=" + std::to_string(G) + " Dh=" + std::to_string(Dh);
  const size_t nq = B * T * H * Dh, nk = B * T * G * Dh, nl = B * H * T;
  const auto q = rounded(bf, random_vector(nq, seed + 1)), k = rounded(bf, random_vector(nk, seed + 2)),
             v = rounded(bf, random_vector(nk, seed + 3)), dout = rounded(bf, random_vector(nq, seed + 4)),
             dq0 = rounded(bf, random_vector(nq, seed + 5, 0.5f)), dk0 = rounded(bf, random_vector(nk, seed + 6, 0.5f)),
             dv0 = rounded(bf, random_vector(nk, seed + 7, 0.5f));
  const double rtol = bf ? 2e-2 : 1e-4, frac = bf ? 2e-2 : 1e-4;

  std::vector<float> out_ref(nq), lse_ref(nl);
  moe::cpu::attention_forward(out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), B, T, H, G, Dh);
  Buffer dq_(q, {B, T, H, Dh}, dtype), dk_(k, {B, T, G, Dh}, dtype), dv_(v, {B, T, G, Dh}, dtype);
  Buffer out(std::vector<float>(nq, 1e4f), {B, T, H, Dh}, dtype),
      lse(std::vector<float>(nl, -1e4f), {B, H, T}, DType::kF32);
  moe::cuda::attention_forward(out.t, lse.t, dq_.t, dk_.t, dv_.t);
  check_close(out.read(), out_ref, rtol, frac * max_abs(out_ref) + 1e-6, name + ": out");
  check_close(lse.read(), lse_ref, 1e-4, bf ? 1e-3 : 1e-4, name + ": lse");

  const auto out_in = rounded(bf, out_ref);
  std::vector<float> dq_ref = dq0, dk_ref = dk0, dv_ref = dv0;
  moe::cpu::attention_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), dout.data(), q.data(), k.data(), v.data(),
                               out_in.data(), lse_ref.data(), B, T, H, G, Dh);
  Buffer gdq(dq0, {B, T, H, Dh}, dtype), gdk(dk0, {B, T, G, Dh}, dtype), gdv(dv0, {B, T, G, Dh}, dtype),
      gdout(dout, {B, T, H, Dh}, dtype), gout(out_in, {B, T, H, Dh}, dtype), glse(lse_ref, {B, H, T}, DType::kF32);
  moe::cuda::attention_backward(gdq.t, gdk.t, gdv.t, gdout.t, dq_.t, dk_.t, dv_.t, gout.t, glse.t);
  auto contribution = [](const std::vector<float>& after, const std::vector<float>& before) {
    std::vector<float> d(after.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
    return max_abs(d);
  };
  check_close(gdq.read(), dq_ref, rtol, frac * contribution(dq_ref, dq0) + 1e-6, name + ": dq");
  check_close(gdk.read(), dk_ref, rtol, frac * contribution(dk_ref, dk0) + 1e-6, name + ": dk");
  check_close(gdv.read(), dv_ref, rtol, frac * contribution(dv_ref, dv0) + 1e-6, name + ": dv");
}

}  // namespace

int main(int argc, char** argv) {
  // argv[1]: "tiny" (one case per dtype), "quick" (a few cases) or "all" (the GPU test's grid); argv[2]: schedule
  // 0/1/2.
  const std::string which = argc > 1 ? argv[1] : "quick";
  emu::schedule = argc > 2 ? std::atoi(argv[2]) : 0;
  uint32_t seed = 100;
  if (which == "all") {
    for (DType dtype : {DType::kF32, DType::kBF16})
      for (int64_t Dh : {64, 128})
        for (int64_t T : {1, 37, 130})
          for (int64_t G : {4, 2, 1}) run_case(dtype, 2, T, 4, G, Dh, seed += 10);
    for (DType dtype : {DType::kF32, DType::kBF16})
      for (int64_t Dh : {40, 96})
        for (int64_t T : {37, 130}) run_case(dtype, 2, T, 4, 2, Dh, seed += 10);
  } else if (which == "tiny") {
    for (DType dtype : {DType::kF32, DType::kBF16}) run_case(dtype, 1, 70, 2, 1, 64, seed += 10);
  } else {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      run_case(dtype, 1, 1, 2, 1, 64, seed += 10);
      run_case(dtype, 1, 37, 4, 2, 64, seed += 10);
      run_case(dtype, 2, 130, 4, 1, 128, seed += 10);
      run_case(dtype, 1, 70, 2, 2, 40, seed += 10);
    }
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
