"""Helpers shared by the training scripts: device choice, LR schedule, resumable checkpoints, plots."""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CHECKPOINT = "state.pt"


def pick_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an explicit 'cuda' without a GPU is an error, not a silent CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return device


def warmup_cosine(step: int, total: int, warmup: int, peak: float, floor_ratio: float = 0.02) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak * floor_ratio` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def annealing_step(step: int, total: int, elapsed_s: float, max_minutes: float | None) -> int:
    """The step the learning-rate schedule is at: a run cut short by a time limit anneals by
    whichever ends first, steps or time, so its last minutes still get the low learning rates."""
    if not max_minutes:
        return step
    return max(step, int(elapsed_s / (max_minutes * 60) * total))


def save_checkpoint(state: dict, directory: str | Path, shard_mb: float = 15.0) -> Path:
    """Write `state` (torch.save-able) as `state.pt.000`, `.001`, ... of at most `shard_mb` MiB each.

    Shards, because files that travel between machines may be size-limited (16 MiB here); the old
    checkpoint is replaced only once the new one is fully written, so a kill mid-save loses nothing.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    step = max(1, int(shard_mb * 2**20))
    tmp = directory / "incoming"
    tmp.mkdir(exist_ok=True)
    for old in tmp.iterdir():
        old.unlink()
    for i, start in enumerate(range(0, len(data), step)):
        (tmp / f"{CHECKPOINT}.{i:03d}").write_bytes(data[start : start + step])
    for old in directory.glob(f"{CHECKPOINT}.*"):
        old.unlink()
    for shard in sorted(tmp.iterdir()):
        os.replace(shard, directory / shard.name)
    tmp.rmdir()
    return directory / CHECKPOINT


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The state saved by `save_checkpoint` in `directory`, or None if there is none."""
    shards = sorted(Path(directory).glob(f"{CHECKPOINT}.[0-9][0-9][0-9]"))
    if not shards:
        return None
    expected = [f"{CHECKPOINT}.{i:03d}" for i in range(len(shards))]
    if [s.name for s in shards] != expected:
        raise ValueError(f"checkpoint in {directory} is incomplete: found {[s.name for s in shards]}")
    data = b"".join(s.read_bytes() for s in shards)
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)


def plot_curves(
    path: str | Path, curves: dict[str, list[tuple[int, float]]], title: str, log_scale: tuple[str, ...] = ()
) -> None:
    """One PNG with one subplot per named curve of (step, value) points; `log_scale` names log-y plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, pts in curves.items() if pts]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        steps, values = zip(*curves[name], strict=True)
        ax.plot(steps, values, marker="." if len(steps) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if name in log_scale:
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
