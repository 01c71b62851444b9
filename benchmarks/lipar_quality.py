"""LIPAR quality on the shipped `tiny` model: kept ratio, sequence PSNR and SSIM against the unpruned
output (same seed and noise), drift, warp error (temporal consistency) and PSNR against the source,
for the unpruned run and every recovery mode in lipar.config.RECOVERY_MODES.

    python benchmarks/lipar_quality.py --out benchmarks/results

Clips: a static camera over a photograph, a camera pan, a scene cut (procedural, train/dataset.py),
and every clip in benchmarks/data/clips.json (real footage, the Chromium fake camera, procedural
static-camera clips; benchmarks/data/README.md says where each comes from).
Each stream runs --warmup latent frames before the --frames measured ones. The figures are defined
once in engine/quality.py: PSNR from the total MSE over the measured frames (capped at 100 dB when
identical), drift = the last 8 frames' PSNR minus the first 8's, warp error = the mean absolute
difference (0-255) between output t and output t-1 warped along the source's optical flow, over
pixels that flow explains. Lower warp error is more consistent. The strips show the default mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strips import save_strip  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from engine.generator import StreamingGenerator  # noqa: E402
from engine.quality import sequence_metrics  # noqa: E402
from engine.video_io import read_frames  # noqa: E402
from lipar.config import RECOVERY_MODES, LiparConfig  # noqa: E402
from train.dataset import Background, ClipParams, ObjectParams, Scene, render  # noqa: E402

# modes come from the config, so a renamed or new recovery mode is measured without an edit here
VARIANTS = {"unpruned": LiparConfig(enabled=False), **{m: LiparConfig(recovery=m) for m in RECOVERY_MODES}}
STRIP_MODE = LiparConfig().recovery
PROMPTS = {
    "static": "a yellow ball and a cyan square moving over an old brick wall",
    "pan": "a white ball moving right over grass, the camera panning left",
    "cut": "a red ball rolling left over a plain blue background",
}
DATA = Path(__file__).parent / "data"


def procedural_clips(frames: int, size: int) -> dict[str, list[np.ndarray]]:
    brick = Background("photo", photo="brick", view=(0.1, 0.1, 0.7))
    grass = Background("photo", photo="grass", view=(0.2, 0.2, 0.6))
    objs = (
        ObjectParams("ball", "yellow", "medium", "right", "medium", (0.25, 0.35), True),
        ObjectParams("square", "cyan", "small", "up-left", "slow", (0.7, 0.7), True),
    )
    cut_scene = Scene(
        Background("flat", ("blue", "white")), (ObjectParams("ball", "red", "large", "left", "fast", (0.8, 0.5), True),)
    )
    clips = {
        "static": ClipParams(0, frames, (Scene(brick, objs),)),
        "pan": ClipParams(0, frames, (Scene(grass, objs[:1]),), camera="left"),
        "cut": ClipParams(0, frames, (Scene(brick, objs), cut_scene), cut=frames // 2),
    }
    return {name: list(render([p], size)[0].numpy()) for name, p in clips.items()}


def data_clips(count: int, size: int) -> tuple[dict[str, list[np.ndarray]], dict[str, str]]:
    """The clips of benchmarks/data/clips.json at the model's size, and their prompts."""
    index = DATA / "clips.json"
    clips, prompts = {}, {}
    for name, meta in (json.loads(index.read_text()) if index.is_file() else {}).items():
        path = DATA / meta["file"]
        if not path.is_file():
            continue
        frames = list(read_frames(path, limit=count))
        if len(frames) < count:
            raise ValueError(f"{path} has {len(frames)} frames; --warmup + --frames need {count}")
        clips[name] = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
        prompts[name] = meta["prompt"]
    return clips, prompts


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def run(gen: StreamingGenerator, lipar: LiparConfig, source: list[np.ndarray], prompt: str, warmup: int):
    """Outputs, masks and kept ratios of the frames after the first `warmup`."""
    gen.set_lipar(lipar)
    gen.reset()
    gen.set_prompt(prompt)
    outs, masks, kept = [], [], []
    for i, frame in enumerate(source):
        o = gen.step(frame)
        if i >= warmup:
            outs.append(o.frames[-1])
            masks.append(o.mask)
            kept.append(o.stats["kept_ratio"])
    return outs, masks, kept


