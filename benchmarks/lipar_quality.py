"""LIPAR quality on the shipped `tiny` model: kept ratio, PSNR/SSIM against the unpruned output (same
seed and noise), and warp error (temporal consistency) for unpruned / none / m-degree / noise-aware.

    python benchmarks/lipar_quality.py --out benchmarks/results

Clips: a static camera over a photograph, a camera pan, a scene cut (procedural, train/dataset.py),
and a clip recorded from Chromium's fake camera (benchmarks/data/chromium_fake_camera.mp4).
Warp error: Farneback optical flow between consecutive *source* frames (OpenCV) warps output t-1
onto t; the error is the mean absolute difference (0-255) over pixels where the flow also explains
the source (non-occluded). Lower is more consistent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strips import save_strip  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from engine.bench import psnr  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from engine.video_io import read_frames  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402
from train.dataset import Background, ClipParams, ObjectParams, Scene, render  # noqa: E402

VARIANTS = {
    "unpruned": LiparConfig(enabled=False),
    "none": LiparConfig(recovery="none"),
    "m-degree": LiparConfig(recovery="m-degree"),
    "noise-aware": LiparConfig(recovery="noise-aware"),
}
PROMPTS = {
    "static": "a yellow ball and a cyan square moving over an old brick wall",
    "pan": "a white ball moving right over grass, the camera panning left",
    "cut": "a red ball rolling left over a plain blue background",
    "chromium_fake_camera": "a green diamond over a gradient from white to black",
}
FAKE_CAMERA = Path(__file__).parent / "data" / "chromium_fake_camera.mp4"


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


def warp_error(out: list[np.ndarray], src: list[np.ndarray]) -> float:
    errors = []
    for t in range(1, len(out)):
        g0 = cv2.cvtColor(src[t - 1], cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(src[t], cv2.COLOR_RGB2GRAY)
        flow = cv2.calcOpticalFlowFarneback(g1, g0, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # t -> t-1
        h, w = g1.shape
        grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32) + flow
        warp_src = cv2.remap(src[t - 1], grid[..., 0], grid[..., 1], cv2.INTER_LINEAR)
        valid = np.abs(warp_src.astype(np.float32) - src[t].astype(np.float32)).mean(-1) < 20
        warp_out = cv2.remap(out[t - 1], grid[..., 0], grid[..., 1], cv2.INTER_LINEAR)
        diff = np.abs(warp_out.astype(np.float32) - out[t].astype(np.float32)).mean(-1)
        if valid.any():
            errors.append(float(diff[valid].mean()))
    return float(np.mean(errors))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def run(gen: StreamingGenerator, lipar: LiparConfig, source: list[np.ndarray], prompt: str):
    gen.set_lipar(lipar)
    gen.reset()
    gen.set_prompt(prompt)
    outs, masks, kept = [], [], []
    for frame in source:
        o = gen.step(frame)
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
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = p.parse_args()
    torch.set_grad_enabled(False)
    a.out.mkdir(parents=True, exist_ok=True)
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", size=(a.size, a.size))
    clips = procedural_clips(a.frames, a.size)
    if FAKE_CAMERA.is_file():
        clips["chromium_fake_camera"] = list(read_frames(FAKE_CAMERA, limit=a.frames))
    results = {}
    for name, source in clips.items():
        runs = {v: run(gen, cfg, source, PROMPTS[name]) for v, cfg in VARIANTS.items()}
        base = runs["unpruned"][0]
        row = {}
        for v, (outs, _, kept) in runs.items():
            row[v] = {
                "kept_ratio": float(np.mean(kept[1:])),
                "psnr_vs_unpruned": float(np.mean([min(psnr(o, b), 99.0) for o, b in zip(outs, base)])),
                "ssim_vs_unpruned": float(np.mean([ssim(o, b) for o, b in zip(outs, base)])),
                "warp_error": warp_error(outs, source),
            }
        results[name] = row
        pick = np.linspace(1, len(source) - 1, 6).astype(int)
        outs, masks, _ = runs["noise-aware"]
        save_strip(
            {
                "source": [source[i] for i in pick],
                "unpruned": [base[i] for i in pick],
                "LIPAR": [outs[i] for i in pick],
                "pruned (blue)": [overlay(outs[i], masks[i]) for i in pick],
            },
            a.out / f"lipar_{name}.png",
            f"LIPAR on tiny: {name}",
        )
        print(name, json.dumps(row, indent=None))
    cfg = gen.lipar
    meta = {
        "model": "tiny",
        "size": f"{a.size}x{a.size}",
        "frames": a.frames,
        "device": "cpu",
        "torch": torch.__version__,
        "tau_short": cfg.tau_short,
        "tau_long": cfg.tau_long,
        "command": "python " + " ".join(sys.argv),
    }
    (a.out / "lipar_quality.json").write_text(json.dumps({"meta": meta, "clips": results}, indent=1))
    lines = [
        "# LIPAR quality on `tiny`",
        "",
        f"Command: `{meta['command']}` · CPU · torch {meta['torch']} · {meta['size']}, {a.frames} frames per clip · "
        f"tau_short {cfg.tau_short}, tau_long {cfg.tau_long}",
        "",
        "| clip | variant | kept | PSNR vs unpruned (dB) | SSIM | warp error |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        for v, m in row.items():
            lines.append(
                f"| {name} | {v} | {m['kept_ratio']:.2f} | {m['psnr_vs_unpruned']:.1f} | "
                f"{m['ssim_vs_unpruned']:.3f} | {m['warp_error']:.2f} |"
            )
    lines += ["", *[f"![{n}](lipar_{n}.png)" for n in results]]
    (a.out / "lipar_quality.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
