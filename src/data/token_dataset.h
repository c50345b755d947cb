// TokenDataset: pre-tokenized files, memory-mapped read-only and concatenated
// in name order into one logical stream of token ids.
//
// Formats, detected per file:
//   *.npy        NumPy 1.0/2.0/3.0, dtype '<u2' '<u4' '<i4' '<i8', C order, 1-D or 2-D (read row by row)
//   *.bin        llm.c shard when it starts with magic 20240520 (version 1: uint16, 2: uint32);
//                Megatron-LM indexed dataset when X.idx lies beside X.bin;
//                otherwise headerless ids: uint16 when vocab_size <= 65536, else uint32
//   X.idx or X   the Megatron-LM pair X.bin + X.idx
// Every header, length and offset is checked against the file's size at open;
// ids are checked against the vocabulary as they are read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/data/token_file.h"

namespace moe {

class TokenDataset {
 public:
  // `path`: a token file, a Megatron pair or prefix, or a directory whose files
  // matching the fnmatch `pattern` (e.g. "*.npy", "tokenized_*.bin") are read.
  // `config_section` ("data" or "eval") names the keys in error messages.
  // Anything wrong with the files is a UserError naming the file and the fix.
  static TokenDataset open(const std::string& path, const std::string& pattern, int64_t vocab_size,
                           const std::string& config_section = "data");

  int64_t num_tokens() const { return num_tokens_; }
  const std::string& path() const { return path_; }

  // Copies tokens [start, start + count) of the stream to out, as int32. An id
  // < 0 or >= vocab_size is a UserError naming the file and the token's offset.
  void read(int64_t start, int64_t count, int32_t* out) const;

  // One line: where, how many files, their formats and dtypes, the token count.
  std::string describe() const;

 private:
  TokenDataset() = default;

  std::string path_;
  std::string pattern_;
  bool from_directory_ = false;
  int64_t vocab_size_ = 0;
  std::vector<TokenFile> files_;
  std::vector<int64_t> file_first_token_;  // stream offset of each file's first token
  int64_t num_tokens_ = 0;
};

}  // namespace moe