def overlay(frame: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Pruned tokens tinted blue over the output frame."""
    scale = frame.shape[0] // keep.shape[0]
    pruned = np.kron(~keep, np.ones((scale, scale), bool))
    out = frame.astype(np.float32)
    out[pruned] = out[pruned] * 0.45 + np.array([30, 80, 255]) * 0.55
    return out.astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=8, help="latent frames before the measured ones")
    p.add_argument("--frames", type=int, default=24, help="measured frames")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--clips", nargs="+", default=None, help="clip names (default: all)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = p.parse_args()
    torch.set_grad_enabled(False)
    a.out.mkdir(parents=True, exist_ok=True)
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", size=(a.size, a.size))
    count = a.warmup + a.frames
    clips, prompts = data_clips(count, a.size)
    clips = {**procedural_clips(count, a.size), **clips}
    prompts = {**PROMPTS, **prompts}
    if a.clips:
        unknown = sorted(set(a.clips) - set(clips))
        if unknown:
            p.error(f"unknown clip(s) {', '.join(unknown)}; choose from {', '.join(clips)}")
        clips = {n: clips[n] for n in a.clips}
    results = {}
    for name, source in clips.items():
        runs = {v: run(gen, cfg, source, prompts[name], a.warmup) for v, cfg in VARIANTS.items()}
        base = runs["unpruned"][0]
        measured = source[a.warmup :]
        row = {}
        for v, (outs, _, kept) in runs.items():
            m = sequence_metrics(outs, base, measured)
            row[v] = {
                "kept_ratio": float(np.mean(kept)),
                "psnr_vs_unpruned": m["psnr_vs_baseline"],
                "psnr_vs_unpruned_frames": m["psnr_vs_baseline_frames"],
                "drift": m["drift"],
                "ssim_vs_unpruned": float(np.mean([ssim(o, b) for o, b in zip(outs, base)])),
                "warp_error": m["warp_error"],
                "psnr_vs_source": m["psnr_vs_source"],
                "drift_vs_source": m["drift_vs_source"],
            }
        results[name] = row
        pick = np.linspace(0, len(measured) - 1, 6).astype(int)
        outs, masks, _ = runs[STRIP_MODE]
        save_strip(
            {
                "source": [measured[i] for i in pick],
                "unpruned": [base[i] for i in pick],
                f"LIPAR ({STRIP_MODE})": [outs[i] for i in pick],
                "pruned (blue)": [overlay(outs[i], masks[i]) for i in pick],
            },
            a.out / f"lipar_{name}.png",
            f"LIPAR on tiny: {name}",
        )
        for v, m in row.items():
            print(f"{name} {v}: kept {m['kept_ratio']:.2f}, {m['psnr_vs_unpruned']:.1f} dB, warp {m['warp_error']:.2f}")
    cfg = gen.lipar
    meta = {
        "model": "tiny",
        "size": f"{a.size}x{a.size}",
        "warmup": a.warmup,
        "frames": a.frames,
        "device": "cpu",
        "torch": torch.__version__,
        "lipar": dataclasses.asdict(cfg),
        "command": "python " + " ".join(sys.argv),
    }
    (a.out / "lipar_quality.json").write_text(json.dumps({"meta": meta, "clips": results}, indent=1))
    lines = [
        "# LIPAR quality on `tiny`",
        "",
        f"Command: `{meta['command']}` · CPU · torch {meta['torch']} · {meta['size']}, {a.warmup} warm-up + "
        f"{a.frames} measured frames per clip · LIPAR as resolved for the last run: "
        + ", ".join(f"{k} {v}" for k, v in meta["lipar"].items() if k not in ("enabled", "recovery")),
        "",
        "PSNR: over the measured frames from their total MSE (100 dB = identical). Drift: PSNR of the last 8 "
        "measured frames minus the first 8's (halves when fewer than 16 are measured), against the unpruned run "
        "and, as source drift, each run against its source (which of the two moved). Warp error: output t "
        "against output t-1 warped along the source's optical flow (0-255, lower is steadier). Definitions: "
        "`engine/quality.py`; clips: `benchmarks/data/README.md`.",
        "",
        "| clip | variant | kept | PSNR vs unpruned (dB) | drift (dB) | SSIM | warp error | PSNR vs source (dB) "
        "| source drift (dB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        for v, m in row.items():
            lines.append(
                f"| {name} | {v} | {m['kept_ratio']:.2f} | {m['psnr_vs_unpruned']:.1f} | "
                f"{m['drift']['change_db']:+.1f} | {m['ssim_vs_unpruned']:.3f} | {m['warp_error']:.2f} | "
                f"{m['psnr_vs_source']:.1f} | {m['drift_vs_source']['change_db']:+.1f} |"
            )
    lines += ["", *[f"![{n}](lipar_{n}.png)" for n in results]]
    (a.out / "lipar_quality.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
