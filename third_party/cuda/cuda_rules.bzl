"""Build rules for CUDA sources.

cuda_library: each .cu is compiled by nvcc in a genrule (for sm_80 and sm_90,
plus PTX for sm_90) and the objects become a cc_library, with the table of
what each kernel uses per block; under --config=cuda_emu each .cu is
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

# The architectures the device code is built for: A100 and H100/H200. The
# newest also goes in as PTX, which the driver compiles for newer GPUs.
CUDA_ARCHS = "80 90"

NVCC_FLAGS = " ".join([
    "-std=c++17 -O3 --expt-relaxed-constexpr",
    "-Xcompiler -fPIC -Xcompiler -Wall",
    "-I. -I$(GENDIR)",
    "-DMOE_TRAIN_HAS_CUDA=1",
])

def _nvcc_genrule(name, src, obj, table, srcs):
    """nvcc compiles `src` into `obj` ("-": none) and records its kernels' resources in `table`."""
    native.genrule(
        name = name,
        srcs = srcs,
        outs = [table] + ([obj] if obj != "-" else []),
        tools = ["//third_party/cuda:nvcc_compile.sh"],
        cmd = "$(location //third_party/cuda:nvcc_compile.sh) {nvcc} $(location {src}) {obj} $(location {table}) '{archs}' {flags}".format(
            nvcc = NVCC,
            src = src,
            obj = "$(location {})".format(obj) if obj != "-" else "-",
            table = table,
            archs = CUDA_ARCHS,
            flags = NVCC_FLAGS,
        ),
        message = "nvcc " + src,
    )

def cuda_library(name, srcs, hdrs = [], cu_deps = [], deps = [], cpu_only_srcs = [], **kwargs):
    """srcs: .cu files. cu_deps: header files (or filegroups) the .cu files include.
    cpu_only_srcs: C++ files compiled instead of srcs where there is no CUDA
    (neither a toolkit nor the emulator): the backend's stub.

    Besides the objects, the library holds the launch-resource table of its
    kernels (registers and static shared memory per architecture, from ptxas),
    registered with src/kernels/cuda/launch_limits.h at start-up. Under the
    emulator the table still comes from nvcc where it is installed (device code
    only); without nvcc there is no table, and the emulator checks launches
    without it."""
    objs = []
    tables = []
    for src in srcs:
        stem = src.replace(".cu", "")
        rule = "{}_{}".format(name, src.replace("/", "_").replace(".", "_"))
        table = "_launch_resources/{}/{}.tsv".format(name, stem)
        if EMULATED:
            # The same sources, rewritten and compiled for the CPU emulator.
            obj = "_objs_cuda_emu/{}/{}.o".format(name, stem)
            native.genrule(
                name = rule + "_emu",
                srcs = [src] + hdrs + cu_deps + ["//tools/cuda_emu:device_headers"],
                outs = [obj],
                tools = ["//tools/cuda_emu:compile_cu.sh"],
                cmd = "$(location //tools/cuda_emu:compile_cu.sh) $(location {}) $@ tools/cuda_emu/include -I$(GENDIR)".format(src),
                message = "cuda_emu " + src,
            )
            objs.append(obj)
            if NVCC:
                _nvcc_genrule(rule + "_resources", src, "-", table, [src] + hdrs + cu_deps)
                tables.append(table)
        elif HAS_CUDA:
            obj = "_objs_cuda/{}/{}.o".format(name, stem)
            _nvcc_genrule(rule + "_nvcc", src, obj, table, [src] + hdrs + cu_deps)
            objs.append(obj)
            tables.append(table)
    extra_srcs = [] if (EMULATED or HAS_CUDA) else list(cpu_only_srcs)
    if tables:
        registration = "_launch_resources/{}_launch_resources.cc".format(name)
        native.genrule(
            name = name + "_launch_resources",
            srcs = tables,
            outs = [registration],
            tools = ["//third_party/cuda:embed_launch_resources.sh"],
            cmd = "$(location //third_party/cuda:embed_launch_resources.sh) $@ $(SRCS)",
        )
        extra_srcs.append(registration)
    native.cc_library(
        name = name,
        srcs = objs + extra_srcs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cuda"] + (["//src/kernels/cuda:launch_limits"] if tables else []),
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
        kwargs.pop("env", None)
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
