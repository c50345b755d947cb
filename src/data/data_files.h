// Finding the files of a dataset: `dataset_path` is a token file, a Megatron
// pair (X.bin, X.idx, or the prefix X), or a directory whose files matching
// `file_pattern` (fnmatch, hidden files excluded) are read in name order.
#pragma once

#include <string>
#include <vector>

namespace moe {

struct DataFileSpec {
  std::string path;               // the file holding the tokens
  std::string megatron_idx_path;  // its Megatron index; empty for every other format
};

// `config_section` ("data" or "eval") names the keys in error messages.
// Problems (nothing there, nothing matching, a Megatron .bin without its
// .idx) are UserErrors.
std::vector<DataFileSpec> find_data_files(const std::string& dataset_path, const std::string& file_pattern,
                                          const std::string& config_section);

}  // namespace moe
