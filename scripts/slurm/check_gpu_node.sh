#!/usr/bin/env bash
# Run by common.sh under srun, one task per node, before any rank starts:
# checks this node's GPUs as the training run would use them (moe_train
# check-gpu --for-training: every op against the CPU, a CUDA graph replay, a
# few training steps; the config refused as training refuses it; a passed
# check is cached per binary, GPU model, driver and CUDA runtime, so the ranks
# and a requeued job do not check again). Each output line starts with the
# node's name; a failure names the node on stderr.
#   check_gpu_node.sh MOE_BIN CONFIG [--section.key=value ...] --world-size=N
set -u
node=${SLURMD_NODENAME:-$(hostname -s 2>/dev/null || hostname)}
bin=$1
shift
"$bin" check-gpu "$@" --for-training 2>&1 | sed "s/^/$node: /"
rc=${PIPESTATUS[0]}
if [[ $rc -ne 0 ]]; then
  echo "check_gpu_node.sh: error: node $node failed the GPU check (moe_train check-gpu exited $rc, its lines above): drain it or exclude it (sbatch --exclude=$node)" >&2
fi
exit "$rc"
