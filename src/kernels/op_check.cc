#include "src/kernels/op_check.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "src/kernels/gpu_kernels.h"
#include "src/kernels/kernel_choice.h"
#include "src/kernels/op_table.h"

namespace moe::op_check {
namespace {

// Holds each device output to its host twin; the first failure is the detail.
void compare(const Side& host, const Side& device, Result& r) {
  for (size_t o = 0; o < host.outputs().size(); ++o) {
    const Side::Output& ho = host.outputs()[o];
    const std::vector<double> want = Side::values(ho), got = Side::values(device.outputs()[o]);
    double amax = 0;
    for (double w : want)
      if (std::isfinite(w)) amax = std::max(amax, std::fabs(w));
    const double atol = (ho.tol.of_max ? ho.tol.atol * amax : ho.tol.atol) + ho.tol.floor;
    for (size_t i = 0; i < want.size(); ++i) {
      const double atol_i = ho.scale.empty() ? atol : ho.tol.atol * ho.scale[i] + ho.tol.floor;
      const bool same = got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i]));
      const double err = same ? 0.0 : std::fabs(got[i] - want[i]);
      const double bound = atol_i + ho.tol.rtol * std::fabs(want[i]);
      double ratio = same ? 0.0 : bound > 0 ? err / bound : std::numeric_limits<double>::infinity();
      if (std::isnan(ratio)) ratio = std::numeric_limits<double>::infinity();
      if (ratio > r.worst || r.tolerance.empty()) {
        r.worst = ratio;
        r.tolerance = tol_text(ho.tol);
      }
      if (std::isfinite(err)) r.max_error = std::max(r.max_error, err);
      if (ratio > 1 && r.passed) {
        r.passed = false;
        std::ostringstream d;
        d << ho.name << "[" << i << "] = " << got[i] << ", the CPU gives " << want[i];
        r.detail = d.str();
      }
    }
  }
}

// The device's outputs of two runs of one case are the same bits.
void compare_runs(const Side& first, const Side& second, Result& r) {
  for (size_t o = 0; o < first.outputs().size() && r.passed; ++o) {
    const std::vector<double> a = Side::values(first.outputs()[o]), b = Side::values(second.outputs()[o]);
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0) {
        r.passed = false;
        std::ostringstream d;
        d << first.outputs()[o].name << "[" << i << "] = " << a[i] << ", then " << b[i] << " on the same inputs";
        r.detail = d.str();
        break;
      }
    }
  }
}

// "bf16" where every slot has one dtype, else "bf16/f32/f32".
std::string slots_text(const std::vector<DType>& slots) {
  if (std::all_of(slots.begin(), slots.end(), [&](DType d) { return d == slots[0]; })) return dtype_name(slots[0]);
  std::string s;
  for (DType d : slots) s += (s.empty() ? "" : "/") + std::string(dtype_name(d));
  return s;
}

// One case with these slot dtypes, host against device (twice where it
// promises the same bits and `twice`).
Result run_case(const Case& c, const Shapes& shapes, const std::vector<DType>& slots, bool twice) {
  Result r;
  r.op = c.op;
  r.shape = c.shape;
  r.dtype = slots_text(slots);
  try {
    // The kernel the device side runs, where a vendor's may (gpu_kernels.h).
    const std::string family = kernels::vendor_family(c.op);
    const kernels::Choice* choice = nullptr;
    const DType act = slots[0];
    if (family == kernels::kAttentionFamily) {
      choice = &kernels::attention_choice({shapes.B, shapes.T, shapes.heads, shapes.kv_heads, shapes.head_dim, act});
    } else if (family == kernels::kExpertGemmFamily) {
      choice = &kernels::expert_gemm_choice({shapes.experts, shapes.dim, shapes.expert_hidden, act});
    }
    if (choice != nullptr) {
      r.implementation = choice->implementation;
      r.vendor = choice->vendor;
    }
    Side host(Device::kCpu, slots), device(Device::kCuda, slots);
    c.body(host);
    c.body(device);
    r.ms = device.ms();
    r.passed = true;
    compare(host, device, r);
    if (twice && c.deterministic && r.passed) {
      Side again(Device::kCuda, slots);
      c.body(again);
      compare_runs(device, again, r);
    }
  } catch (const std::exception& e) {
    r.passed = false;
    r.detail = e.what();
  }
  return r;
}

// L = sum over the declaration's outputs of dot(dout, out), in double.
double loss_of(const Side::Gradient& g) {
  g.forward();
  double sum = 0;
  for (const Side::Seen& seen : g.seen) {
    const float* out = seen.out.f32();
    const float* dout = seen.dout.f32();
    for (int64_t i = 0; i < seen.out.numel(); ++i) sum += static_cast<double>(dout[i]) * out[i];
  }
  return sum;
}

}  // namespace

