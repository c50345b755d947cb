"""Finds one C/C++ library the build does not build itself, and writes a
repository (@<name>) with a `cc_library` named `lib` for it.

Where it looks, first hit wins:
  1. the library's own variables: <VAR>_HOME, then <VAR>_ROOT (what
     environment modules and Spack set), each a prefix holding include/ and lib/;
     for MPI also MPI_INCLUDE + MPI_LIB (RHEL's openmpi modules), then the
     `mpicc` on PATH (`--showme:incdirs/libdirs` for Open MPI 4 and 5, `-show`
     for MPICH);
  2. each prefix in MOE_TRAIN_PREFIX (colon-separated), as written by
     `scripts/setup.sh --prefix=DIR` or a Conda environment;
  3. the usual places: /usr/local, /usr (and Debian's multiarch folders).

Headers in the compiler's own folders (/usr/include and its multiarch
folder, /usr/local/include) need no wrapper. Headers anywhere else are
symlinked into the repository and declared, so Bazel's inclusion check holds.
Static archives are preferred for spdlog and fmt, so the binary carries them;
MPI and BLAS stay shared libraries, found at run time through the loader's
path (the cluster's module, or LD_LIBRARY_PATH), never a baked-in folder.

A library that is not found fails the build in one line naming it, where
it looked, and the variable to set. Each library is its own repository, so
a missing test-only library (Catch2) does not stop building the binary.
`bazel run //third_party:found` prints what was found, from where.
"""

_MULTIARCH = "x86_64-linux-gnu"

# How to recognise each library.
#   var:      the prefix variable's stem (SPDLOG -> SPDLOG_HOME, SPDLOG_ROOT)
#   header:   a file that proves the headers are there
#   subdirs:  extra include folders to try under a prefix's include/
#   globs:    the headers to declare, relative to the include folder
#   lib:      the library to link ("" for header-only)
#   libsubdirs: extra library folders to try under a prefix's lib/<multiarch>/
#   static:   prefer lib<lib>.a when the folder has one
#   optional: a missing library file is fine (header-only mode, via `header_only`)
#   package:  the Debian package that provides it
_SPECS = {
    "spdlog": struct(
        var = "SPDLOG",
        header = "spdlog/spdlog.h",
        subdirs = [],
        libsubdirs = [],
        globs = ["spdlog/**"],
        lib = "spdlog",
        static = True,
        optional = True,
        # We format with the external fmt (the code includes <fmt/...>), as
        # Debian's and conda-forge's spdlog do.
        defines = ["SPDLOG_FMT_EXTERNAL"],
        header_only = [],
        package = "libspdlog-dev",
        extra_linkopts = ["-pthread"],
    ),
    "fmt": struct(
        var = "FMT",
        header = "fmt/format.h",
        subdirs = [],
        libsubdirs = [],
        globs = ["fmt/**"],
        lib = "fmt",
        static = True,
        optional = True,
        defines = [],
        header_only = ["FMT_HEADER_ONLY"],
        package = "libfmt-dev",
        extra_linkopts = [],
    ),
    "tomlplusplus": struct(
        var = "TOMLPLUSPLUS",
        header = "toml++/toml.h",
        subdirs = [],
        libsubdirs = [],
        globs = ["toml++/**"],
        lib = "",
        static = False,
        optional = True,
        defines = [],
        header_only = [],
        package = "libtomlplusplus-dev",
        extra_linkopts = [],
    ),
    "nlohmann_json": struct(
        var = "NLOHMANN_JSON",
        header = "nlohmann/json.hpp",
        subdirs = [],
        libsubdirs = [],
        globs = ["nlohmann/**"],
        lib = "",
        static = False,
        optional = True,
        defines = [],
        header_only = [],
        package = "nlohmann-json3-dev",
        extra_linkopts = [],
    ),
    "catch2": struct(
        var = "CATCH2",
        # Catch2 2.x, the single-header release (3.x has another layout).
        header = "catch2/catch.hpp",
        subdirs = [],
        libsubdirs = [],
        globs = ["catch2/**"],
        lib = "",
        static = False,
        optional = True,
        defines = [],
        header_only = [],
        package = "catch2",
        extra_linkopts = [],
    ),
    "openblas": struct(
        var = "OPENBLAS",
        header = "cblas.h",
        # Debian's packages keep the OpenBLAS flavour in its own folders
        # (update-alternatives links them into the multiarch folders).
        subdirs = ["openblas", _MULTIARCH, _MULTIARCH + "/openblas-pthread"],
        libsubdirs = ["openblas-pthread"],
        globs = ["cblas*.h", "openblas*.h", "f77blas.h", "lapack*.h"],
        lib = "openblas",
        static = False,
        optional = False,
        defines = [],
        header_only = [],
        package = "libopenblas-dev",
        extra_linkopts = ["-pthread"],
    ),
    "mpi": struct(
        var = "MPI",
        header = "mpi.h",
        subdirs = ["openmpi", "openmpi-x86_64", "mpich-x86_64"],
        libsubdirs = [],
        globs = ["mpi*.h", "mpio.h", "opa*.h", "openmpi/**"],
        lib = "mpi",
        static = False,
        optional = False,
        # The C API only: no C++ bindings (-lmpi_cxx), for Open MPI and MPICH.
        defines = ["OMPI_SKIP_MPICXX", "MPICH_SKIP_MPICXX"],
        header_only = [],
        package = "libopenmpi-dev and openmpi-bin",
        extra_linkopts = [],
    ),
}

