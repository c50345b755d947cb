// The bytes of a NumPy format 1.0 header for a 1-D uint16 array, as numpy.save
// writes it: magic, version, header length, the dict padded with spaces and a
// newline so that the data starts on a 64-byte boundary.
#pragma once

#include <cstdint>
#include <string>

namespace moe {

std::string npy_uint16_header(int64_t num_elements);

}  // namespace moe
