// Safetensors files: an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw bytes.
// The format Hugging Face tools open, and the per-rank checkpoint format.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe {

struct SafetensorsEntry {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;  // written as F32
};

// Writes `path` atomically (a temporary file renamed into place). Tensors are
// stored in the given order; `metadata` goes to "__metadata__".
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata);

// Reads every tensor of an F32 safetensors file, checking that the header
// length and every byte range fit the file (a UserError names the file and
// the tensor otherwise).
std::vector<SafetensorsEntry> read_safetensors(const std::string& path);

}  // namespace moe
