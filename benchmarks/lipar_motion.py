"""Motion-compensated LIPAR and text-to-video pruning against plain LIPAR and the unpruned stream.

    python benchmarks/lipar_motion.py --out benchmarks/results/lipar_motion
    python benchmarks/lipar_motion.py --clips pan real --frames 16 --motion-lipar motion=translation --out /tmp/m

Clips (128x128, shipped `tiny`): `pan`, `tilt` (train/dataset.py's camera option: the whole scene moves
1.28 px per frame), `zoom` (the background zooms in 1 % per frame), `static` (a still camera: motion
compensation must change nothing there), `real` (benchmarks/data/bikes_tilt_cut.mp4: real footage, a
slowly tilting camera and one cut) and `t2v` (text-to-video, no source). Variants: `unpruned`, `plain`
(LiparConfig() with --lipar) and `motion` (plain with --motion-lipar; for `t2v`: plain with t2v=true).
Every run starts from a reset with the same seed, so runs differ only by what LIPAR skipped.

Figures (engine/quality.py): kept ratio (mean over the frames after the first), fps (from the mean
step time; the CPU is shared with other work, so compare variants of one run only), sequence PSNR vs
the unpruned output (total MSE over all frames), warp error (temporal consistency along the source's
flow), and the camera motion's cost: estimation plus every warp (mask state, clean tokens, K/V), timed
around those calls, as a share of the frame's time. Writes OUT/lipar_motion.json (with the command),
OUT/lipar_motion.md, and a strip per clip: OUT/lipar_motion_<clip>.png (source with the measured motion
as an arrow, unpruned, plain, motion-compensated, and the mask: pruned in place blue, moved orange).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipar_sweep import lipar_override  # noqa: E402
from strips import save_strip  # noqa: E402

from engine.generator import StreamingGenerator  # noqa: E402
from engine.quality import sequence_metrics  # noqa: E402
from engine.video_io import read_frames  # noqa: E402
from train.dataset import Background, ClipParams, ObjectParams, Scene, render  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
REAL = DATA / "bikes_tilt_cut.mp4"
CLIPS = ("pan", "tilt", "zoom", "static", "real", "t2v")
PROMPTS = {
    "pan": "a yellow ball over grass, the camera panning left",
    "tilt": "a yellow ball over an old brick wall, the camera panning up",
    "zoom": "a yellow ball over an old brick wall, the background slowly zooming in",
    "static": "a yellow ball over an old brick wall",
    "real": "a street with cars and a fence, the camera panning",
    "t2v": "a red ball rolling left over a plain blue background",
}


def source_clip(name: str, frames: int, size: int) -> list[np.ndarray] | None:
    """The clip's source frames (None for text-to-video)."""
    if name == "t2v":
        return None
    if name == "real":
        return list(read_frames(REAL, limit=frames))
    grass = Background("photo", photo="grass", view=(0.2, 0.2, 0.6))
    brick = Background("photo", photo="brick", view=(0.1, 0.1, 0.7))
    zooming = dataclasses.replace(brick, zoom=0.01)
    ball = ObjectParams("ball", "yellow", "medium", "right", "slow", (0.3, 0.4), True)
    still = dataclasses.replace(ball, speed="still")
    params = {
        "pan": ClipParams(0, frames, (Scene(grass, (ball,)),), camera="left"),
        "tilt": ClipParams(0, frames, (Scene(brick, (ball,)),), camera="up"),
        "zoom": ClipParams(0, frames, (Scene(zooming, (still,)),)),
        "static": ClipParams(0, frames, (Scene(brick, (ball,)),)),
    }[name]
    return list(render([params], size)[0].numpy())


class MotionTimer:
    """Wall time spent in the camera-motion calls of one generator (estimate and every warp)."""

    def __init__(self, gen: StreamingGenerator) -> None:
        self.ms = 0.0
        self.gen = gen
        motion = gen.motion
        for name in ("observe", "tokens", "kv"):
            setattr(motion, name, self._timed(getattr(motion, name)))
        gen.mask._follow = self._timed(gen.mask._follow)

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ms += (time.perf_counter() - start) * 1e3

        return wrapper


_GEN: dict[int, StreamingGenerator] = {}


def run(job: tuple) -> dict:
    """One (clip, variant) stream: its frames, masks, kept ratios, timings, motions."""
    clip, variant, lipar, frames, size, threads = job
    torch.set_num_threads(threads)
    if size not in _GEN:
        _GEN[size] = StreamingGenerator.from_pretrained("tiny", device="cpu", size=(size, size))
    gen = _GEN[size]
    source = source_clip(clip, frames, size)
    gen.set_lipar(lipar)
    gen.reset()
    gen.set_prompt(PROMPTS[clip])
    timer = MotionTimer(gen)
    outs, masks, moved, kept, step_ms, motions = [], [], [], [], [], []
    for i in range(frames):
        start = time.perf_counter()
        out = gen.step(None if source is None else source[i])
        step_ms.append((time.perf_counter() - start) * 1e3)
        outs.append(out.frames[-1])
        masks.append(out.mask)
        kept.append(out.stats["kept_ratio"])
        motion = out.stats.get("motion")
        motions.append(motion)
        moved.append(bool(motion and motion["used"]))
    return {
        "clip": clip,
        "variant": variant,
        "outputs": outs,
        "masks": masks,
        "moved": moved,
        "kept": kept,
        "step_ms": step_ms,
        "motion_ms": timer.ms,
        "motions": motions,
    }


