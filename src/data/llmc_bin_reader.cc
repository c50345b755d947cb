// llm.c token shards (karpathy/llm.c, dev/data/data_common.py):
//   int32 header[256]: [0] magic 20240520, [1] version (1: uint16 tokens,
//   2: uint32 tokens), [2] token count | the tokens.
#include <fmt/format.h>

#include "src/data/token_file.h"

namespace moe {
namespace {

constexpr int32_t kMagic = 20240520;
constexpr int64_t kHeaderBytes = 256 * 4;
constexpr char kFix[] = "write it again with llm.c's write_datafile(), or give the tokens as a .npy file";

bool has_llmc_magic(const MappedFile& file) { return file.size() >= 4 && load_le<int32_t>(file.data()) == kMagic; }

// The header without the magic: a version and a token count that fit the file.
bool has_llmc_shape(const MappedFile& file) {
  if (file.size() < kHeaderBytes) return false;
  const int32_t version = load_le<int32_t>(file.data() + 4);
  const int64_t tokens = load_le<int32_t>(file.data() + 8);
  return (version == 1 || version == 2) && tokens >= 0 && tokens * (version == 1 ? 2 : 4) == file.size() - kHeaderBytes;
}

}  // namespace

bool looks_like_llmc(const MappedFile& file) { return has_llmc_magic(file) || has_llmc_shape(file); }

TokenFile read_llmc_bin_file(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  if (!has_llmc_magic(*file)) {
    const std::string got = file->size() >= 4 ? std::to_string(load_le<int32_t>(file->data())) : "missing";
    reject_data_file(path,
                     fmt::format("bad magic {}, not llm.c's {}, though the rest of its header describes an llm.c shard "
                                 "(the file is damaged, or was not written by llm.c)",
                                 got, kMagic),
                     kFix);
  }
  if (file->size() < kHeaderBytes) {
    reject_data_file(
        path, fmt::format("is truncated: {} bytes, shorter than the {}-byte llm.c header", file->size(), kHeaderBytes),
        kFix);
  }
  const int32_t version = load_le<int32_t>(file->data() + 4);
  if (version != 1 && version != 2) {
    reject_data_file(
        path, fmt::format("llm.c header version {} is not supported (1: uint16 tokens, 2: uint32)", version), kFix);
  }
  const TokenDType dtype = version == 1 ? TokenDType::kUInt16 : TokenDType::kUInt32;
  const int64_t num_tokens = load_le<int32_t>(file->data() + 8);
  const int64_t data_bytes = file->size() - kHeaderBytes;
  if (num_tokens < 0 || num_tokens * dtype_bytes(dtype) != data_bytes) {
    const bool too_short = num_tokens * dtype_bytes(dtype) > data_bytes;
    reject_data_file(
        path,
        fmt::format("{}: the llm.c header says {} tokens of {} ({} bytes after the header), the file has {}",
                    too_short ? "is truncated" : "does not match its header", num_tokens, dtype_name(dtype),
                    num_tokens * dtype_bytes(dtype), data_bytes),
        too_short ? "copy or write it again; an interrupted copy leaves a file short" : kFix);
  }
  return TokenFile(std::move(file), "llm.c", dtype, {TokenRun{kHeaderBytes, num_tokens}});
}

}  // namespace moe
