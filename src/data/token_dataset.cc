#include "src/data/token_dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "src/core/user_error.h"
#include "src/data/data_files.h"

namespace moe {
namespace {

bool has_extension(const std::string& path, const char* ext) { return std::filesystem::path(path).extension() == ext; }

TokenFile open_token_file(const DataFileSpec& spec, int64_t vocab_size) {
  if (!spec.megatron_idx_path.empty()) {
    auto idx = MappedFile::open(spec.megatron_idx_path);  // needed only while the index is read
    return read_megatron_files(MappedFile::open(spec.path), *idx);
  }
  if (has_extension(spec.path, ".npy")) return read_npy_file(MappedFile::open(spec.path));
  if (has_extension(spec.path, ".bin")) {
    auto file = MappedFile::open(spec.path);
    if (looks_like_llmc(*file)) return read_llmc_bin_file(std::move(file));
    return read_raw_bin_file(std::move(file), vocab_size);
  }
  reject_data_file(spec.path, "has no known token-file extension (.npy, or .bin for llm.c, Megatron-LM and raw ids)",
                   "give token files one of those extensions, or narrow the file pattern to them");
}

}  // namespace

TokenDataset TokenDataset::open(const std::string& path, const std::string& pattern, int64_t vocab_size,
                                const std::string& config_section) {
  if (vocab_size < 1) throw std::invalid_argument("TokenDataset::open: vocab_size must be positive");
  TokenDataset dataset;
  dataset.path_ = path;
  dataset.pattern_ = pattern;
  dataset.vocab_size_ = vocab_size;
  dataset.from_directory_ = std::filesystem::is_directory(path);
  for (const DataFileSpec& spec : find_data_files(path, pattern, config_section)) {
    dataset.files_.push_back(open_token_file(spec, vocab_size));
    dataset.file_first_token_.push_back(dataset.num_tokens_);
    dataset.num_tokens_ += dataset.files_.back().num_tokens();
  }
  if (dataset.num_tokens_ == 0) {
    throw UserError(fmt::format("{}.dataset_path = {}: its files hold no tokens; point it at a tokenized dataset",
                                config_section, path));
  }
  return dataset;
}

void TokenDataset::read(int64_t start, int64_t count, int32_t* out) const {
  if (start < 0 || count < 0 || start > num_tokens_ || count > num_tokens_ - start) {
    throw std::out_of_range(fmt::format("TokenDataset::read: [{}, {}) outside the {} tokens of {}", start,
                                        start + count, num_tokens_, path_));
  }
  // The last file that starts at or before `start` (empty files are skipped by the loop).
  size_t f =
      std::upper_bound(file_first_token_.begin(), file_first_token_.end(), start) - file_first_token_.begin() - 1;
  while (count > 0) {
    const int64_t in_file = start - file_first_token_[f];
    const int64_t n = std::min(count, files_[f].num_tokens() - in_file);
    files_[f].read(in_file, n, vocab_size_, file_first_token_[f], out);
    start += n;
    count -= n;
    out += n;
    ++f;
  }
}

std::string TokenDataset::describe() const {
  // "npy uint16 x3, raw uint32 x1": formats in order of first appearance.
  std::vector<std::string> kinds;
  std::map<std::string, int> counts;
  for (const TokenFile& f : files_) {
    const std::string kind = f.format() + " " + dtype_name(f.dtype());
    if (counts[kind]++ == 0) kinds.push_back(kind);
  }
  std::string formats;
  for (const std::string& kind : kinds) {
    formats += (formats.empty() ? "" : ", ") + kind + (files_.size() > 1 ? fmt::format(" x{}", counts[kind]) : "");
  }
  return fmt::format("{}{}: {} file{} ({}), {} tokens", path_, from_directory_ ? " (" + pattern_ + ")" : "",
                     files_.size(), files_.size() == 1 ? "" : "s", formats, num_tokens_);
}

}  // namespace moe
