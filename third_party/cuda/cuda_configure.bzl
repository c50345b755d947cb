"""Finds the CUDA toolkit (cudart, cuBLAS/cuBLASLt, NCCL, nvcc) and writes the
@local_cuda repository that the build uses.

Where it looks: $CUDA_HOME, else the toolkit of the `nvcc` on PATH, else
/usr/local/cuda. NCCL's and cuDNN's headers: $NCCL_HOME / $CUDNN_HOME, else
the toolkit folder, else NVIDIA's pip wheels in $VIRTUAL_ENV or $CONDA_PREFIX,
else /usr. A toolkit without NCCL fails in one line; without cuDNN, attention
uses the project's kernel. What was found, from where: found.txt
(`bazel run //third_party:found`). `--config=cpu` (in .bazelrc)
sets MOE_TRAIN_CUDA=0, which makes the repository CPU-only even where a toolkit
exists. `--config=cuda_emu` sets MOE_TRAIN_CUDA=emulate: the CUDA code is
built for the CPU emulator in tools/cuda_emu (no toolkit needed) and the GPU
tests run on it. The generated defs.bzl tells BUILD files what was found:
  HAS_CUDA  CUDA code is compiled and linked (toolkit found, or emulated)
  HAS_GPU   `nvidia-smi -L` lists a GPU (or emulated): GPU tests are run, not only built
  EMULATED  the "GPU" is tools/cuda_emu: .cu files go through its compile_cu.sh
  HAS_CUDNN the toolkit folder holds cuDNN 9's headers (include/cudnn.h): the
            cuDNN attention path is built (its library is opened at run time)
  CUDA_VERSION  nvcc's release ("13.0"; empty without a toolkit)
  CUDA_LIBDIR  the toolkit's library folder (tests hide it; the binary does
            not record it: it finds the libraries at run time)
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
    """(folder, how it was found)."""
    if rctx.os.environ.get("CUDA_HOME", ""):
        return rctx.os.environ["CUDA_HOME"], "$CUDA_HOME"
    nvcc = rctx.which("nvcc")
    if nvcc:
        return str(nvcc.realpath.dirname.dirname), "nvcc on PATH"
    return "/usr/local/cuda", "/usr/local/cuda"

def _wheel_folders(rctx, package):
    """<site-packages>/nvidia/<package> of the Python environments named by
    VIRTUAL_ENV and CONDA_PREFIX: where NVIDIA's pip wheels put a library."""
    out = []
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"]:
        root = rctx.os.environ.get(var, "")
        if not root or not rctx.path(root + "/lib").exists:
            continue
        for entry in rctx.path(root + "/lib").readdir():
            if entry.basename.startswith("python"):
                out.append(("${} (pip wheel)".format(var), str(entry) + "/site-packages/nvidia/" + package))
    return out

def _find_headers(rctx, name, header, variable, cuda_path):
    """(include folder, lib folder, where) of the first of $<variable>, the
    toolkit, the pip wheel layout and /usr that holds include/<header>;
    (None, None, places tried) when none does."""
    places = []
    if rctx.os.environ.get(variable, ""):
        places.append(("$" + variable, rctx.os.environ[variable]))
    places.append(("the CUDA toolkit", cuda_path))
    places += _wheel_folders(rctx, name)
    places.append(("/usr", "/usr"))
    tried = []
    for where, prefix in places:
        tried.append(prefix)
        if rctx.path(prefix + "/include/" + header).exists:
            for lib in ["/lib64", "/lib", "/lib/x86_64-linux-gnu"]:
                if rctx.path(prefix + lib).exists:
                    return prefix + "/include", prefix + lib, "{} ({})".format(where, prefix)
            return prefix + "/include", "", "{} ({})".format(where, prefix)
    return None, None, ", ".join(tried)

def _cuda_configure_impl(rctx):
    cuda_path, cuda_where = _toolkit_path(rctx)
    mode = rctx.os.environ.get("MOE_TRAIN_CUDA", "1")
    nvcc = cuda_path + "/bin/nvcc"
    nvcc_found = rctx.path(nvcc).exists
    if mode == "emulate":
        rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

exports_files(["found.txt"])

