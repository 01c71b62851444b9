"""The `generate` job: one generator, one loop, an MP4 out (the CLI only parses arguments)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from tqdm import tqdm

from engine.config import get_config
from engine.generator import StreamingGenerator
from engine.text import validate_prompt
from engine.video_io import VideoWriter, read_frames

log = logging.getLogger(__name__)


def generate_video(
    model: str,
    prompt: str,
    frames: int,
    out: Path,
    source: str | None = None,
    device: str = "auto",
    seed: int = 0,
    size: tuple[int, int] | None = None,
    weights: str | None = None,
    random_weights: bool = False,
    text_encoder: str | None = None,
    lipar=None,
    fps: int = 16,
    vae: str | None = None,
    window: str | None = None,
    sampler: str | None = None,
) -> dict:
    """Write exactly `frames` video frames to `out` (H.264 MP4). Returns summary stats."""
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must be an .mp4 file, got {out}")
    validate_prompt(prompt)
    per = get_config(model).frames_per_step  # video frames in and out per step (a block)
    steps = math.ceil(frames / per)
    sources = None
    if source is not None:  # read the source before loading anything heavy: a bad file fails fast
        sources = list(read_frames(source, limit=steps * per))
        if len(sources) < steps * per:
            raise ValueError(f"source {source} has {len(sources)} frames, fewer than the {frames} asked for (--frames)")
    gen = StreamingGenerator.from_pretrained(
        model,
        device=device,
        lipar=lipar,
        random_weights=random_weights,
        size=size,
        seed=seed,
        weights=weights,
        text_encoder_path=text_encoder,
        vae_path=vae,
        window=window,
        sampler=sampler,
    )
    gen.set_prompt(prompt)
    kept, written, i = [], 0, 0
    with VideoWriter(out, fps) as writer, tqdm(total=frames, desc="generating", unit="frame") as bar:
        while written < frames:
            chunk = None
            if sources is not None:  # a TAEHV release drops the stream's first frames: the last chunk is held
                chunk = sources[i * per : (i + 1) * per] if i < steps else sources[-per:]
            result = gen.step(chunk)
            kept.append(result.stats["kept_ratio"])
            for frame in result.frames[: frames - written]:
                writer.write(frame)
                written += 1
                bar.update()
            i += 1
    summary = {"frames": written, "kept_ratio_mean": sum(kept) / len(kept), "out": str(out)}
    log.info("wrote %d frames to %s (mean kept ratio %.2f)", written, out, summary["kept_ratio_mean"])
    return summary
