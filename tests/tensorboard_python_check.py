"""Loads a run's event files with TensorBoard's own reader and compares them
with the run's metrics.jsonl: every numeric JSONL key is a scalar tag with the
same values (as float32), and every MoE layer has an expert-load histogram whose
buckets are the JSONL's expert counts.  Usage: CHECK.py TB_DIR METRICS_JSONL"""
import json
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def main(tb_dir, jsonl_path):
    acc = event_accumulator.EventAccumulator(
        tb_dir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0})
    acc.Reload()
    tags = acc.Tags()
    rows = [json.loads(line) for line in open(jsonl_path)]
    problems = []
    expected_scalars, layers = set(), set()
    for row in rows:
        step = row["step"]
        for key, value in row.items():
            if key == "step":
                continue
            if key.endswith("/expert_counts") and key.startswith("moe/layer_"):
                layers.add(key[: -len("/expert_counts")])
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            expected_scalars.add(key)
            got = {e.step: e.value for e in acc.Scalars(key)} if key in tags["scalars"] else {}
            if got.get(step) != f32(value):
                problems.append(f"{key} at step {step}: tensorboard {got.get(step)}, jsonl {value}")
        for layer in layers:
            hist_tag = layer + "/expert_load"
            if hist_tag not in tags["histograms"]:
                problems.append(f"no histogram {hist_tag}")
                continue
            by_step = {e.step: e.histogram_value for e in acc.Histograms(hist_tag)}
            h = by_step.get(step)
            want = row.get(layer + "/expert_counts")
            if h is None or list(h.bucket) != [float(c) for c in want]:
                problems.append(f"{hist_tag} at step {step}: {None if h is None else list(h.bucket)} != {want}")
    extra = set(tags["scalars"]) - expected_scalars
    if extra:
        problems.append(f"tags not in the JSONL: {sorted(extra)}")
    for needed in ("train/loss", "moe/aux_loss", "moe/expert_balance", "moe/layer_1/aux_loss",
                   "moe/layer_1/expert_balance", "moe/layer_1/dropped_frac", "moe/layer_3/aux_loss"):
        if needed not in tags["scalars"]:
            problems.append(f"no scalar {needed}")
    for p in problems:
        print(p)
    print(f"{len(tags['scalars'])} scalar tags, {len(tags['histograms'])} histogram tags, {len(rows)} steps")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
