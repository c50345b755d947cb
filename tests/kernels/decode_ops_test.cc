// The ops of generation on the CPU: attention of one query row against a KV
// cache is the last row of causal attention over the whole sequence, and RoPE
// at a position is that row of RoPE over the sequence.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "src/kernels/cpu/cpu_ops.h"

namespace {

std::vector<float> random_values(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

}  // namespace

TEST_CASE("attention_decode is the last row of causal attention, for every length and GQA group") {
  const int64_t H = 4, G = 2, Dh = 8;
  for (int64_t T : {1, 2, 7, 16}) {
    const auto q = random_values(static_cast<size_t>(T * H * Dh), 1),
               k = random_values(static_cast<size_t>(T * G * Dh), 2),
               v = random_values(static_cast<size_t>(T * G * Dh), 3);
    std::vector<float> out(q.size()), lse(static_cast<size_t>(H * T));
    moe::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), 1, T, H, G, Dh);
    // A cache with room for more rows than are read: the extra rows must not count.
    std::vector<float> k_cache(k), v_cache(v);
    k_cache.resize(k.size() + G * Dh, 100.0f);
    v_cache.resize(v.size() + G * Dh, 100.0f);
    std::vector<float> row(static_cast<size_t>(H * Dh));
    moe::cpu::attention_decode(row.data(), q.data() + (T - 1) * H * Dh, k_cache.data(), v_cache.data(), T, H, G, Dh);
    for (size_t i = 0; i < row.size(); ++i) {
      INFO("T " << T << ", element " << i);
      CHECK(row[i] == Approx(out[static_cast<size_t>((T - 1) * H * Dh) + i]).margin(1e-6));
    }
  }
}

TEST_CASE("rope_forward at a position rotates as that row of a longer sequence") {
  const int64_t T = 12, H = 3, Dh = 8;
  auto seq = random_values(static_cast<size_t>(T * H * Dh), 4);
  const auto original = seq;
  moe::cpu::rope_forward(seq.data(), T, T, H, Dh, 10000.0f);
  for (int64_t p : {0, 5, 11}) {
    std::vector<float> row(original.begin() + p * H * Dh, original.begin() + (p + 1) * H * Dh);
    moe::cpu::rope_forward(row.data(), 1, 1, H, Dh, 10000.0f, p);
    for (size_t i = 0; i < row.size(); ++i) CHECK(row[i] == seq[static_cast<size_t>(p * H * Dh) + i]);
  }
}
