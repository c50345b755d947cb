// Export to Hugging Face: model.safetensors + config.json in the architecture
// that represents the model exactly (hf_format.h says which, and how every
// tensor is named and laid out).
#pragma once

#include <string>

#include "src/config/job_config.h"
#include "src/model/params.h"
#include "src/interop/hf_format.h"

namespace moe {

// Writes dir/model.safetensors and dir/config.json (the folder is created).
// `params` holds the whole model (one rank's ParamStore without a layout).
void export_hf(const ModelConfig& m, const ParamStore& params, const std::string& dir);

}  // namespace moe