# The CUDA emulator stands in for cudart, cuBLASLt and NCCL (--config=cuda_emu).
alias(
    name = "cuda",
    actual = "@//tools/cuda_emu:cuda_emu",
)
""")
        rctx.file("found.txt", "cuda: the CPU emulator (tools/cuda_emu); nvcc for launch resources: {}\n".format(nvcc if nvcc_found else "none"))

        # nvcc, where installed, still records each kernel's registers and
        # shared memory, which the emulator checks every launch against.
        rctx.file("defs.bzl", "HAS_CUDA = True\nHAS_GPU = True\nEMULATED = True\nHAS_CUDNN = False\nNVCC = \"{}\"\nCUDA_VERSION = \"\"\nCUDA_LIBDIR = \"\"\n".format(
            nvcc if nvcc_found else "",
        ))
        return

    needed = ["bin/nvcc", "include/cuda_runtime.h", "include/cublasLt.h"]
    toolkit = mode != "0" and all([rctx.path(cuda_path + "/" + f).exists for f in needed])
    if not toolkit:
        why = "--config=cpu" if mode == "0" else "no CUDA toolkit at {} ({}: needs {}); set CUDA_HOME to build the GPU path".format(
            cuda_path,
            cuda_where,
            ", ".join(needed),
        )
        rctx.file("found.txt", "cuda: none, CPU-only build ({})\n".format(why))
        rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

exports_files(["found.txt"])

# No CUDA toolkit found (or --config=cpu): CPU-only build.
cc_library(
    name = "cuda",
    defines = ["MOE_TRAIN_HAS_CUDA=0"],
)
""")
        rctx.file("defs.bzl", "HAS_CUDA = False\nHAS_GPU = False\nEMULATED = False\nHAS_CUDNN = False\nNVCC = \"\"\nCUDA_VERSION = \"\"\nCUDA_LIBDIR = \"\"\n")
        return

    # A toolkit without NCCL is a configuration mistake, not a CPU build: say so.
    nccl_inc, nccl_lib, nccl_where = _find_headers(rctx, "nccl", "nccl.h", "NCCL_HOME", cuda_path)
    if nccl_inc == None:
        fail("NCCL not found (looked in {}): set NCCL_HOME to the folder that holds include/nccl.h (a prefix, or a pip wheel's nvidia/nccl), or build CPU-only with --config=cpu".format(nccl_where))

    # cuDNN is optional: without it attention runs the project's own kernel.
    cudnn_inc, cudnn_lib, cudnn_where = _find_headers(rctx, "cudnn", "cudnn.h", "CUDNN_HOME", cuda_path)

    version = rctx.execute([nvcc, "--version"], timeout = 60).stdout
    release = version.split("release ")[1].split(",")[0] if "release " in version else "unknown"

    rctx.symlink(cuda_path + "/include", "include")
    includes = ["include"]
    if nccl_inc != cuda_path + "/include":
        rctx.symlink(nccl_inc, "nccl/include")
        includes.append("nccl/include")
    if cudnn_inc != None and cudnn_inc != cuda_path + "/include":
        rctx.symlink(cudnn_inc, "cudnn/include")
        includes.append("cudnn/include")

    # cudart: the static library where the toolkit has one (it opens the
    # driver itself, so the binary starts on machines without CUDA); else the
    # shared one, found at run time through the loader's path.
    libdir = cuda_path + "/lib64"
    if not rctx.path(libdir).exists:
        libdir = cuda_path + "/lib"
    static_cudart = rctx.path(libdir + "/libcudart_static.a").exists
    cudart = ["-lcudart_static", "-ldl", "-lrt", "-lpthread"] if static_cudart else ["-lcudart", "-ldl", "-lpthread"]

    rctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

exports_files(["found.txt"])

# The CUDA toolkit at {path}. cuBLASLt, NCCL and cuDNN are opened at run time
# by third_party/cuda/cuda_libraries.cc, so the binary starts without them. The
# define lets C++ code that must also build without CUDA say `#if MOE_TRAIN_HAS_CUDA`.
cc_library(
    name = "headers",
    hdrs = glob(["include/**", "nccl/include/**", "cudnn/include/**"], allow_empty = True),
    includes = {includes},
    defines = ["MOE_TRAIN_HAS_CUDA=1"],
)

cc_library(
    name = "cuda",
    deps = [
        ":headers",
        "@//third_party/cuda:cuda_libraries",
    ],
    linkopts = ["-L{lib}"] + {cudart},
)
""".format(path = cuda_path, lib = libdir, includes = str(includes), cudart = str(cudart)))

    lines = [
        "cuda: CUDA {} from {} ({}) | cudart {}".format(release, cuda_where, cuda_path, "static" if static_cudart else "shared (libcudart.so through the loader's path)"),
        "nccl: headers from {} | library opened at run time".format(nccl_where),
        "cudnn: " + ("headers from {} | library opened at run time".format(cudnn_where) if cudnn_inc != None else "not found (looked in {}): attention uses the project's kernel; set CUDNN_HOME for cuDNN's".format(cudnn_where)),
    ]
    rctx.file("found.txt", "\n".join(lines) + "\n")
    rctx.file("defs.bzl", "HAS_CUDA = True\nHAS_GPU = {}\nEMULATED = False\nHAS_CUDNN = {}\nNVCC = \"{}\"\nCUDA_VERSION = \"{}\"\nCUDA_LIBDIR = \"{}\"\n".format(
        _has_gpu(rctx),
        cudnn_inc != None,
        nvcc,
        release,
        libdir,
    ))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["CUDA_HOME", "CUDNN_HOME", "NCCL_HOME", "VIRTUAL_ENV", "CONDA_PREFIX", "MOE_TRAIN_CUDA", "PATH"],
    local = True,
)
