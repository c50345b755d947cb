#include "src/core/crc32.h"

#include <array>

namespace moe {
namespace {

using Table = std::array<uint32_t, 256>;

// The byte table of a reflected CRC-32 with polynomial `poly` (bit-reversed).
Table make_table(uint32_t poly) {
  Table t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? poly ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

uint32_t update(const Table& table, uint32_t crc, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (size_t i = 0; i < bytes; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t bytes) {
  static const Table table = make_table(0xEDB88320u);
  return update(table, crc, data, bytes);
}

uint32_t crc32c_update(uint32_t crc, const void* data, size_t bytes) {
  static const Table table = make_table(0x82F63B78u);
  return update(table, crc, data, bytes);
}

}  // namespace moe
