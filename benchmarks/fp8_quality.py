"""What FP8 linear layers cost in output quality against bf16, on one CUDA GPU.

    python benchmarks/fp8_quality.py --out benchmarks/results/gpu_h200/fp8_quality.json [--text-encoder DIR]

For `tiny` (shipped weights) and `wan2.1-1.3b` (random weights): the same generator, source clip
(the bench's synthetic clip), prompt and noise seed, run once in bf16 and once per FP8 scaling
(`engine.fp8.quantize_linears` on a copy of the bf16 DiT). Eager execution: quality does not
depend on CUDA graphs. PSNR is from the total MSE over all output frames (and of the clean
latents, whose scale is the model's and not the random VAE's), never a mean of per-frame PSNRs.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.backends import EagerRunner  # noqa: E402
from engine.bench import PROMPT, synthetic_clip  # noqa: E402
from engine.fp8 import SCALINGS, quantize_linears  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402


def stream(gen: StreamingGenerator, chunks: list) -> tuple[np.ndarray, np.ndarray]:
    """All output frames (T, H, W, 3) uint8 and clean latent tokens (T, N, D) float32 of one run."""
    gen.reset()
    gen.set_prompt(PROMPT)
    frames, latents = [], []
    for chunk in chunks:
        frames.extend(gen.step(chunk).frames)
        latents.append(gen.previous_clean[0].float().cpu().numpy())
    return np.stack(frames), np.stack(latents)


def psnr_total(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def compare(model: str, size: tuple[int, int], latent_frames: int, random: bool, text_encoder: str | None) -> dict:
    gen = StreamingGenerator.from_pretrained(
        model,
        device="cuda",
        random_weights=random,
        size=size,
        backend="torch",
        lipar=LiparConfig(enabled=False),
        text_encoder_path=text_encoder,
    )
    per = gen.frames_per_step  # video frames per step(): a whole block
    clip = synthetic_clip(*size, latent_frames * per)
    chunks = [clip[i * per : (i + 1) * per] for i in range(latent_frames)]
    base = gen.dit
    ref_frames, ref_latents = stream(gen, chunks)
    peak = float(np.abs(ref_latents).max())
    out = {"model": model, "size": f"{size[0]}x{size[1]}", "weights": "random" if random else "shipped"}
    out["latent_frames"] = latent_frames
    for scaling in SCALINGS:
        # the generator's DiT and runner swapped for an FP8 copy; the cache and VAE are shared
        gen.dit = copy.deepcopy(base)
        quantize_linears(gen.dit, scaling)
        gen.runner = EagerRunner(gen.dit, gen.cache)
        frames, latents = stream(gen, chunks)
        rel = float(np.sqrt(((latents - ref_latents) ** 2).sum() / (ref_latents**2).sum()))
        out[scaling] = {
            "psnr_frames_db": psnr_total(frames, ref_frames, 255.0),
            "psnr_latents_db": psnr_total(latents, ref_latents, peak),
            "latent_rel_err": rel,
        }
        print(model, scaling, out[scaling], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--text-encoder", default=None, help="MiniLM folder for tiny (train/export_minilm.py)")
    p.add_argument("--latent-frames", type=int, default=16)
    a = p.parse_args()
    with torch.inference_mode():
        rows = [
            compare("tiny", (256, 256), a.latent_frames, False, a.text_encoder),
            compare("wan2.1-1.3b", (480, 832), a.latent_frames, True, None),
        ]
    result = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "command": "python " + " ".join(sys.argv),
        "reference": "bf16, same generator, clip, prompt and noise; PSNR from total MSE over the sequence",
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
