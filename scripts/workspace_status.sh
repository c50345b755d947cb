#!/bin/bash
# Bazel's workspace status (.bazelrc): the commit the binary is built from,
# for `moe_train --version` and each checkpoint's metadata.json. "+dirty" marks
# a build with uncommitted changes; "unknown" a build outside a git checkout.
PATH=${PATH:-/usr/bin:/bin}
commit=$(git rev-parse HEAD 2>/dev/null) || commit=unknown
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit+dirty"
fi
echo "STABLE_MOE_TRAIN_COMMIT $commit"
