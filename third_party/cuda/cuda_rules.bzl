"""Build rules for CUDA sources.

cuda_library: each .cu is compiled by nvcc in a genrule (for sm_80 and sm_90)
and the objects become a cc_library; under --config=cuda_emu each .cu is
compiled for the CPU emulator (tools/cuda_emu/compile_cu.sh) instead. Where
CUDA is absent the library is empty and C++ callers stay behind
`#if MOE_TRAIN_HAS_CUDA`.

gpu_test: a cc_test where a GPU is present (or emulated); where only the
toolkit is, the same sources are still built (as a cc_binary) so CI catches
compile and link errors; in CPU-only builds nothing is declared.

gpu_sh_test / multi_gpu_test: an sh_test on one GPU / over several GPUs
(mpirun), declared where GPUs are present or emulated.
"""

load("@local_cuda//:defs.bzl", "EMULATED", "HAS_CUDA", "HAS_GPU", "NVCC")

CUDA_ARCH_FLAGS = [
    "-gencode arch=compute_80,code=sm_80",
    "-gencode arch=compute_90,code=sm_90",
]

def cuda_library(name, srcs, hdrs = [], cu_deps = [], deps = [], **kwargs):
    """srcs: .cu files. cu_deps: header files (or filegroups) the .cu files include."""
    objs = []
    if EMULATED:
        # The same sources, rewritten and compiled for the CPU emulator.
        for src in srcs:
            obj = "_objs_cuda_emu/{}/{}.o".format(name, src.replace(".cu", ""))
            native.genrule(
                name = "{}_{}_emu".format(name, src.replace("/", "_").replace(".", "_")),
                srcs = [src] + hdrs + cu_deps + ["//tools/cuda_emu:device_headers"],
                outs = [obj],
                tools = ["//tools/cuda_emu:compile_cu.sh"],
                cmd = "$(location //tools/cuda_emu:compile_cu.sh) $(location {}) $@ tools/cuda_emu/include -I$(GENDIR)".format(src),
                message = "cuda_emu " + src,
            )
            objs.append(obj)
    elif HAS_CUDA:
        for src in srcs:
            obj = "_objs_cuda/{}/{}.o".format(name, src.replace(".cu", ""))
            native.genrule(
                name = "{}_{}_nvcc".format(name, src.replace("/", "_").replace(".", "_")),
                srcs = [src] + hdrs + cu_deps,
                outs = [obj],
                cmd = " ".join([
                    NVCC,
                    "-std=c++17 -O3 --expt-relaxed-constexpr",
                    "-Xcompiler -fPIC -Xcompiler -Wall",
                    " ".join(CUDA_ARCH_FLAGS),
                    "-I. -I$(GENDIR)",
                    "-DMOE_TRAIN_HAS_CUDA=1",
                    "-c $(location {}) -o $@".format(src),
                ]),
                message = "nvcc " + src,
            )
            objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cuda"],
        alwayslink = True,
        **kwargs
    )

def gpu_test(name, tags = [], **kwargs):
    if not HAS_CUDA:
        return
    if HAS_GPU:
        native.cc_test(name = name, tags = tags + ["gpu"], **kwargs)
    else:
        kwargs.pop("size", None)
        kwargs.pop("timeout", None)
        kwargs["testonly"] = True  # a test in all but name: it may use testonly helpers (gpu_test_util)
        native.cc_binary(name = name, tags = tags + ["gpu"], **kwargs)

def gpu_sh_test(name, tags = [], **kwargs):
    """An sh_test that needs a GPU: declared where GPUs are present or emulated (tag gpu)."""
    if HAS_GPU:
        native.sh_test(name = name, tags = tags + ["gpu"], **kwargs)

def multi_gpu_test(name, tags = [], **kwargs):
    """An sh_test that runs ranks on several GPUs (mpirun, one GPU per rank).

    Tag multi_gpu besides gpu: the gpu config leaves it out, since one-GPU
    machines cannot run it."""
    gpu_sh_test(name = name, tags = tags + ["multi_gpu"], **kwargs)
