#!/usr/bin/python3
"""Renders the expert load of a run as a PNG heatmap: one panel per MoE layer, experts down,
optimizer steps across, colour = tokens routed to the expert / mean tokens per expert
(1 = perfectly balanced). Reads the run's metrics.jsonl.

    /usr/bin/python3 bench/plot_expert_load.py runs/tiny/metrics.jsonl [-o runs/tiny/expert_load.png]
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load(path):
    steps, layers = [], {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON ({e})")
            if rec.get("kind") != "train":
                continue
            counts = {k[len("moe."):-len(".counts")]: v for k, v in rec.items()
                      if k.startswith("moe.") and k.endswith(".counts")}
            if not counts:
                continue
            steps.append(rec["step"])
            for name, c in counts.items():
                layers.setdefault(name, []).append(c)
    if not steps:
        sys.exit(f"{path}: no MoE expert counts (is this an MoE run's metrics.jsonl?)")
    return steps, {k: np.array(v, dtype=float) for k, v in layers.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics")
    ap.add_argument("-o", "--output", help="PNG path (default: expert_load.png beside the metrics)")
    args = ap.parse_args()
    steps, layers = load(args.metrics)
    out = args.output or os.path.join(os.path.dirname(args.metrics), "expert_load.png")
    names = sorted(layers, key=lambda s: int(s.split(".")[2]))
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.2 + 1.6 * len(names)), squeeze=False, sharex=True)
    for ax, name in zip(axes[:, 0], names):
        c = layers[name]
        rel = c / c.mean(axis=1, keepdims=True)
        im = ax.imshow(rel.T, aspect="auto", cmap="RdBu_r", vmin=0, vmax=2, interpolation="nearest",
                       extent=[steps[0] - 0.5, steps[-1] + 0.5, c.shape[1] - 0.5, -0.5])
        maxvio = (c.max(axis=1) - c.mean(axis=1)) / c.mean(axis=1)
        ax.set_ylabel("expert")
        ax.set_title(f"{name}: MaxVio first {maxvio[0]:.2f}, last {maxvio[-1]:.2f}", fontsize=9)
    axes[-1, 0].set_xlabel("step")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="load / mean load")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
