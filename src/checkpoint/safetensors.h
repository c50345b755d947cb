// Safetensors files: an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw bytes.
// The format Hugging Face tools open, and the per-rank checkpoint format.
// Written as F32; read from F32, BF16 or F16 (converted to fp32: Hugging Face
// checkpoints are mostly stored in 16 bits). Other dtypes are recognised (so
// a file holding, say, an I64 buffer still opens) but not read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/core/tensor.h"  // numel_of
#include "src/core/durable_file.h"

namespace moe {

struct SafetensorsEntry {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;  // written as F32
};

// A tensor to write, by reference (data holds the product of shape floats).
struct SafetensorsView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};

struct WrittenFile {
  uint64_t bytes = 0;
  uint32_t crc32 = 0;  // of the whole file
};

// Writes `path` atomically and durably: a temporary file, flushed to disk,
// renamed into place, and the folder flushed. Tensors are stored in the given
// order; `metadata` goes to "__metadata__".
WrittenFile write_safetensors(const std::string& path, const std::vector<SafetensorsView>& tensors,
                              const std::map<std::string, std::string>& metadata);
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata);

// An open file whose header has been checked: the header length and every
// byte range fit the file and the shapes (a UserError names the file and the
// tensor otherwise). Tensors are read on demand.
class SafetensorsFile {
 public:
  struct Entry {
    std::string dtype;  // "F32", "BF16", "F16", "I64", ...
    std::vector<int64_t> shape;
    int64_t numel = 0;
    uint64_t begin = 0, end = 0;  // byte range from the start of the file
  };

  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  // A UserError when the file has no such tensor.
  const Entry& entry(const std::string& name) const;
  // Reads a whole tensor into dst (room for its elements) as fp32; a
  // UserError for dtypes other than F32, BF16 and F16.
  void read(const std::string& name, float* dst) const;
  // CRC-32 of the whole file (reads it once).
  uint32_t crc32() const;

 private:
  std::string path_;
  uint64_t size_ = 0;
  std::map<std::string, Entry> entries_;
};

// Reads every tensor of a safetensors file of F32, BF16 or F16 tensors.
std::vector<SafetensorsEntry> read_safetensors(const std::string& path);

}  // namespace moe
