"""Measures of the trained `tiny` model: prompt following, VAE reconstruction, speed.

Shared by `benchmarks/tiny_quality.py` (the committed evidence) and the tests, so both measure the
same thing; `python -m train.evaluate [--weights DIR] [--device cuda]` prints the three rates of a
checkpoint as JSON (the training runs' check). Prompt following: for a colour prompt, does the
named colour dominate the moving object's pixels? In text-to-video the object is found as the
pixels far from the prompted flat background; in video-to-video it is where the source clip drew
its object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from engine.config import Schedule
from lipar.config import LiparConfig
from train.dataset import COLORS, Background, ClipParams, ObjectParams, Scene, object_masks, render

_NAMES = list(COLORS)
EVAL_COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan"]
EVAL_PAIRS = [("red", "blue"), ("blue", "yellow"), ("yellow", "red"), ("green", "purple"), ("white", "orange")]
BRICK = Background("photo", photo="brick", view=(0.1, 0.1, 0.7))
_RGB = np.array([COLORS[n] for n in _NAMES], dtype=np.float32)  # (K, 3)


def color_names(pixels: np.ndarray) -> np.ndarray:
    """(M, 3) uint8 -> (M,) index of the nearest named colour (RGB distance)."""
    d = ((pixels[:, None, :].astype(np.float32) - _RGB[None]) ** 2).sum(-1)
    return d.argmin(1)


def dominant_color(frame: np.ndarray, region: np.ndarray, min_pixels: int = 12) -> str | None:
    """The named colour most of the region's pixels are nearest to; None if the region is too small."""
    pixels = frame[region]
    if len(pixels) < min_pixels:
        return None
    return _NAMES[np.bincount(color_names(pixels), minlength=len(_NAMES)).argmax()]


def object_region(frame: np.ndarray, background: str, threshold: float = 90.0) -> np.ndarray:
    """Pixels far from a flat background colour: bool (H, W)."""
    d = np.linalg.norm(frame.astype(np.float32) - np.array(COLORS[background], np.float32), axis=-1)
    return d > threshold


def t2v_prompt(color: str, background: str, shape: str = "ball") -> str:
    return f"a {color} {shape} moving right over a plain {background} background"


def prompt_following_t2v(gen, colors: list[str], frames: int, background: str = "black") -> dict:
    """Fraction of generated frames whose object region is dominated by the prompted colour."""
    per_color = {}
    for color in colors:
        gen.reset()
        gen.set_prompt(t2v_prompt(color, background))
        hits = 0
        for _ in range(frames):
            frame = gen.step(None).frames[-1]
            hits += dominant_color(frame, object_region(frame, background)) == color
        per_color[color] = hits / frames
    return {"rate": float(np.mean(list(per_color.values()))), "per_color": per_color}


def v2v_source(color: str, frames: int, size: int, background: Background | None = None) -> tuple[list, np.ndarray]:
    """A static-camera clip of one `color` ball moving right; returns (frames, object masks (T, H, W))."""
    obj = ObjectParams("ball", color, "large", "right", "medium", (0.3, 0.5), True)
    bg = background or Background("flat", ("black", "white"))
    params = ClipParams(seed=0, frames=frames, scenes=(Scene(bg, (obj,)),))
    video = render([params], size)[0].numpy()
    return list(video), object_masks(params, size).numpy()


def prompt_following_v2v(
    gen,
    pairs: list[tuple[str, str]],
    frames: int,
    background: Background | None = None,
    background_words: str = "a plain black background",
) -> dict:
    """For (source colour, prompted colour) pairs: fraction of frames whose source-object region is
    dominated by the prompted colour (restyling), measured on the generator's output."""
    per_pair = {}
    for src, dst in pairs:
        video, masks = v2v_source(src, frames, gen.height, background)
        gen.reset()
        gen.set_prompt(f"a {dst} ball moving right over {background_words}")
        hits = 0
        for frame, region in zip(video, masks):
            out = gen.step(frame).frames[-1]
            hits += dominant_color(out, region) == dst
        per_pair[f"{src}->{dst}"] = hits / frames
    return {"rate": float(np.mean(list(per_pair.values()))), "per_pair": per_pair}


def prompt_following(gen, frames: int) -> dict:
    """The three measures the model card reports: text-to-video, and video-to-video from a procedural
    and from a photograph-background clip."""
    return {
        "t2v": prompt_following_t2v(gen, EVAL_COLORS, frames),
        "v2v_procedural": prompt_following_v2v(gen, EVAL_PAIRS, frames),
        "v2v_photo": prompt_following_v2v(gen, EVAL_PAIRS, frames, BRICK, "an old brick wall"),
    }


def generation_fps(gen, frames: int, source: list | None = None, warmup: int = 3) -> float:
    """Video frames per second of the generator, wall clock, after a few warm-up frames."""
    gen.reset()
    for i in range(warmup):
        gen.step(None if source is None else source[i % len(source)])
    start = time.perf_counter()
    for i in range(frames):
        gen.step(None if source is None else source[(warmup + i) % len(source)])
    if gen.device.type == "cuda":
        torch.cuda.synchronize()
    return frames * gen.frames_per_latent / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    from engine.generator import StreamingGenerator

    p = argparse.ArgumentParser(description="Colour-prompt following of a tiny checkpoint (prints JSON).")
    p.add_argument("--weights", default=None, help="folder with dit.safetensors and vae.safetensors (default: shipped)")
    p.add_argument("--device", default="auto")
    p.add_argument("--text-encoder", default=None, help="MiniLM folder (default: the installed package)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--v2v-timesteps", type=float, nargs="+", default=None,
                   help="try another video-to-video schedule, e.g. 500 250 (default: the config's)")  # fmt: skip
    p.add_argument("--v2v-shift", type=float, default=None)
    p.add_argument("--no-lipar", action="store_true", help="video-to-video unpruned (default: LIPAR on, as shipped)")
    p.add_argument("--lipar-dilation", type=int, default=None, help="LIPAR keep-mask margin in tokens (default 1)")
    a = p.parse_args(argv)
    if a.lipar_dilation is not None and a.lipar_dilation < 0:
        p.error(f"--lipar-dilation must be >= 0, got {a.lipar_dilation}")
    gen = StreamingGenerator.from_pretrained(
        "tiny", device=a.device, weights=a.weights, text_encoder_path=a.text_encoder
    )
    if a.no_lipar or a.lipar_dilation is not None:
        gen.set_lipar(LiparConfig(enabled=not a.no_lipar, dilation=1 if a.lipar_dilation is None else a.lipar_dilation))
    if a.v2v_timesteps or a.v2v_shift:
        old = gen.cfg.v2v_schedule
        try:
            schedule = Schedule(tuple(a.v2v_timesteps or old.timesteps), a.v2v_shift or old.shift)
        except ValueError as e:
            p.error(str(e))
        gen.cfg = dataclasses.replace(gen.cfg, v2v_schedule=schedule)  # read at every step
    result = prompt_following(gen, a.frames)
    setting = {"v2v_sigmas": gen.cfg.v2v_schedule.sigmas, "lipar": gen.lipar.enabled, "dilation": gen.lipar.dilation}
    print(json.dumps({k: v["rate"] for k, v in result.items()} | setting))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
