"""Offline stand-in for @rules_cc: Bazel 4.2.3 asks for it, the real one cannot be
downloaded here, and Debian's bazel-rules-cc is too new for Bazel 4. Every rule
forwards to the native one built into Bazel."""

def cc_binary(**kwargs):
    native.cc_binary(**kwargs)

def cc_library(**kwargs):
    native.cc_library(**kwargs)

def cc_test(**kwargs):
    native.cc_test(**kwargs)

def cc_import(**kwargs):
    native.cc_import(**kwargs)

def cc_toolchain(**kwargs):
    native.cc_toolchain(**kwargs)

def cc_toolchain_suite(**kwargs):
    native.cc_toolchain_suite(**kwargs)
