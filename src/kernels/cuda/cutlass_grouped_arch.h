// The CUTLASS expert GEMMs of each GPU generation, each in its own translation
// unit compiled for that generation alone; cutlass_grouped_gemm.cc sends each
// call to the one for the current device. The operations are those of
// cutlass_grouped_gemm.h.
#pragma once

#include <cstdint>

#include "src/core/tensor.h"

namespace moe::cuda::cutlass_grouped {

class ArchGemms {
 public:
  virtual ~ArchGemms() = default;
  virtual void prepare(int64_t E, int64_t I, int64_t O) = 0;
  virtual void forward(const Tensor& out_MO, const Tensor& x_MI, const Tensor& w_EIO, const Tensor& offsets_E1) = 0;
  virtual void backward(const Tensor& dx_MI, const Tensor& dw_EIO, const Tensor& dout_MO, const Tensor& x_MI,
                        const Tensor& w_EIO, const Tensor& offsets_E1) = 0;
};

// sm_80 (A100; its code also runs on sm_86 and sm_89): cp.async multistage
// pipelines and mma.sync tensor cores (cutlass_grouped_gemm_sm80.cu).
ArchGemms& sm80_gemms();
// sm_90a (H100, H200): TMA loads, wgmma tensor cores, a warp-specialised
// persistent kernel (cutlass_grouped_gemm_sm90.cu).
ArchGemms& sm90_gemms();

}  // namespace moe::cuda::cutlass_grouped
