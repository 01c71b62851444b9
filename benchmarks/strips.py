"""A grid of frames with row labels: the picture strips of the quality benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_strip(rows: dict[str, list[np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.5 * cols, 1.65 * len(rows)), squeeze=False)
    for r, (label, frames) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(frames):
                ax.imshow(frames[c])
            if c == 0:
                ax.set_ylabel(label, fontsize=6, wrap=True)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