std::string Shapes::text() const {
  std::ostringstream s;
  s << "B=" << B << " T=" << T << " D=" << dim << " H=" << heads << "/" << kv_heads << "x" << head_dim
    << " F=" << hidden << " V=" << vocab << " E=" << experts << " K=" << top_k << " Fe=" << expert_hidden;
  return s.str();
}

Shapes shapes_of(int64_t B, int64_t T, int64_t D, int64_t H, int64_t G, int64_t Dh, int64_t F, int64_t V, int64_t E,
                 int64_t K, int64_t Fe) {
  Shapes s;
  s.B = B;
  s.T = T;
  s.dim = D;
  s.heads = H;
  s.kv_heads = G;
  s.head_dim = Dh;
  s.hidden = F;
  s.vocab = V;
  s.experts = E;
  s.top_k = K;
  s.expert_hidden = Fe;
  return s;
}

std::vector<Result> check_ops(const Shapes& shapes, DType act) {
  std::vector<Result> results;
  for (const Case& c : cases(shapes)) {
    if (c.dtype_slots == 0 && act != DType::kF32) continue;
    if (c.needs_fp8_gemms && !kernels::fp8_gemms_available()) continue;
    results.push_back(
        run_case(c, shapes, std::vector<DType>(static_cast<size_t>(std::max(c.dtype_slots, 1)), act), false));
  }
  return results;
}

std::vector<Result> check_ops_every_dtype(const Shapes& shapes, const std::set<std::string>& only) {
  std::vector<Result> results;
  for (const Case& c : cases(shapes)) {
    if (!only.empty() && only.count(c.op) == 0) continue;
    if (c.needs_fp8_gemms && !kernels::fp8_gemms_available()) continue;
    const int slots = std::max(c.dtype_slots, 1), combos = c.dtype_slots == 0 ? 1 : 1 << slots;
    for (int combo = 0; combo < combos; ++combo) {
      std::vector<DType> dtypes;
      for (int i = 0; i < slots; ++i) dtypes.push_back((combo >> i) & 1 ? DType::kBF16 : DType::kF32);
      if (c.accepts && !c.accepts(dtypes)) continue;
      results.push_back(run_case(c, shapes, dtypes, true));
    }
  }
  return results;
}

std::vector<Result> check_gradients(const Shapes& shapes) { return check_gradient_cases(gradient_cases(shapes)); }

std::vector<Result> check_gradient_cases(const std::vector<Case>& cases) {
  constexpr double h = 1e-2;
  constexpr int64_t kChecksPerInput = 16;
  std::vector<Result> results;
  for (const Case& c : cases) {
    Result r;
    r.op = c.op;
    r.shape = c.shape;
    r.dtype = "f32";
    r.passed = true;
    try {
      Side side(Device::kCpu, {DType::kF32});
      c.body(side);
      const Side::Gradient& g = side.declared_gradient();
      if (g.inputs.empty()) throw std::logic_error("op_check: " + c.op + " declares no gradient");
      g.forward();
      for (const Side::Wrt& in : g.inputs) zero(in.grad);
      g.backward();
      r.tolerance = tol_text({g.rtol, g.atol});
      for (const Side::Wrt& in : g.inputs) {
        float* x = in.x.f32();
        const float* analytic = in.grad.f32();
        const int64_t n = in.x.numel(), stride = std::max<int64_t>(1, n / kChecksPerInput);
        for (int64_t i = 0; i < n; i += stride) {
          const float saved = x[i];
          x[i] = static_cast<float>(saved + h);
          const double up = loss_of(g);
          x[i] = static_cast<float>(saved - h);
          const double down = loss_of(g);
          x[i] = saved;
          const double numeric = (up - down) / (2 * h), err = std::fabs(analytic[i] - numeric);
          const double ratio = err / (g.atol + g.rtol * std::fabs(numeric));
          r.max_error = std::max(r.max_error, err);
          r.worst = std::max(r.worst, std::isnan(ratio) ? std::numeric_limits<double>::infinity() : ratio);
          if (!(ratio <= 1) && r.passed) {
            r.passed = false;
            std::ostringstream d;
            d << "d" << in.name << "[" << i << "] = " << analytic[i] << ", the finite difference gives " << numeric;
            r.detail = d.str();
          }
        }
      }
    } catch (const std::exception& e) {
      r.passed = false;
      r.detail = e.what();
    }
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace moe::op_check
