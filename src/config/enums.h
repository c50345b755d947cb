// The config keys whose values come from a fixed set: one enum each, its
// names listed once beside it (choice.h). JobConfig holds them as Choice<E>;
// schema.cc lists the allowed values from here. Keys open to additions
// (model.moe_router: a table of routers) stay strings.
#pragma once

#include "src/config/choice.h"

namespace moe {

// model.model_type
enum class ModelType { kTransformer };
template <>
struct ChoiceNames<ModelType> {
  static constexpr ChoiceName<ModelType> kAll[] = {{ModelType::kTransformer, "transformer"}};
};

// model.norm_type
enum class NormType { kRmsNorm, kLayerNorm };
template <>
struct ChoiceNames<NormType> {
  static constexpr ChoiceName<NormType> kAll[] = {{NormType::kRmsNorm, "rmsnorm"}, {NormType::kLayerNorm, "layernorm"}};
};

// model.activation: the FFN's gate (silu: SwiGLU).
enum class Activation { kSilu, kGelu, kRelu };
template <>
struct ChoiceNames<Activation> {
  static constexpr ChoiceName<Activation> kAll[] = {
      {Activation::kSilu, "silu"}, {Activation::kGelu, "gelu"}, {Activation::kRelu, "relu"}};
};

// model.moe_bias_schedule: how the router-bias update rate moves over the run.
enum class BiasSchedule { kConstant, kCosineDecay, kLinearWarmup };
template <>
struct ChoiceNames<BiasSchedule> {
  static constexpr ChoiceName<BiasSchedule> kAll[] = {{BiasSchedule::kConstant, "constant"},
                                                      {BiasSchedule::kCosineDecay, "cosine_decay"},
                                                      {BiasSchedule::kLinearWarmup, "linear_warmup"}};
};

// train.mixed_precision
enum class Precision { kFp32, kBf16, kFp8 };
template <>
struct ChoiceNames<Precision> {
  static constexpr ChoiceName<Precision> kAll[] = {
      {Precision::kFp32, "fp32"}, {Precision::kBf16, "bf16"}, {Precision::kFp8, "fp8"}};
};

// train.activation_checkpointing
enum class ActivationCheckpointing { kNone, kFull, kSelective };
template <>
struct ChoiceNames<ActivationCheckpointing> {
  static constexpr ChoiceName<ActivationCheckpointing> kAll[] = {{ActivationCheckpointing::kNone, "none"},
                                                                 {ActivationCheckpointing::kFull, "full"},
                                                                 {ActivationCheckpointing::kSelective, "selective"}};
};

// train.device: where a run computes; kAuto resolves to one of the others
// before training (a GPU where one is visible). Not core's Device, which
// says where a tensor lives and has no "auto".
enum class TrainDevice { kAuto, kCpu, kCuda };
template <>
struct ChoiceNames<TrainDevice> {
  static constexpr ChoiceName<TrainDevice> kAll[] = {
      {TrainDevice::kAuto, "auto"}, {TrainDevice::kCpu, "cpu"}, {TrainDevice::kCuda, "cuda"}};
};

// train.nan_policy: what a non-finite loss or gradient norm does.
enum class NanPolicy { kSkip, kAbort };
template <>
struct ChoiceNames<NanPolicy> {
  static constexpr ChoiceName<NanPolicy> kAll[] = {{NanPolicy::kSkip, "skip"}, {NanPolicy::kAbort, "abort"}};
};

// train.kernels: kAuto takes a vendor library's kernel where one applies;
// kBuiltin forces the project's own everywhere (src/kernels/kernel_choice.h).
enum class TrainKernels { kAuto, kBuiltin };
template <>
struct ChoiceNames<TrainKernels> {
  static constexpr ChoiceName<TrainKernels> kAll[] = {{TrainKernels::kAuto, "auto"},
                                                      {TrainKernels::kBuiltin, "builtin"}};
};

// optimizer.name
enum class OptimizerType { kAdamW };
template <>
struct ChoiceNames<OptimizerType> {
  static constexpr ChoiceName<OptimizerType> kAll[] = {{OptimizerType::kAdamW, "adamw"}};
};

// scheduler.name: the learning rate's shape after warm-up.
enum class LrSchedule { kCosine, kLinear, kWsd, kConstant };
template <>
struct ChoiceNames<LrSchedule> {
  static constexpr ChoiceName<LrSchedule> kAll[] = {{LrSchedule::kCosine, "cosine"},
                                                    {LrSchedule::kLinear, "linear"},
                                                    {LrSchedule::kWsd, "wsd"},
                                                    {LrSchedule::kConstant, "constant"}};
};

// checkpoint.resume: kAuto continues from <dir>/latest when it exists.
enum class ResumePolicy { kAuto, kNever };
template <>
struct ChoiceNames<ResumePolicy> {
  static constexpr ChoiceName<ResumePolicy> kAll[] = {{ResumePolicy::kAuto, "auto"}, {ResumePolicy::kNever, "never"}};
};

}  // namespace moe
