"""Colour-prompt following after each fine-tuning round of session 9 (benchmarks/results/tiny_finetune.json).

python benchmarks/plot_finetune.py   # writes benchmarks/results/tiny_finetune.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=RESULTS / "tiny_finetune.json")
    p.add_argument("--out", type=Path, default=RESULTS / "tiny_finetune.png")
    a = p.parse_args(argv)
    rounds = json.loads(a.json.read_text())["dit_rounds"]
    fig, (ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4))
    x = [r["round"] for r in rounds]
    gpu = [r["gpu_check_h200_bf16"][0] for r in rounds]  # the first check: the schedule shipped then
    for key, label, style in (("t2v", "text-to-video", "-"), ("v2v_procedural", "V2V procedural", "-"),
                              ("v2v_photo", "V2V photo background", "-")):  # fmt: skip
        ax.plot(x, [100 * g[key] for g in gpu], style, marker="o", label=f"{label} (H200, bf16)")
    cpu = [(r["round"], r["cpu_check_fp32"]) for r in rounds if "cpu_check_fp32" in r]
    for key, label in (("v2v_procedural", "V2V procedural"), ("v2v_photo", "V2V photo")):
        ax.plot([c[0] for c in cpu], [100 * c[1][key] for c in cpu], "x", markersize=9, label=f"{label} (CPU, fp32)")
    ax.axhline(80, color="grey", linestyle=":", label="target 80 %")
    ax.set(xlabel="fine-tuning round (about 6,000 steps each)", ylabel="frames with the prompted colour (%)",
           title="tiny: colour-prompt following per round", ylim=(0, 105), xticks=x)  # fmt: skip
    ax.legend(fontsize=7, loc="lower right")
    offset = 0
    for r in rounds:  # each round's own steps, one after the other
        steps, losses = zip(*r["loss_history"], strict=True)
        loss_ax.plot([offset + s for s in steps], losses, label=f"round {r['round']}")
        offset += r["steps"]
    loss_ax.set(xlabel="fine-tuning step", ylabel="velocity MSE (mean of 50 steps)", title="training loss")
    loss_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(a.out)


if __name__ == "__main__":
    main()
