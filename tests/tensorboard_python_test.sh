#!/usr/bin/env bash
# TensorBoard's own reader on our event files: a KempnerForge-style config with
# enable_tensorboard = true trains, and tensorboard's EventAccumulator loads the
# scalars (the JSONL file's tags, values equal as float32) and each MoE layer's
# expert-load histogram. Runs where a Python with the `tensorboard` package is
# found (MOE_TRAIN_TENSORBOARD_PYTHON, else python3); elsewhere it says so and
# passes, as the C++ round trip (tests/train:tensorboard_test) always runs.
#   bazel test //tests:tensorboard_python_test --test_env=MOE_TRAIN_TENSORBOARD_PYTHON=/path/to/venv/bin/python
set -u
BIN="$1"
CHECK_PY="$2"
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check NAME CONDITION..., $fail

PY="${MOE_TRAIN_TENSORBOARD_PYTHON:-python3}"
if ! "$PY" -c "import tensorboard" 2>/dev/null; then
  echo "not run: no Python with the tensorboard package ($PY); set MOE_TRAIN_TENSORBOARD_PYTHON to one"
  exit 0
fi

tmp="$TEST_TMPDIR/tb_python"
rm -rf "$tmp" && mkdir -p "$tmp"
# KempnerForge's debug_moe keys, shrunk to seconds on a CPU, with TensorBoard on.
cat > "$tmp/kf_debug_moe.toml" <<TOML
[model]
dim = 32
n_layers = 4
n_heads = 4
n_kv_heads = 2
vocab_size = 512
max_seq_len = 64
num_experts = 4
moe_top_k = 2
moe_frequency = 2
moe_router = "softmax_topk"
moe_aux_loss_weight = 0.01

[train]
batch_size = 2
seq_len = 32
max_steps = 10
compile_model = false
device = "cpu"

[optimizer]
lr = 3e-4

[scheduler]
warmup_steps = 5
min_lr_ratio = 0.1

[data]
num_workers = 2
pin_memory = true

[checkpoint]
dir = "$tmp/checkpoints/debug_moe"
interval = 25
keep_last_n = 2

[metrics]
log_interval = 5
enable_wandb = false
enable_tensorboard = true
tensorboard_dir = "$tmp/tb_logs"
TOML

"$BIN" "$tmp/kf_debug_moe.toml" >"$tmp/train.log" 2>&1; rc=$?
check "the KempnerForge config trains (exit 0)" test "$rc" -eq 0
check "metrics.jsonl in the run folder" test -s "$tmp/checkpoints/debug_moe/metrics.jsonl"
check "tensorboard's EventAccumulator reads the tags and values" \
  "$PY" "$CHECK_PY" "$tmp/tb_logs" "$tmp/checkpoints/debug_moe/metrics.jsonl"
[ "$fail" -eq 0 ] || cat "$tmp/train.log"
exit $fail
