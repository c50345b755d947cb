#include "src/data/prepare.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>

#include "src/core/user_error.h"
#include "src/core/durable_file.h"
#include "src/data/npy_writer.h"

namespace moe {
namespace fs = std::filesystem;
namespace {

// Documents known by size up front and loaded one at a time, so that text
// files far larger than memory can be prepared.
struct DocumentSource {
  std::vector<int64_t> byte_sizes;
  std::function<std::string(size_t)> load;
  std::string description;
};

void write_tokens(std::ostream& out, const std::string& text) {
  std::vector<uint16_t> tokens(text.size() + 1);
  for (size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
  tokens.back() = kEndOfDocumentToken;
  // .npy data is little-endian, as the host is (see token_file.h).
  out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2));
}

// Writes documents [first, last) of `source` as one uint16 .npy file.
int64_t write_split(const DocumentSource& source, size_t first, size_t last, const std::string& path) {
  int64_t num_tokens = 0;
  for (size_t d = first; d < last; ++d) num_tokens += source.byte_sizes[d] + 1;
  write_file_durably(path, [&](std::ostream& out) {
    out << npy_uint16_header(num_tokens);
    for (size_t d = first; d < last; ++d) {
      const std::string text = source.load(d);
      if (static_cast<int64_t>(text.size()) != source.byte_sizes[d]) {
        throw UserError(fmt::format("prepare: document {} of {} changed size while it was read; prepare again", d,
                                    source.description));
      }
      write_tokens(out, text);
    }
  });
  return num_tokens;
}

void create_directories(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UserError(fmt::format("prepare: cannot create {} ({}); check permissions", dir, ec.message()));
}

PreparedDataset prepare(const DocumentSource& source, const std::string& out_dir, double val_fraction) {
  if (out_dir.empty()) throw UserError("prepare: the output directory is empty; name a directory to write to");
  if (!(val_fraction >= 0 && val_fraction < 1)) {
    throw UserError(fmt::format("prepare: val_fraction = {} must be in [0, 1); pick e.g. 0.02", val_fraction));
  }
  if (source.byte_sizes.empty()) throw UserError("prepare: no documents to prepare from " + source.description);
  std::vector<int64_t> document_tokens;
  for (int64_t bytes : source.byte_sizes) document_tokens.push_back(bytes + 1);
  const size_t num_docs = document_tokens.size();
  const size_t split = num_docs - static_cast<size_t>(count_val_documents(document_tokens, val_fraction));

  create_directories(out_dir + "/train");
  create_directories(out_dir + "/val");
  PreparedDataset result;
  result.dir = out_dir;
  result.train_documents = static_cast<int64_t>(split);
  result.val_documents = static_cast<int64_t>(num_docs - split);
  result.train_tokens = write_split(source, 0, split, out_dir + "/train/tokens.npy");
  result.val_tokens = write_split(source, split, num_docs, out_dir + "/val/tokens.npy");
  write_file_durably(out_dir + "/README.txt", [&](std::ostream& out) {
    out << "Byte-level token dataset written by moe_train.\n"
        << "Source: " << source.description << "\n"
        << "Tokens: ids 0..255 are the bytes of the text, " << kEndOfDocumentToken
        << " ends each document; vocabulary size " << kByteVocabSize << " (set model.vocab_size >= " << kByteVocabSize
        << ").\n"
        << "train/tokens.npy: " << result.train_documents << " documents, " << result.train_tokens << " tokens\n"
        << "val/tokens.npy:   " << result.val_documents << " documents, " << result.val_tokens
        << " tokens (the last documents, about " << val_fraction << " of all tokens)\n"
        << "Both are uint16 NumPy .npy files (format 1.0), one flat array each.\n";
  });
  return result;
}

}  // namespace

int64_t count_val_documents(const std::vector<int64_t>& document_tokens, double val_fraction) {
  const auto n = static_cast<int64_t>(document_tokens.size());
  if (n < 2 || val_fraction <= 0) return 0;
  double total = 0;
  for (int64_t t : document_tokens) total += static_cast<double>(t);
  const double target = val_fraction * total;
  // Grow the split from the end while that brings it closer to the target;
  // keep at least one document on each side.
  int64_t best = 1;
  double best_error = std::numeric_limits<double>::infinity();
  double taken = 0;
  for (int64_t k = 1; k < n; ++k) {
    taken += static_cast<double>(document_tokens[n - k]);
    const double error = std::fabs(taken - target);
    if (error < best_error) {
      best = k;
      best_error = error;
    }
    if (taken >= target) break;
  }
  return best;
}

std::string read_text_file(const std::string& path, const std::string& who, const std::string& fix) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(who + ": cannot read " + path + "; " + fix);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

PreparedDataset prepare_text_dataset(const std::vector<std::string>& input_files, const std::string& out_dir,
                                     double val_fraction) {
  if (input_files.empty()) throw UserError("prepare: no input files; give one or more text files, one document each");
  DocumentSource source;
  for (const std::string& path : input_files) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec || !fs::is_regular_file(path)) {
      throw UserError("prepare: cannot read " + path + " (" + (ec ? ec.message() : "not a regular file") +
                      "); give text files, one document each");
    }
    source.byte_sizes.push_back(static_cast<int64_t>(size));
  }
  source.load = [&input_files](size_t d) {
    return read_text_file(input_files[d], "prepare", "check that the file exists and is readable");
  };
  source.description = input_files.size() == 1 ? input_files.front()
                                               : fmt::format("{} text files ({} ... {})", input_files.size(),
                                                             input_files.front(), input_files.back());
  return prepare(source, out_dir, val_fraction);
}

PreparedDataset prepare_documents_dataset(const std::vector<std::string>& documents, const std::string& out_dir,
                                          double val_fraction, const std::string& source_description) {
  DocumentSource source;
  for (const std::string& doc : documents) source.byte_sizes.push_back(static_cast<int64_t>(doc.size()));
  source.load = [&documents](size_t d) { return documents[d]; };
  source.description = source_description;
  return prepare(source, out_dir, val_fraction);
}

}  // namespace moe
