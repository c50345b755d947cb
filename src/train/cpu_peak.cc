#include "src/train/cpu_peak.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace moe {

double measure_cpu_peak_flops() {
  const int n = 512;
  std::vector<float> a(n * n, 1.0f), b(n * n, 0.5f), c(n * n, 0.0f);
  double best = 0;
  for (int run = 0; run < 4; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (run > 0) best = std::max(best, 2.0 * n * n * n / sec);  // run 0 warms up threads and caches
  }
  return best;
}

}  // namespace moe
