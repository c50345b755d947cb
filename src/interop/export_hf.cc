#include "src/interop/export_hf.h"

#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "src/core/user_error.h"
#include "src/checkpoint/safetensors.h"

namespace moe {
namespace {

// A [rows, cols] row-major matrix (or slice of a packed tensor) transposed: HF
// linears are [out, in], our packed experts [in, out].
std::vector<float> transposed(const float* src, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(c * rows + r)] = src[r * cols + c];
  }
  return out;
}

}  // namespace

void export_hf(const ModelConfig& m, const ParamStore& params, const std::string& dir) {
  using S = HfTensor::Source;
  hf_architecture(m);  // refuses what no architecture represents, before anything is written
  if (m.moe_router == "noisy_topk") {
    spdlog::info(
        "--export-hf: noisy_topk's noise gates are training-only and not exported; the export routes "
        "as this model evaluates (softmax top-k of the gate's logits)");
  }
  std::vector<SafetensorsEntry> tensors;
  for (const HfTensor& t : hf_tensors(m)) {
    if (t.source == S::kZero || t.source == S::kUnused) {
      tensors.push_back({t.name, t.shape, std::vector<float>(static_cast<size_t>(numel_of(t.shape)))});
      continue;
    }
    const Param& p = params[t.param];
    const float* v = p.value.f32();
    if (t.source == S::kParam) {
      tensors.push_back({t.name, t.shape, std::vector<float>(v, v + p.value.numel())});
    } else {  // expert e of [E, a, b], written as [b, a]
      const int64_t a = p.spec.shape[1], b = p.spec.shape[2];
      tensors.push_back({t.name, t.shape, transposed(v + t.expert * a * b, a, b)});
    }
  }

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw UserError("--export-hf " + dir + ": cannot create the folder (" + ec.message() + ")");
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  write_file_durably(dir + "/config.json", hf_config(m).dump(2) + "\n");
}

}  // namespace moe
