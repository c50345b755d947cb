// Where moe_train keeps what it can remake (the built-in corpus, passed GPU
// checks): $MOE_TRAIN_CACHE, else $XDG_CACHE_HOME/moe_train, else
// ~/.cache/moe_train, else .moe_train_cache in the working folder.
#pragma once

#include <string>

namespace moe {

std::string cache_dir();

}  // namespace moe
