// Import from Hugging Face: the inverse of export_hf, to start training from
// a Mixtral, Llama or Qwen2-MoE checkpoint of the model's shape. Reads
// DIR/config.json and DIR/model.safetensors, or the shards that
// DIR/model.safetensors.index.json lists (its weight_map); tensors may be
// F32, BF16 or F16 (converted to fp32).
//
// Checked before any parameter changes: config.json against the model
// (hf_config_check.h); every tensor the architecture needs present, with its
// shape and a readable dtype; no tensor that looks like part of the model but
// maps to nothing (a deeper model, more experts); the tensors without a
// counterpart here all zero (hf_format.h). Rotary inv_freq buffers are
// skipped; other foreign tensors are skipped with a warning. Each failure is
// one UserError naming the file and the tensor.
//
// Every rank reads the whole tensors it needs (only its own experts of the
// packed ones) and keeps its piece under the layout, so any layout works.
#pragma once

#include <string>

#include "src/config/job_config.h"
#include "src/model/params.h"

namespace moe {

void import_hf(const ModelConfig& m, const std::string& dir, ParamStore& params);

}  // namespace moe
