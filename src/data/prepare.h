// Turning text into a token dataset with the byte-level tokenizer: ids 0..255
// are the bytes of the text, 256 ends a document, so the vocabulary is 257.
//
// Output layout (out_dir):
//   train/tokens.npy   uint16 .npy (format 1.0), the documents before the split
//   val/tokens.npy     the last documents, about val_fraction of all tokens
//                      (at least one document when there are two or more;
//                      empty when val_fraction = 0 or there is one document)
//   README.txt         what this is and where it came from
// Each file is written atomically (temporary name, then rename).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

inline constexpr int64_t kByteVocabSize = 257;
inline constexpr int32_t kEndOfDocumentToken = 256;

struct PreparedDataset {
  std::string dir;  // out_dir: the dataset root, holding train/ and val/
  int64_t train_documents = 0, train_tokens = 0;
  int64_t val_documents = 0, val_tokens = 0;
};

// Each input file is one document. Unreadable files, no files, or a
// val_fraction outside [0, 1) are UserErrors.
PreparedDataset prepare_text_dataset(const std::vector<std::string>& input_files, const std::string& out_dir,
                                     double val_fraction);

// The same from documents already in memory; `source` is a line for README.txt.
PreparedDataset prepare_documents_dataset(const std::vector<std::string>& documents, const std::string& out_dir,
                                          double val_fraction, const std::string& source);

// How many of the last documents form the val split (rule above), given each
// document's token count.
// The whole file as bytes; a UserError "<who>: cannot read PATH; <fix>" when it cannot be opened.
std::string read_text_file(const std::string& path, const std::string& who, const std::string& fix);

int64_t count_val_documents(const std::vector<int64_t>& document_tokens, double val_fraction);

}  // namespace moe
