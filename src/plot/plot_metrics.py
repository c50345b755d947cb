# Draws one PNG of a training run from its metrics.jsonl: train and eval
# loss, learning rate, gradient norm, throughput, and the expert load of
# every MoE layer over the steps. `moe_train plot` runs this with the
# system's Python and matplotlib:  python3 -c SCRIPT METRICS_JSONL OUT_PNG TITLE
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors  # noqa: E402


def read_rows(path):
    """Train and eval rows by step; a step logged twice (a resumed run) keeps its last line."""
    train, evals = {}, {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                sys.exit(f"{path}:{number}: not a JSON object; is this a moe_train metrics file?")
            if "train/loss" in row:
                train[row["step"]] = row
            elif "eval/loss" in row:
                evals[row["step"]] = row
    return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def expert_layers(rows):
    """The MoE layers' block indices, from the per-layer keys (or positions in moe/expert_counts)."""
    found = set()
    for r in rows:
        for k in r:
            m = re.fullmatch(r"moe/layer_(\d+)/expert_counts", k)
            if m:
                found.add(int(m.group(1)))
    if found:
        return sorted(found), lambda r, i, layer: r.get(f"moe/layer_{layer}/expert_counts")
    width = max((len(r.get("moe/expert_counts", [])) for r in rows), default=0)
    return list(range(width)), lambda r, i, layer: (r.get("moe/expert_counts") or [None] * width)[i]


def draw_load(ax, fig, rows):
    """The heatmap; returns what it drew, in words."""
    layers, counts_of = expert_layers(rows)
    steps = [r["step"] for r in rows]
    if not layers:
        ax.text(0.5, 0.5, "dense model: no experts", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return "no expert load (a dense model)"
    grid, labels, bounds = [], [], []
    for i, layer in enumerate(layers):
        per_step = [counts_of(r, i, layer) for r in rows]
        experts = max((len(c) for c in per_step if c), default=0)
        for e in range(experts):
            line = []
            for c in per_step:
                total = sum(c) if c else 0
                line.append(c[e] / total * experts if c and total else float("nan"))
            grid.append(line)
        labels.append((len(grid) - experts / 2 - 0.5, f"layer {layer}"))
        bounds.append(len(grid) - 0.5)
    # Column edges halfway between logged steps (they are log_interval apart, the first one not).
    edges = [steps[0] - 0.5] + [(a + b) / 2 for a, b in zip(steps, steps[1:])] + [steps[-1] + 0.5]
    highest = max((v for line in grid for v in line if v == v), default=2.0)
    image = ax.pcolormesh(edges, [y - 0.5 for y in range(len(grid) + 1)], grid, cmap="coolwarm",
                          norm=colors.TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=max(2.0, highest)))
    ax.invert_yaxis()
    for b in bounds[:-1]:
        ax.axhline(b, color="black", linewidth=0.8)
    ax.set_yticks([y for y, _ in labels], [t for _, t in labels])
    ax.set_xlabel("step")
    ax.set_title("expert load: tokens routed to each expert ÷ the even share (1 = balanced), one row per expert")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    return f"expert load of {len(layers)} MoE layers ({len(grid)} experts in all)"


def main(jsonl, png, title):
    train, evals = read_rows(jsonl)
    if not train:
        sys.exit(f"{jsonl}: no training steps logged yet (no line with train/loss)")
    fig = plt.figure(figsize=(14, 11), dpi=100, layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 1.3])
    ax = fig.add_subplot(grid[0, 0])
    ax.plot(*series(train, "train/loss"), label="train", color="tab:blue")
    if evals:
        ax.plot(*series(evals, "eval/loss"), "o-", label="eval", color="tab:orange")
    ax.set_title("loss")
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    for cell, key, name in ((grid[0, 1], "train/lr", "learning rate"),
                            (grid[1, 0], "train/grad_norm", "gradient norm (before clipping)"),
                            (grid[1, 1], "train/tokens_per_sec", "tokens / s")):
        ax = fig.add_subplot(cell)
        ax.plot(*series(train, key), color="tab:green")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    load = draw_load(fig.add_subplot(grid[2, :]), fig, train)
    last = f"{len(train)} logged steps to step {train[-1]['step']}, final train loss {train[-1]['train/loss']:.4g}"
    if evals:
        last += f", eval loss {evals[-1]['eval/loss']:.4g} ({len(evals)} evaluations)"
    fig.suptitle(f"{title}: {last}")
    fig.savefig(png)
    print(f"{last}; {load}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