# Folders the compiler searches by itself; headers there need no wrapper.
_COMPILER_INCLUDE_DIRS = ["/usr/include", "/usr/include/" + _MULTIARCH, "/usr/local/include"]

# Folders the linker and the loader search by themselves.
_LOADER_LIB_DIRS = ["/usr/lib/" + _MULTIARCH, "/lib/" + _MULTIARCH, "/usr/lib64", "/usr/lib", "/lib64", "/usr/local/lib"]

def _words(text):
    """Whitespace-separated words (Bazel 4's split() needs a separator)."""
    return [w for w in text.replace("\n", " ").replace("\t", " ").split(" ") if w]

def _env(rctx, name):
    return rctx.os.environ.get(name, "")

def _exists(rctx, path):
    return rctx.path(path).exists

def _prefix_layout(rctx, spec, prefix):
    """(include dir, lib dirs) of a prefix holding the library's header, or None."""
    incdirs = [prefix + "/include"] + [prefix + "/include/" + s for s in spec.subdirs]
    for inc in incdirs:
        if _exists(rctx, inc + "/" + spec.header):
            libdirs = [prefix + "/lib64", prefix + "/lib", prefix + "/lib/" + _MULTIARCH]
            libdirs += [prefix + "/lib/" + _MULTIARCH + "/" + s for s in spec.libsubdirs]
            return (inc, libdirs)
    return None

def _mpicc_layout(rctx, spec):
    """The include and library folders the mpicc on PATH compiles with."""
    mpicc = rctx.which("mpicc")
    if not mpicc:
        return None, ""
    incs, libs = [], []
    res = rctx.execute([mpicc, "--showme:incdirs"], timeout = 20)
    if res.return_code == 0 and res.stdout.strip():
        # Open MPI 4 and 5
        incs = _words(res.stdout)
        res = rctx.execute([mpicc, "--showme:libdirs"], timeout = 20)
        libs = _words(res.stdout) if res.return_code == 0 else []
    else:
        # MPICH and its derivatives print the whole command line.
        res = rctx.execute([mpicc, "-show"], timeout = 20)
        if res.return_code != 0:
            return None, ""
        for word in _words(res.stdout):
            if word.startswith("-I"):
                incs.append(word[2:])
            elif word.startswith("-L"):
                libs.append(word[2:])
    for inc in incs:
        if _exists(rctx, inc + "/" + spec.header):
            return (inc, libs), "mpicc on PATH (" + str(mpicc) + ")"
    return None, ""

def _candidates(rctx, name, spec):
    """(where, prefix or None) in the order they are tried."""
    out = []
    for suffix in ["_HOME", "_ROOT"]:
        var = spec.var + suffix
        if _env(rctx, var):
            out.append(("$" + var, _env(rctx, var)))
    if name == "mpi" and _env(rctx, "MPI_INCLUDE"):
        out.append(("$MPI_INCLUDE", None))
    if name == "mpi":
        out.append(("mpicc", None))
    for prefix in _env(rctx, "MOE_TRAIN_PREFIX").split(":"):
        if prefix:
            out.append(("$MOE_TRAIN_PREFIX", prefix))
    out.append(("/usr/local", "/usr/local"))
    out.append(("/usr", "/usr"))
    if name == "mpi":
        out.append(("Debian's Open MPI", "/usr/lib/" + _MULTIARCH + "/openmpi"))
    return out

