#include "src/model/moe/moe_step_counters.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace moe {

MoEStepCounters::MoEStepCounters(TensorPool& pool, int64_t layers, int64_t E) : layers_(layers), E_(E) {
  const int64_t words = layers * (2 * E + 3);
  buffer_ = pool.alloc({words > 0 ? words : 1}, DType::kI32);
  host_.assign(static_cast<size_t>(buffer_.numel()), 0);
}

MoEStepCounters::Counters MoEStepCounters::claim() {
  if (claimed_ >= layers_) {
    throw std::logic_error("MoEStepCounters: room for " + std::to_string(layers_) +
                           " MoE layers, a layer more claimed");
  }
  Counters c;
  c.index = claimed_++;
  const Tensor flat = buffer_.reshaped({buffer_.numel()});
  c.routed_E = flat.rows(word(c.index, 0), E_);
  c.kept_E = flat.rows(word(c.index, E_), E_);
  // Three f32 words among the i32 ones: the same 4-byte cells, read as floats.
  c.aux_3 = flat.rows(word(c.index, 2 * E_), 3);
  c.aux_3.dtype = DType::kF32;
  return c;
}

void MoEStepCounters::zero() { moe::zero(buffer_); }

void MoEStepCounters::download() { moe::download(host_.data(), buffer_); }

std::vector<int64_t> MoEStepCounters::routed(int64_t index) const {
  const auto first = host_.begin() + word(index, 0);
  return {first, first + E_};
}

std::vector<int64_t> MoEStepCounters::kept(int64_t index) const {
  const auto first = host_.begin() + word(index, E_);
  return {first, first + E_};
}

float MoEStepCounters::aux(int64_t index, int which) const {
  float value = 0;
  std::memcpy(&value, &host_[static_cast<size_t>(word(index, 2 * E_ + which))], sizeof(float));
  return value;
}

}  // namespace moe
