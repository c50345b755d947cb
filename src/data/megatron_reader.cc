// Megatron-LM indexed datasets (megatron/core/datasets/indexed_dataset.py): a
// pair X.bin (the tokens of every sequence, back to back) + X.idx:
//   magic "MMIDIDX\0\0" | uint64 version = 1 | uint8 dtype code |
//   uint64 sequence count S | uint64 document count D |
//   int32 sizes[S] (tokens) | int64 pointers[S] (byte offsets into X.bin) | int64 doc_idx[D].
// The stream is every sequence in index order; documents do not matter here.
#include <fmt/format.h>

#include "src/data/token_file.h"

namespace moe {
namespace {

constexpr char kMagic[] = "MMIDIDX\0\0";
constexpr int64_t kMagicBytes = 9;
constexpr int64_t kHeaderBytes = kMagicBytes + 8 + 1 + 8 + 8;
constexpr char kFix[] = "rebuild the pair with Megatron-LM's tools/preprocess_data.py";

// Integer codes are token ids; 6 (float64) and 7 (float32) are not.
bool dtype_from_code(uint8_t code, TokenDType* dtype) {
  switch (code) {
    case 1: *dtype = TokenDType::kUInt8; return true;
    case 2: *dtype = TokenDType::kInt8; return true;
    case 3: *dtype = TokenDType::kInt16; return true;
    case 4: *dtype = TokenDType::kInt32; return true;
    case 5: *dtype = TokenDType::kInt64; return true;
    case 8: *dtype = TokenDType::kUInt16; return true;
    default: return false;
  }
}

}  // namespace

TokenFile read_megatron_files(std::shared_ptr<const MappedFile> bin, const MappedFile& idx) {
  const std::string& idx_path = idx.path();
  const uint8_t* header = idx.data();
  if (idx.size() < kMagicBytes || std::memcmp(header, kMagic, kMagicBytes) != 0) {
    reject_data_file(idx_path, "bad magic: not a Megatron-LM index (it does not start with \"MMIDIDX\")", kFix);
  }
  if (idx.size() < kHeaderBytes) {
    reject_data_file(
        idx_path,
        fmt::format("is truncated: {} bytes, shorter than the {}-byte index header", idx.size(), kHeaderBytes), kFix);
  }
  const uint64_t version = load_le<uint64_t>(header + 9);
  if (version != 1) reject_data_file(idx_path, fmt::format("index version {} is not supported (1 is)", version), kFix);
  const uint8_t code = header[17];
  TokenDType dtype;
  if (!dtype_from_code(code, &dtype)) {
    const char* what = code == 6 ? "float64" : code == 7 ? "float32" : "unknown";
    reject_data_file(
        idx_path,
        fmt::format("dtype code {} ({}) cannot hold token ids (accepted: 1 uint8, 2 int8, 3 int16, 4 int32, "
                    "5 int64, 8 uint16)",
                    code, what),
        kFix);
  }
  const uint64_t num_sequences = load_le<uint64_t>(header + 18);
  const uint64_t num_documents = load_le<uint64_t>(header + 26);
  // 12 bytes per sequence and 8 per document must fit in the file; checking
  // the counts first keeps the byte arithmetic below from overflowing.
  const uint64_t room = static_cast<uint64_t>(idx.size() - kHeaderBytes);
  if (num_sequences > room / 12 || num_documents > (room - 12 * num_sequences) / 8) {
    reject_data_file(
        idx_path,
        fmt::format("is truncated: {} sequences and {} documents need {} index bytes, the file has {}", num_sequences,
                    num_documents, kHeaderBytes + 12.0 * num_sequences + 8.0 * num_documents, idx.size()),
        kFix);
  }
  const int64_t count = static_cast<int64_t>(num_sequences);
  const uint8_t* sizes = header + kHeaderBytes;
  const uint8_t* pointers = sizes + 4 * count;
  const int64_t element = dtype_bytes(dtype);

  std::vector<TokenRun> runs;
  for (int64_t s = 0; s < count; ++s) {
    const int64_t size = load_le<int32_t>(sizes + 4 * s);
    const int64_t pointer = load_le<int64_t>(pointers + 8 * s);
    if (size < 0 || !fits_in_file(pointer, size * element, bin->size())) {
      reject_data_file(bin->path(),
                       fmt::format("is truncated or does not match its index: sequence {} ({} tokens at byte {}) lies "
                                   "outside its {} bytes",
                                   s, size, pointer, bin->size()),
                       "copy both files again, or " + std::string(kFix));
    }
    // Sequences are normally back to back: merge them into one run.
    if (!runs.empty() && runs.back().byte_offset + runs.back().num_tokens * element == pointer) {
      runs.back().num_tokens += size;
    } else {
      runs.push_back(TokenRun{pointer, size});
    }
  }
  return TokenFile(std::move(bin), "megatron", dtype, std::move(runs));
}

}  // namespace moe
