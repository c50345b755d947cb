// CRC-32 checksums. crc32 (the zlib/PNG polynomial) guards checkpoint files:
// a flipped or lost byte changes it, so a damaged file is refused before any
// of it is used. crc32c (Castagnoli) is what TensorBoard's event records carry.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe {

// Continues a running CRC: crc32_update(0, a) then crc32_update(that, b) == crc of a+b.
uint32_t crc32_update(uint32_t crc, const void* data, size_t bytes);
// The same for CRC-32C.
uint32_t crc32c_update(uint32_t crc, const void* data, size_t bytes);

}  // namespace moe
