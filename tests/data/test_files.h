// Helpers for the data tests: a fresh scratch directory per test, and the
// bytes of each token-file format, built here from the format descriptions
// (not with the code under test) so that readers are checked against them.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "src/data/token_dataset.h"
#include "tests/scratch_dir.h"

namespace moe::test {

void write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// Little-endian bytes of a value or of a vector of values.
template <typename T>
std::string le(T value) {
  std::string bytes(sizeof(T), '\0');
  std::memcpy(bytes.data(), &value, sizeof(T));
  return bytes;
}

template <typename T>
std::string le_array(const std::vector<T>& values) {
  std::string bytes;
  for (T v : values) bytes += le(v);
  return bytes;
}

// A .npy file: preamble for `major`.0, the dict text, padding to 64 bytes, data.
// A 1-D uint16 .npy token file at `path` (what the training tests feed the sampler).
void write_token_npy(const std::string& path, const std::vector<uint16_t>& tokens);

std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1);
// The dict numpy writes for a C-ordered array of `descr` with `shape` like "(5,)".
std::string npy_dict(const std::string& descr, const std::string& shape, bool fortran_order = false);

// An llm.c shard: 256 int32 header then data.
std::string llmc_bytes(int32_t version, int32_t num_tokens, const std::string& data, int32_t magic = 20240520);

// A Megatron-LM .idx.
std::string megatron_idx_bytes(uint8_t dtype_code, const std::vector<int32_t>& sizes,
                               const std::vector<int64_t>& pointers, const std::vector<int64_t>& doc_idx,
                               uint64_t version = 1, const std::string& magic = std::string("MMIDIDX\0\0", 9));

// Every token of the dataset.
std::vector<int32_t> read_all(const TokenDataset& dataset);

// The message of the UserError `action` throws; fails the test when it throws
// nothing or something else.
std::string user_error_of(const std::function<void()>& action);

// 0, 1, ..., n-1 shifted by `first`.
std::vector<int32_t> iota_ids(int64_t n, int32_t first = 0);

}  // namespace moe::test
