"""Finds the CUDA toolkit (cudart, cuBLAS/cuBLASLt, NCCL, nvcc) and writes the
@local_cuda repository that the build uses.

Where it looks: $CUDA_HOME, else /usr/local/cuda. `--config=cpu` (in .bazelrc)
sets MOE_TRAIN_CUDA=0, which makes the repository CPU-only even where a toolkit
exists. The generated defs.bzl tells BUILD files what was found:
  HAS_CUDA  toolkit with nvcc, cuBLAS and NCCL present: CUDA code is compiled and linked
  HAS_GPU   `nvidia-smi -L` lists a GPU: GPU tests are run, not only built
  NVCC      absolute path of nvcc
"""

def _has_gpu(rctx):
    smi = rctx.which("nvidia-smi")
    if not smi:
        return False
    res = rctx.execute([smi, "-L"], timeout = 20)
    return res.return_code == 0 and "GPU" in res.stdout

def _cuda_configure_impl(rctx):
    cuda_path = rctx.os.environ.get("CUDA_HOME", "") or "/usr/local/cuda"
    wanted = rctx.os.environ.get("MOE_TRAIN_CUDA", "1") != "0"
    needed = ["bin/nvcc", "include/cuda_runtime.h", "include/cublasLt.h", "include/nccl.h"]
    found = wanted and all([rctx.path(cuda_path + "/" + f).exists for f in needed])

    if found:
        rctx.symlink(cuda_path + "/include", "include")
        libdir = cuda_path + "/lib64"
        rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

# cudart, cuBLAS, cuBLASLt and NCCL from {path}. The define lets C++ code that
# must also build without CUDA say `#if MOE_TRAIN_HAS_CUDA`.
cc_library(
    name = "cuda",
    hdrs = glob(["include/**"]),
    includes = ["include"],
    defines = ["MOE_TRAIN_HAS_CUDA=1"],
    linkopts = [
        "-L{lib}",
        "-Wl,-rpath,{lib}",
        "-lcudart",
        "-lcublasLt",
        "-lcublas",
        "-lnccl",
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

    rctx.file("defs.bzl", "HAS_CUDA = {}\nHAS_GPU = {}\nNVCC = \"{}\"\n".format(
        found,
        found and _has_gpu(rctx),
        cuda_path + "/bin/nvcc" if found else "",
    ))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["CUDA_HOME", "MOE_TRAIN_CUDA", "PATH"],
    local = True,
)
