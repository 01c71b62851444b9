"""Measures of the trained `tiny` model: motion and colour following, fidelity, stability, speed.

Shared by `benchmarks/tiny_quality.py` (the committed evidence) and the tests, so both measure the
same thing; `python -m train.evaluate [--weights DIR] [--device cuda]` prints the headline figures
of a checkpoint as one JSON line, then the details (the training runs' check).

- Motion following (text-to-video): the centroid of the prompted colour's pixels moves >= 0.15 of
  the width the named way between the first and the last of 16 frames.
- Fidelity (video-to-video): a prompt that describes the source should reproduce it; PSNR of the
  output against the source from the total MSE over all frames of a clip.
- Colour following: does the named colour dominate the object's pixels? In text-to-video the object
  is the pixels far from the prompted flat background; in video-to-video it is where the source
  clip drew its object.
- Temporal stability: mean absolute change between consecutive output frames (0-255) where the
  picture should stand still (text-to-video: the background; video-to-video: where the source
  did not change).
- `dataset_motion` checks the training captions against the rendered motion the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time

import numpy as np
import torch

from engine.config import Schedule
from lipar.config import LiparConfig
from train.dataset import (
    COLORS,
    DIRECTIONS,
    HELDOUT_SEEDS_START,
    Background,
    ClipParams,
    ObjectParams,
    Scene,
    caption,
    object_masks,
    render,
    sample_clip,
)

_NAMES = list(COLORS)
EVAL_COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan"]
EVAL_PAIRS = [("red", "blue"), ("blue", "yellow"), ("yellow", "red"), ("green", "purple"), ("white", "orange")]
BRICK = Background("photo", photo="brick", view=(0.1, 0.1, 0.7))
_RGB = np.array([COLORS[n] for n in _NAMES], dtype=np.float32)  # (K, 3)
MOTION_TARGET = 0.15  # of the frame width in 16 frames, the target
# (colour, shape, direction, plain background): every direction twice, shapes and colours varied
MOTION_PROMPTS = [
    ("red", "ball", "right", "black"),
    ("blue", "ball", "left", "black"),
    ("yellow", "square", "down", "black"),
    ("green", "ball", "up", "white"),
    ("cyan", "square", "right", "black"),
    ("orange", "ball", "left", "blue"),
    ("pink", "diamond", "up", "black"),
    ("purple", "ball", "down", "white"),
]


def fidelity_clips(frames: int) -> list[ClipParams]:
    """Static-camera clips of one moving object, as a camera would see them; seeds only vary wording."""
    noise = Background("noise", ("green", "white"), noise_seed=5)
    stripes = Background("stripes", ("purple", "white"), period=0.3)
    grass = Background("photo", photo="grass", view=(0.2, 0.1, 0.6))
    scenes = [
        (noise, ObjectParams("ball", "red", "large", "right", "medium", (0.3, 0.5), True)),
        (BRICK, ObjectParams("square", "blue", "large", "left", "medium", (0.7, 0.4), True)),
        (stripes, ObjectParams("ball", "yellow", "medium", "down", "medium", (0.5, 0.3), True)),
        (grass, ObjectParams("triangle", "white", "large", "up", "slow", (0.4, 0.7), True)),
    ]
    return [ClipParams(seed=HELDOUT_SEEDS_START + i, frames=frames, scenes=(Scene(bg, (obj,)),))
            for i, (bg, obj) in enumerate(scenes)]  # fmt: skip


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


def color_centroid(frame: np.ndarray, color: str, background: str, min_pixels: int = 12) -> np.ndarray | None:
    """(x, y) in frame fractions of the pixels named `color` and far from the background; None if too few."""
    region = object_region(frame, background)
    region[region] = color_names(frame[region]) == _NAMES.index(color)
    if region.sum() < min_pixels:
        return None
    ys, xs = np.nonzero(region)
    return np.array([xs.mean() / frame.shape[1], ys.mean() / frame.shape[0]])


def displacement(first: np.ndarray | None, last: np.ndarray | None, direction: str) -> float | None:
    """Movement from `first` to `last` along the named direction, in frame fractions (None if unseen)."""
    if first is None or last is None:
        return None
    return float((last - first) @ np.asarray(DIRECTIONS[direction]))


def t2v_prompt(color: str, background: str, shape: str = "ball", direction: str = "right") -> str:
    return f"a {color} {shape} moving {direction} over a plain {background} background"


def _t2v(gen, prompt: str, frames: int) -> list[np.ndarray]:
    gen.reset()
    gen.set_prompt(prompt)
    return [gen.step(None).frames[-1] for _ in range(frames)]


OPPOSITE = {"right": "left", "left": "right", "up": "down", "down": "up"}


def motion_following(gen, frames: int = 16, prompts=MOTION_PROMPTS) -> dict:
    """Text-to-video: share of prompts whose object moves >= MOTION_TARGET the named way, and how far.

    Each prompt also runs with the opposite direction word and the same seed: `direction_contrast` is
    the mean of (displacement the named way) - (the opposite prompt's displacement that same way), in
    frame widths. A model that follows the words scores about twice its displacement (0.3 at the
    target); one whose motion follows the seed alone scores ~0, however often it happens to move the
    named way. Also the background flicker of the named runs (temporal stability): mean
    |frame_t - frame_t-1| over pixels that are background in both frames."""
    per_prompt, opposite, flicker = {}, {}, []
    for color, shape, direction, background in prompts:
        prompt, moved = t2v_prompt(color, background, shape, direction), {}
        for word in (direction, OPPOSITE[direction]):
            video = _t2v(gen, t2v_prompt(color, background, shape, word), frames)
            moved[word] = displacement(color_centroid(video[0], color, background),
                                       color_centroid(video[-1], color, background), direction)  # fmt: skip
            if word == direction:
                for a, b in zip(video, video[1:], strict=False):
                    still = ~object_region(a, background) & ~object_region(b, background)
                    if still.any():
                        flicker.append(np.abs(a.astype(np.float32) - b.astype(np.float32))[still].mean())
        per_prompt[prompt], opposite[prompt] = moved[direction], moved[OPPOSITE[direction]]
    hits = [m is not None and m >= MOTION_TARGET for m in per_prompt.values()]
    pairs = [(per_prompt[p], opposite[p]) for p in per_prompt if per_prompt[p] is not None and opposite[p] is not None]
    contrast = float(np.mean([a - b for a, b in pairs])) if pairs else None
    return {
        "rate": float(np.mean(hits)),
        "per_prompt": per_prompt,
        "opposite_word": opposite,
        "direction_contrast": contrast,
        "background_flicker": float(np.mean(flicker)),
    }


def sequence_psnr(output: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """PSNR (dB) from the total MSE over all frames (not a mean of per-frame PSNRs)."""
    diff = np.stack(output).astype(np.float64) - np.stack(reference).astype(np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-10)))


def fidelity(gen, frames: int = 16, clips: list[ClipParams] | None = None) -> dict:
    """Video-to-video with the source's own caption: sequence PSNR against the source per clip, and
    over all clips together (total MSE); the flicker where the source stands still.
    `clips` default to fidelity_clips(frames)."""
    per_clip, outputs, sources, flicker = {}, [], [], []
    for params in clips or fidelity_clips(frames):
        source = list(render([params], gen.height)[0].numpy())
        text = caption(params)
        gen.reset()
        gen.set_prompt(text)
        out = [gen.step(f).frames[-1] for f in source]
        per_clip[text] = sequence_psnr(out, source)
        outputs += out
        sources += source
        for t in range(1, frames):
            still = (source[t] == source[t - 1]).all(-1)
            flicker.append(np.abs(out[t].astype(np.float32) - out[t - 1].astype(np.float32))[still].mean())
    return {"psnr_db": sequence_psnr(outputs, sources), "per_clip": per_clip, "still_flicker": float(np.mean(flicker))}


def prompt_following_t2v(gen, colors: list[str], frames: int, background: str = "black") -> dict:
    """Fraction of generated frames whose object region is dominated by the prompted colour."""
    per_color = {}
    for color in colors:
        video = _t2v(gen, t2v_prompt(color, background), frames)
        per_color[color] = float(np.mean([dominant_color(f, object_region(f, background)) == color for f in video]))
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
        for frame, region in zip(video, masks, strict=True):
            out = gen.step(frame).frames[-1]
            hits += dominant_color(out, region) == dst
        per_pair[f"{src}->{dst}"] = hits / frames
    return {"rate": float(np.mean(list(per_pair.values()))), "per_pair": per_pair}


def prompt_following(gen, frames: int) -> dict:
    """Colour following: text-to-video, and video-to-video from a procedural and from a
    photograph-background clip, with the generator's LIPAR setting."""
    return {"t2v": prompt_following_t2v(gen, EVAL_COLORS, frames), **_colour_v2v(gen, frames)}


def _colour_v2v(gen, frames: int) -> dict:
    return {
        "v2v_procedural": prompt_following_v2v(gen, EVAL_PAIRS, frames),
        "v2v_photo": prompt_following_v2v(gen, EVAL_PAIRS, frames, BRICK, "an old brick wall"),
    }


def evaluate_v2v(gen, frames: int = 16) -> dict:
    """The video-to-video measures (fidelity, colour following) with the generator's LIPAR setting."""
    return {"fidelity": fidelity(gen, frames), **_colour_v2v(gen, frames)}


def evaluate_all(gen, frames: int = 16) -> dict:
    """Every measure: text-to-video once; video-to-video with LIPAR as set and with LIPAR off."""
    result = {"motion": motion_following(gen, frames), "t2v": prompt_following_t2v(gen, EVAL_COLORS, frames)}
    result |= evaluate_v2v(gen, frames)
    lipar = gen.lipar
    gen.set_lipar(dataclasses.replace(lipar, enabled=False))
    try:
        result |= {f"{k}_no_lipar": v for k, v in evaluate_v2v(gen, frames).items()}
    finally:
        gen.set_lipar(lipar)
    return result


def headline(result: dict) -> dict:
    """The one-line summary: a rate or a PSNR per measure."""
    return {k: round(v["rate"] if "rate" in v else v["psnr_db"], 4) for k, v in result.items()}


# ---------------------------------------------------------------------------------------- dataset check

_DIRECTION_WORDS = r"(up and left|up and right|down and left|down and right|up|down|left|right)"
_MOTION_PHRASE = re.compile(
    rf"(?:entering|coming in) from the (left|right|top|bottom)"
    rf"|(?:rolling|bouncing|moving|drifting|sliding|gliding) {_DIRECTION_WORDS}"
    r"|(sitting still|resting|standing still|not moving)"
    r"|(bouncing around|bouncing off the edges)"
)
_ENTERING = {"left": "right", "right": "left", "top": "down", "bottom": "up"}


def caption_motion(text: str, params: ClipParams) -> str:
    """What the caption says the main object does: a DIRECTIONS key, "still" or "bounce".

    Read from the words (the first motion phrase after the main object's colour and shape), not
    from `params`, so that it checks the captions."""
    main = params.main
    start = max(text.find(f"{main.color} {main.shape}"), text.find(f"{main.color} one"))
    match = _MOTION_PHRASE.search(text, max(start, 0))
    if match is None:
        raise ValueError(f"no motion phrase for the main object in {text!r}")
    entering, direction, still, _ = match.groups()
    if entering:
        return _ENTERING[entering]
    if direction:
        return direction.replace(" and ", "-")
    return "still" if still else "bounce"


def dataset_motion(seeds: range, frames: int = 16, size: int = 64) -> dict:
    """Rendered motion of each training clip's main object against its caption's words.

    Per caption direction: clips, mean displacement per frame along that direction (frame
    fractions; for "still": its size), and the share of clips moving the named way at >= half the
    slowest speed on average. Camera pans move objects on screen, so those clips are left out."""
    from train.dataset import SPEEDS

    floor = 0.5 * min(v for v in SPEEDS.values() if v > 0)
    moves: dict[str, list[float]] = {}
    for seed in seeds:
        params = sample_clip(seed, frames)
        if params.camera is not None:
            continue
        said = caption_motion(caption(params), params)
        masks = object_masks(params, size).numpy()[: params.scene_span(0)[1]]
        seen = [t for t in range(len(masks)) if masks[t].sum() >= 8]
        if len(seen) < 2:
            continue
        centre = [np.argwhere(masks[t]).mean(0)[::-1] / size for t in (seen[0], seen[-1])]  # (x, y)
        step = (centre[1] - centre[0]) / (seen[-1] - seen[0])
        moves.setdefault(said, []).append(
            float(step @ np.asarray(DIRECTIONS[said])) if said in DIRECTIONS else float(np.linalg.norm(step))
        )
    out = {}
    for said, values in sorted(moves.items()):
        v = np.asarray(values)
        agree = v >= floor if said in DIRECTIONS else v < floor if said == "still" else np.ones_like(v, bool)
        out[said] = {"clips": len(v), "per_frame": float(v.mean()), "agree": float(agree.mean())}
    return out


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

    p = argparse.ArgumentParser(description="Quality measures of a tiny checkpoint (prints JSON).")
    p.add_argument("--weights", default=None, help="folder with dit.safetensors and vae.safetensors (default: shipped)")
    p.add_argument("--device", default="auto")
    p.add_argument("--text-encoder", default=None, help="MiniLM folder (default: the installed package)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--v2v-timesteps", type=float, nargs="+", default=None,
                   help="try another video-to-video schedule, e.g. 500 250 (default: the config's)")  # fmt: skip
    p.add_argument("--v2v-shift", type=float, default=None)
    p.add_argument("--v2v-anchor", default=None, metavar="TOLERANCE|off",
                   help="video-to-video context anchoring (engine/anchor.py; default: the config's)")  # fmt: skip
    p.add_argument("--no-lipar", action="store_true", help="video-to-video unpruned (default: LIPAR on, as shipped)")
    p.add_argument("--lipar-dilation", type=int, default=None, help="keep-mask margin (tokens)")
    p.add_argument("--v2v-only", action="store_true", help="only the video-to-video measures (schedule sweeps)")
    a = p.parse_args(argv)
    if a.lipar_dilation is not None and a.lipar_dilation < 0:
        p.error(f"--lipar-dilation must be >= 0, got {a.lipar_dilation}")
    if a.frames < 2:
        p.error(f"--frames must be >= 2 (motion is measured from the first frame to the last), got {a.frames}")
    gen = StreamingGenerator.from_pretrained(
        "tiny", device=a.device, weights=a.weights, text_encoder_path=a.text_encoder
    )
    if a.no_lipar or a.lipar_dilation is not None:
        margin = {} if a.lipar_dilation is None else {"dilation": a.lipar_dilation}
        gen.set_lipar(LiparConfig(enabled=not a.no_lipar, **margin))
    if a.v2v_timesteps or a.v2v_shift:
        old = gen.cfg.v2v_schedule
        try:
            schedule = Schedule(tuple(a.v2v_timesteps or old.timesteps), a.v2v_shift or old.shift)
        except ValueError as e:
            p.error(str(e))
        gen.cfg = dataclasses.replace(gen.cfg, v2v_schedule=schedule)  # read at every step
    if a.v2v_anchor is not None:
        try:
            anchor = None if a.v2v_anchor == "off" else float(a.v2v_anchor)
            gen.cfg = dataclasses.replace(gen.cfg, v2v_anchor=anchor)
        except ValueError as e:
            p.error(f"--v2v-anchor takes a tolerance > 0 or 'off' ({e})")
    with torch.inference_mode():
        result = evaluate_v2v(gen, a.frames) if a.v2v_only else evaluate_all(gen, a.frames)
    setting = {"v2v_sigmas": gen.cfg.v2v_schedule.sigmas, "v2v_anchor": gen.cfg.v2v_anchor}
    setting |= {"lipar": gen.lipar.enabled, "dilation": gen.lipar.dilation}
    print(json.dumps(headline(result) | setting))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
