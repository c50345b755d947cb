// Headerless .bin token files: nothing in the file says how wide an id is, so
// the rule is fixed by the vocabulary: uint16 when model.vocab_size <= 65536
// (every id fits in 16 bits, as nanoGPT writes them), uint32 otherwise.
#include <fmt/format.h>

#include "src/data/token_file.h"

namespace moe {

TokenFile read_raw_bin_file(std::shared_ptr<const MappedFile> file, int64_t vocab_size) {
  const TokenDType dtype = vocab_size <= 65536 ? TokenDType::kUInt16 : TokenDType::kUInt32;
  const int64_t element = dtype_bytes(dtype);
  if (file->size() % element != 0) {
    reject_data_file(file->path(),
                     fmt::format("{} bytes is not a whole number of {} tokens (a headerless .bin holds uint16 ids when "
                                 "model.vocab_size <= 65536, else uint32; model.vocab_size = {})",
                                 file->size(), dtype_name(dtype), vocab_size),
                     "check model.vocab_size and that the file was copied whole, or give the tokens as a .npy file");
  }
  const int64_t num_tokens = file->size() / element;
  return TokenFile(std::move(file), "raw", dtype, {TokenRun{0, num_tokens}});
}

}  // namespace moe
