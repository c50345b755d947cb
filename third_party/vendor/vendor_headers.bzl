"""Header-only NVIDIA packages (cuDNN's C++ graph API, CUTLASS), pinned and
unpacked by scripts/fetch_vendor_headers.sh into the vendor cache:
$MOE_TRAIN_VENDOR_DIR (default ~/.cache/moe_train/vendor)/<package>-<version>/include.
Nothing is downloaded by Bazel. A repository is looked at only when a target
needs it, and a missing package fails with the command that fetches it."""

def _vendor_headers_impl(rctx):
    root = rctx.os.environ.get("MOE_TRAIN_VENDOR_DIR", "")
    if not root:
        root = rctx.os.environ.get("HOME", "") + "/.cache/moe_train/vendor"
    folder = "{}/{}-{}".format(root, rctx.attr.package, rctx.attr.version)
    if not rctx.path(folder + "/.complete").exists:
        fail("{} {} headers are not in {}: run scripts/setup.sh (or scripts/fetch_vendor_headers.sh), or point MOE_TRAIN_VENDOR_DIR at the folder that holds them".format(
            rctx.attr.package,
            rctx.attr.version,
            folder,
        ))
    rctx.symlink(folder + "/include", "include")
    rctx.file("BUILD", """# {package} {version}, headers only (from {folder}).
cc_library(
    name = "headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
    visibility = ["//visibility:public"],
)

# The same files for nvcc genrules, which take files, not libraries
# (include path: external/{name}/include).
filegroup(
    name = "header_files",
    srcs = glob(["include/**"]),
    visibility = ["//visibility:public"],
)
""".format(package = rctx.attr.package, version = rctx.attr.version, folder = folder, name = rctx.name))

vendor_headers = repository_rule(
    implementation = _vendor_headers_impl,
    attrs = {
        "package": attr.string(mandatory = True),
        "version": attr.string(mandatory = True),
    },
    environ = ["MOE_TRAIN_VENDOR_DIR", "HOME"],
    local = True,
)
