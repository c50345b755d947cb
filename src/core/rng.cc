#include "src/core/rng.h"

#include <cmath>

namespace moe {

uint64_t stream_key(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return splitmix64(h ^ splitmix64(seed));
}

double uniform_at(uint64_t key, uint64_t index) {
  const uint64_t bits = splitmix64(key ^ splitmix64(index));
  return (static_cast<double>(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);  // 53 bits, centred in its bin
}

double normal_at(uint64_t key, uint64_t index) {
  const uint64_t pair = index / 2;
  const double u1 = uniform_at(key, 2 * pair);
  const double u2 = uniform_at(key, 2 * pair + 1);
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * M_PI * u2;
  return index % 2 == 0 ? r * std::cos(angle) : r * std::sin(angle);
}

}  // namespace moe
