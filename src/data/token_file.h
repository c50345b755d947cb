// The internal interface between TokenDataset and the per-format readers.
//
// Every format reduces to the same description: a memory-mapped file, one
// integer dtype, and the runs of bytes in it that hold tokens, in stream
// order. Readers parse and bounds-check headers once, at open; reading tokens
// afterwards is format-independent (token_file.cc).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "src/data/mapped_file.h"

namespace moe {

// Token files are little-endian (numpy '<', llm.c, Megatron on x86); we read
// them by memcpy into host integers, which is right only on a little-endian host.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token readers assume a little-endian host");

enum class TokenDType { kUInt8, kInt8, kInt16, kUInt16, kInt32, kUInt32, kInt64 };

int64_t dtype_bytes(TokenDType dtype);
const char* dtype_name(TokenDType dtype);  // "uint16", ...

// `num_tokens` tokens starting `byte_offset` bytes into the file.
struct TokenRun {
  int64_t byte_offset = 0;
  int64_t num_tokens = 0;
};

class TokenFile {
 public:
  // Checks that every run lies inside the file (readers check first and say
  // why in their own words; this is the last line of defence).
  TokenFile(std::shared_ptr<const MappedFile> file, std::string format, TokenDType dtype, std::vector<TokenRun> runs);

  const std::string& path() const { return file_->path(); }
  const std::string& format() const { return format_; }  // "npy", "llm.c", "megatron", "raw"
  TokenDType dtype() const { return dtype_; }
  int64_t num_tokens() const { return num_tokens_; }

  // Copies tokens [start, start + count) of this file to out as int32. An id
  // outside [0, vocab_size) is a UserError naming the file, the token's offset
  // in the file and in the stream (`stream_offset` is this file's first token).
  void read(int64_t start, int64_t count, int64_t vocab_size, int64_t stream_offset, int32_t* out) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  std::string format_;
  TokenDType dtype_;
  std::vector<TokenRun> runs_;
  std::vector<int64_t> run_first_token_;  // index in this file of each run's first token
  int64_t num_tokens_ = 0;
};

// One line, "data file PATH: PROBLEM; FIX", as a UserError.
[[noreturn]] void reject_data_file(const std::string& path, const std::string& problem, const std::string& fix);

// True when [offset, offset + length) lies inside a file of `file_size` bytes
// (no overflow for any non-negative inputs).
bool fits_in_file(int64_t offset, int64_t length, int64_t file_size);

// Reads a little-endian T at p (any alignment); the caller has bounds-checked p.
template <typename T>
T load_le(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// The readers, one per format (each in its own .cc file).
TokenFile read_npy_file(std::shared_ptr<const MappedFile> file);
// An llm.c shard: its magic, or a header that describes the file exactly
// (version 1 or 2, the token count matching the size) under a wrong magic,
// which read_llmc_bin_file then refuses for its header instead of the file
// being read as raw token ids.
bool looks_like_llmc(const MappedFile& file);
TokenFile read_llmc_bin_file(std::shared_ptr<const MappedFile> file);
TokenFile read_megatron_files(std::shared_ptr<const MappedFile> bin, const MappedFile& idx);
TokenFile read_raw_bin_file(std::shared_ptr<const MappedFile> file, int64_t vocab_size);

}  // namespace moe
