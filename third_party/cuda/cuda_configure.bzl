"""Finds the CUDA toolkit (cudart, cuBLAS/cuBLASLt, NCCL, nvcc) and writes the
@local_cuda repository that the build uses.

Where it looks: $CUDA_HOME, else the toolkit of the `nvcc` on PATH, else
/usr/local/cuda. `--config=cpu` (in .bazelrc)
sets MOE_TRAIN_CUDA=0, which makes the repository CPU-only even where a toolkit
exists. `--config=cuda_emu` sets MOE_TRAIN_CUDA=emulate: the CUDA code is
built for the CPU emulator in tools/cuda_emu (no toolkit needed) and the GPU
tests run on it. The generated defs.bzl tells BUILD files what was found:
  HAS_CUDA  CUDA code is compiled and linked (toolkit found, or emulated)
  HAS_GPU   `nvidia-smi -L` lists a GPU (or emulated): GPU tests are run, not only built
  EMULATED  the "GPU" is tools/cuda_emu: .cu files go through its compile_cu.sh
  HAS_CUDNN the toolkit folder holds cuDNN 9's headers (include/cudnn.h): the
            cuDNN attention path is built (its library is opened at run time)
  CUDA_LIBDIR  the toolkit's library folder (the last place the CUDA
            libraries opened at run time are looked for)
  NVCC      absolute path of nvcc (also under the emulator, where it records
            the kernels' launch resources; empty where there is none)
"""

def _has_gpu(rctx):
    smi = rctx.which("nvidia-smi")
    if not smi:
        return False
    res = rctx.execute([smi, "-L"], timeout = 20)
    return res.return_code == 0 and "GPU" in res.stdout

def _toolkit_path(rctx):
    if rctx.os.environ.get("CUDA_HOME", ""):
        return rctx.os.environ["CUDA_HOME"]
    nvcc = rctx.which("nvcc")
    if nvcc:
        return str(nvcc.realpath.dirname.dirname)
    return "/usr/local/cuda"

def _cuda_configure_impl(rctx):
    cuda_path = _toolkit_path(rctx)
    mode = rctx.os.environ.get("MOE_TRAIN_CUDA", "1")
    nvcc = cuda_path + "/bin/nvcc"
    nvcc_found = rctx.path(nvcc).exists
    if mode == "emulate":
        rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

# The CUDA emulator stands in for cudart, cuBLASLt and NCCL (--config=cuda_emu).
alias(
    name = "cuda",
    actual = "@//tools/cuda_emu:cuda_emu",
)
""")
        # nvcc, where installed, still records each kernel's registers and
        # shared memory, which the emulator checks every launch against.
        rctx.file("defs.bzl", "HAS_CUDA = True\nHAS_GPU = True\nEMULATED = True\nHAS_CUDNN = False\nNVCC = \"{}\"\nCUDA_LIBDIR = \"\"\n".format(
            nvcc if nvcc_found else "",
        ))
        return
    wanted = mode != "0"
    needed = ["bin/nvcc", "include/cuda_runtime.h", "include/cublasLt.h", "include/nccl.h"]
    found = wanted and all([rctx.path(cuda_path + "/" + f).exists for f in needed])

    if found:
        rctx.symlink(cuda_path + "/include", "include")
        libdir = cuda_path + "/lib64"
        rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

# The CUDA toolkit at {path}. cudart is linked statically (it opens the
# driver itself); cuBLASLt and NCCL are opened at run time by
# third_party/cuda/cuda_libraries.cc, so the binary starts without them. The
# define lets C++ code that must also build without CUDA say `#if MOE_TRAIN_HAS_CUDA`.
cc_library(
    name = "headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
    defines = ["MOE_TRAIN_HAS_CUDA=1"],
)

cc_library(
    name = "cuda",
    deps = [
        ":headers",
        "@//third_party/cuda:cuda_libraries",
    ],
    linkopts = [
        "-L{lib}",
        "-lcudart_static",
        "-ldl",
        "-lrt",
        "-lpthread",
    ],
)
""".format(path = cuda_path, lib = libdir))
    else:
        rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

# No CUDA toolkit found (or --config=cpu): CPU-only build.
cc_library(
    name = "cuda",
    defines = ["MOE_TRAIN_HAS_CUDA=0"],
)
""")

    rctx.file("defs.bzl", "HAS_CUDA = {}\nHAS_GPU = {}\nEMULATED = False\nHAS_CUDNN = {}\nNVCC = \"{}\"\nCUDA_LIBDIR = \"{}\"\n".format(
        found,
        found and _has_gpu(rctx),
        found and rctx.path(cuda_path + "/include/cudnn.h").exists,
        cuda_path + "/bin/nvcc" if found else "",
        cuda_path + "/lib64" if found else "",
    ))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["CUDA_HOME", "MOE_TRAIN_CUDA", "PATH"],
    local = True,
)