def _find(rctx, name, spec):
    """(include dir, lib dirs, where) or None, and the places tried."""
    tried = []
    for where, prefix in _candidates(rctx, name, spec):
        if where == "mpicc":
            layout, what = _mpicc_layout(rctx, spec)
            tried.append("mpicc on PATH")
            if layout:
                return layout[0], layout[1], what, tried
            continue
        if where == "$MPI_INCLUDE":
            inc = _env(rctx, "MPI_INCLUDE")
            tried.append("$MPI_INCLUDE=" + inc)
            if _exists(rctx, inc + "/" + spec.header):
                libs = [_env(rctx, "MPI_LIB")] if _env(rctx, "MPI_LIB") else []
                return inc, libs, "$MPI_INCLUDE and $MPI_LIB", tried
            continue
        tried.append(where if where == prefix else where + "=" + prefix)
        layout = _prefix_layout(rctx, spec, prefix)
        if layout:
            return layout[0], layout[1], where + " (" + prefix + ")" if where != prefix else prefix, tried
    return None, None, None, tried

def _library_file(rctx, spec, libdirs):
    """("static" | "shared", path) of the library in the first folder that has it."""
    for d in libdirs:
        static = d + "/lib" + spec.lib + ".a"
        shared = d + "/lib" + spec.lib + ".so"
        if spec.static and _exists(rctx, static):
            return "static", static
        if _exists(rctx, shared):
            return "shared", shared
        if _exists(rctx, static):
            return "static", static
    return None, None

def _starlark_list(items):
    return "[" + ", ".join(['"%s"' % i for i in items]) + "]"

def _system_library_impl(rctx):
    name = rctx.attr.library
    spec = _SPECS[name]
    inc, libdirs, where, tried = _find(rctx, name, spec)
    if inc == None:
        fail("{} not found (looked in {}): install {}, or set {}_HOME to the prefix that holds include/{}".format(
            name,
            ", ".join(tried),
            spec.package,
            spec.var,
            spec.header,
        ))

    defines = list(spec.defines)
    linkopts = []
    link_note = "header-only"
    if spec.lib:
        kind, path = _library_file(rctx, spec, libdirs)
        if kind == None and not spec.optional:
            fail("{}: found its headers in {} but no lib{}.so or lib{}.a in {}: set {}_HOME to a prefix that has both".format(
                name,
                inc,
                spec.lib,
                spec.lib,
                ", ".join(libdirs) or "the folders mpicc names",
                spec.var,
            ))
        if kind == None:
            defines += spec.header_only
            link_note = "header-only (no lib{} next to it)".format(spec.lib)
        elif kind == "static":
            linkopts.append(path)
            link_note = "static " + path
        else:
            folder = path.rsplit("/", 1)[0]
            if folder not in _LOADER_LIB_DIRS:
                linkopts.append("-L" + folder)
            linkopts.append("-l" + spec.lib)
            link_note = "shared " + path
    linkopts += spec.extra_linkopts

    if inc in _COMPILER_INCLUDE_DIRS:
        hdrs, includes = "[]", "[]"
        header_note = inc
    else:
        rctx.symlink(inc, "include")
        hdrs = "glob({}, allow_empty = True)".format(_starlark_list(["include/" + g for g in spec.globs]))
        includes = '["include"]'
        header_note = inc

    line = "{}: {} | headers {} | {}".format(name, where, header_note, link_note)
    rctx.file("found.txt", line + "\n")
    rctx.file("BUILD", """# {name}: {where}. Generated by third_party/system_library.bzl.
package(default_visibility = ["//visibility:public"])

exports_files(["found.txt"])

cc_library(
    name = "lib",
    hdrs = {hdrs},
    includes = {includes},
    defines = {defines},
    linkopts = {linkopts},
)

# The same headers for genrules, which take files, not libraries (include
# path: external/{repo}/include; empty where the compiler finds them itself).
filegroup(
    name = "header_files",
    srcs = {hdrs},
)
""".format(
        repo = rctx.name,
        name = name,
        where = where,
        hdrs = hdrs,
        includes = includes,
        defines = _starlark_list(defines),
        linkopts = _starlark_list(linkopts),
    ))

system_library = repository_rule(
    implementation = _system_library_impl,
    attrs = {"library": attr.string(mandatory = True, values = _SPECS.keys())},
    environ = [
        "SPDLOG_HOME",
        "SPDLOG_ROOT",
        "FMT_HOME",
        "FMT_ROOT",
        "TOMLPLUSPLUS_HOME",
        "TOMLPLUSPLUS_ROOT",
        "NLOHMANN_JSON_HOME",
        "NLOHMANN_JSON_ROOT",
        "CATCH2_HOME",
        "CATCH2_ROOT",
        "OPENBLAS_HOME",
        "OPENBLAS_ROOT",
        "MPI_HOME",
        "MPI_ROOT",
        "MPI_INCLUDE",
        "MPI_LIB",
        "MOE_TRAIN_PREFIX",
        "PATH",
    ],
    local = True,
)

def system_libraries():
    """One repository per library: @spdlog, @fmt, @tomlplusplus, ..."""
    for name in _SPECS.keys():
        system_library(name = "sys_" + name, library = name)
