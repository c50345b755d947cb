#include "src/data/npy_writer.h"

#include <fmt/format.h>

namespace moe {

std::string npy_uint16_header(int64_t num_elements) {
  constexpr size_t kPreambleBytes = 10;  // "\x93NUMPY", major, minor, uint16 header length
  constexpr size_t kAlignment = 64;
  std::string dict = fmt::format("{{'descr': '<u2', 'fortran_order': False, 'shape': ({},), }}", num_elements);
  const size_t unpadded = kPreambleBytes + dict.size() + 1;  // + the final '\n'
  dict.append((kAlignment - unpadded % kAlignment) % kAlignment, ' ');
  dict.push_back('\n');
  const auto length = static_cast<uint16_t>(dict.size());
  std::string header("\x93NUMPY\x01\x00", 8);
  header.push_back(static_cast<char>(length & 0xff));
  header.push_back(static_cast<char>(length >> 8));
  return header + dict;
}

}  // namespace moe
