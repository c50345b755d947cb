// Where moe_train keeps what it can remake (the built-in corpus, passed GPU
// checks): $MOE_TRAIN_CACHE, else $XDG_CACHE_HOME/moe_train, else
// ~/.cache/moe_train, else .moe_train_cache in the working folder.
#pragma once

#include <string>

namespace moe {

std::string cache_dir();

// <cache_dir>/<folder>/<16 hex digits>.txt, the digits a hash (FNV-1a) of
// `identity`: one file per set of conditions (a machine, a GPU and driver).
std::string cache_file_for(const std::string& folder, const std::string& identity);

}  // namespace moe