def overlay(frame: np.ndarray, keep: np.ndarray, moved: bool) -> np.ndarray:
    """Pruned tokens tinted over the output: blue where restored in place, orange where moved with the camera."""
    scale = frame.shape[0] // keep.shape[0]
    pruned = np.kron(~keep, np.ones((scale, scale), bool))
    colour = np.array([255, 140, 0]) if moved else np.array([30, 80, 255])
    out = frame.astype(np.float32)
    out[pruned] = out[pruned] * 0.45 + colour * 0.55
    return out.astype(np.uint8)


def with_arrow(frame: np.ndarray, motion: dict | None) -> np.ndarray:
    """The source frame with the measured motion drawn from its centre, 8x longer to be visible."""
    import cv2

    out = np.ascontiguousarray(frame.copy())
    if motion:
        h, w = frame.shape[:2]
        c = (w // 2, h // 2)
        tip = (int(c[0] + 8 * motion["dx"] * w), int(c[1] + 8 * motion["dy"] * h))
        colour = (255, 140, 0) if motion["used"] else (160, 160, 160)
        cv2.arrowedLine(out, c, tip, colour, 2, tipLength=0.3)
        if abs(motion["scale"] - 1) > 1e-3:
            cv2.putText(out, f"x{motion['scale']:.3f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", nargs="+", default=list(CLIPS), choices=CLIPS)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--lipar", nargs="*", default=[], metavar="KEY=VALUE", help="LiparConfig fields of plain")
    p.add_argument("--motion-lipar", nargs="*", default=["motion=similarity"], metavar="KEY=VALUE",
                   help="fields added for the motion variant (default motion=similarity)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="streams run in parallel processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lipar_motion"))
    a = p.parse_args(argv)
    plain = lipar_override(a.lipar)
    variants = {
        "unpruned": dataclasses.replace(plain, enabled=False),
        "plain": plain,
        "motion": lipar_override(a.motion_lipar, plain),
        "t2v": dataclasses.replace(plain, t2v=True),
    }
    jobs = []
    for clip in a.clips:
        names = ("unpruned", "plain", "t2v") if clip == "t2v" else ("unpruned", "plain", "motion")
        jobs += [(clip, v, variants[v], a.frames, a.size, a.threads) for v in names]
    if a.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(a.jobs) as pool:
            results = pool.map(run, jobs, chunksize=1)
    else:
        results = [run(job) for job in jobs]
    runs = {(r["clip"], r["variant"]): r for r in results}
    a.out.mkdir(parents=True, exist_ok=True)
    table = {}
    for clip in a.clips:
        base = runs[(clip, "unpruned")]
        source = source_clip(clip, a.frames, a.size)
        row = {}
        for (c, v), r in runs.items():
            if c != clip:
                continue
            total_ms = float(np.sum(r["step_ms"]))
            row[v] = {
                "kept_ratio": float(np.mean(r["kept"][1:])),
                "kept_ratio_frames": r["kept"],
                "moved_frames": int(np.sum(r["moved"])),
                "fps": 1000.0 * a.frames / total_ms,
                "motion_ms_per_frame": r["motion_ms"] / a.frames,
                "motion_share_of_frame": r["motion_ms"] / total_ms,
                "motions": r["motions"],
                **sequence_metrics(r["outputs"], base["outputs"], source),
            }
        table[clip] = row
        pick = np.linspace(1, a.frames - 1, 6).astype(int)
        other = "t2v" if clip == "t2v" else "motion"
        comp = runs[(clip, other)]
        rows = {}
        if source is not None:
            rows["source (arrow: motion x8)"] = [with_arrow(source[i], comp["motions"][i]) for i in pick]
        rows["unpruned"] = [base["outputs"][i] for i in pick]
        rows["plain LIPAR"] = [runs[(clip, "plain")]["outputs"][i] for i in pick]
        rows["motion-compensated" if other == "motion" else "text-to-video pruning"] = [
            comp["outputs"][i] for i in pick
        ]
        rows["pruned: blue in place, orange moved"] = [
            overlay(comp["outputs"][i], comp["masks"][i], comp["moved"][i]) for i in pick
        ]
        save_strip(rows, a.out / f"lipar_motion_{clip}.png", f"LIPAR on tiny: {clip} ({other} vs plain)")
    meta = {
        "model": "tiny",
        "size": f"{a.size}x{a.size}",
        "frames": a.frames,
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads_per_run": a.threads,
        "parallel_runs": a.jobs,
        "plain": dataclasses.asdict(plain),
        "motion": dataclasses.asdict(variants["motion"]),
        "note": "CPU timings: other work shared the cores; compare variants of one run only",
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
    }
    result = {"meta": meta, "clips": table}
    (a.out / "lipar_motion.json").write_text(json.dumps(result, indent=1))
    write_table(result, a.out / "lipar_motion.md")
    return result


def write_table(result: dict, path: Path) -> None:
    meta = result["meta"]
    lines = [
        "# Motion-compensated LIPAR and text-to-video pruning on `tiny`",
        "",
        f"Command: `{meta['command']}` · CPU ({meta['cpu']}, shared) · torch {meta['torch']} · {meta['size']}, "
        f"{meta['frames']} frames per clip",
        "",
        "| clip | variant | kept | moved frames | fps | PSNR vs unpruned (dB) | warp error | motion ms/frame (share) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clip, row in result["clips"].items():
        for v, m in row.items():
            warp = "" if m.get("warp_error") is None else f"{m['warp_error']:.2f}"
            lines.append(
                f"| {clip} | {v} | {m['kept_ratio']:.2f} | {m['moved_frames']} | {m['fps']:.1f} | "
                f"{m['psnr_vs_baseline']:.1f} | {warp} | {m['motion_ms_per_frame']:.2f} "
                f"({100 * m['motion_share_of_frame']:.1f} %) |"
            )
    lines += ["", *[f"![{c}](lipar_motion_{c}.png)" for c in result["clips"]]]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
