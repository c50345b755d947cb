#include "src/data/token_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "src/core/user_error.h"

namespace moe {
namespace {

[[noreturn]] void reject_token_id(const std::string& path, int64_t file_offset, int64_t stream_offset, int64_t id,
                                  int64_t vocab_size) {
  throw UserError(fmt::format(
      "data file {}: token {} (stream token {}) has id {}, outside the vocabulary [0, {}) of model.vocab_size = {}; "
      "tokenize the data with the model's tokenizer, or raise model.vocab_size above the largest id",
      path, file_offset, stream_offset, id, vocab_size, vocab_size));
}

// Converts `count` tokens of type T at `bytes` to int32, checking each id.
// `first` is the file offset of the first one, for the error message.
template <typename T>
void convert_run(const uint8_t* bytes, int64_t count, int64_t vocab_size, const std::string& path, int64_t first,
                 int64_t stream_offset, int32_t* out) {
  for (int64_t i = 0; i < count; ++i) {
    const int64_t id = static_cast<int64_t>(load_le<T>(bytes + i * static_cast<int64_t>(sizeof(T))));
    if (id < 0 || id >= vocab_size) reject_token_id(path, first + i, stream_offset + first + i, id, vocab_size);
    out[i] = static_cast<int32_t>(id);
  }
}

}  // namespace

int64_t dtype_bytes(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8:
    case TokenDType::kInt8: return 1;
    case TokenDType::kInt16:
    case TokenDType::kUInt16: return 2;
    case TokenDType::kInt32:
    case TokenDType::kUInt32: return 4;
    case TokenDType::kInt64: return 8;
  }
  throw std::logic_error("dtype_bytes: unknown TokenDType");
}

const char* dtype_name(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8: return "uint8";
    case TokenDType::kInt8: return "int8";
    case TokenDType::kInt16: return "int16";
    case TokenDType::kUInt16: return "uint16";
    case TokenDType::kInt32: return "int32";
    case TokenDType::kUInt32: return "uint32";
    case TokenDType::kInt64: return "int64";
  }
  throw std::logic_error("dtype_name: unknown TokenDType");
}

void reject_data_file(const std::string& path, const std::string& problem, const std::string& fix) {
  throw UserError("data file " + path + ": " + problem + "; " + fix);
}

bool fits_in_file(int64_t offset, int64_t length, int64_t file_size) {
  return offset >= 0 && length >= 0 && offset <= file_size && length <= file_size - offset;
}

TokenFile::TokenFile(std::shared_ptr<const MappedFile> file, std::string format, TokenDType dtype,
                     std::vector<TokenRun> runs)
    : file_(std::move(file)), format_(std::move(format)), dtype_(dtype) {
  const int64_t element = dtype_bytes(dtype_);
  for (const TokenRun& run : runs) {
    if (run.num_tokens == 0) continue;  // empty runs would only slow the lookup
    if (run.num_tokens < 0 || run.num_tokens > file_->size() / element ||
        !fits_in_file(run.byte_offset, run.num_tokens * element, file_->size())) {
      throw std::logic_error("TokenFile: a reader produced a run outside " + file_->path());
    }
    run_first_token_.push_back(num_tokens_);
    runs_.push_back(run);
    num_tokens_ += run.num_tokens;
  }
}

void TokenFile::read(int64_t start, int64_t count, int64_t vocab_size, int64_t stream_offset, int32_t* out) const {
  if (start < 0 || count < 0 || start > num_tokens_ || count > num_tokens_ - start) {
    throw std::out_of_range(
        fmt::format("TokenFile::read: [{}, {}) outside {} tokens of {}", start, start + count, num_tokens_, path()));
  }
  const int64_t element = dtype_bytes(dtype_);
  // The last run that starts at or before `start`.
  size_t r = std::upper_bound(run_first_token_.begin(), run_first_token_.end(), start) - run_first_token_.begin() - 1;
  while (count > 0) {
    const TokenRun& run = runs_[r];
    const int64_t in_run = start - run_first_token_[r];
    const int64_t n = std::min(count, run.num_tokens - in_run);
    // Read, not mapped: a file changed under the run is an error, not a SIGBUS.
    std::vector<uint8_t> staged(static_cast<size_t>(n * element));
    file_->read_at(run.byte_offset + in_run * element, n * element, staged.data());
    const uint8_t* bytes = staged.data();
    switch (dtype_) {
      case TokenDType::kUInt8: convert_run<uint8_t>(bytes, n, vocab_size, path(), start, stream_offset, out); break;
      case TokenDType::kInt8: convert_run<int8_t>(bytes, n, vocab_size, path(), start, stream_offset, out); break;
      case TokenDType::kInt16: convert_run<int16_t>(bytes, n, vocab_size, path(), start, stream_offset, out); break;
      case TokenDType::kUInt16: convert_run<uint16_t>(bytes, n, vocab_size, path(), start, stream_offset, out); break;
      case TokenDType::kInt32: convert_run<int32_t>(bytes, n, vocab_size, path(), start, stream_offset, out); break;
      case TokenDType::kUInt32: convert_run<uint32_t>(bytes, n, vocab_size, path(), start, stream_offset, out); break;
      case TokenDType::kInt64: convert_run<int64_t>(bytes, n, vocab_size, path(), start, stream_offset, out); break;
    }
    start += n;
    count -= n;
    out += n;
    ++r;
  }
}

}  // namespace moe
