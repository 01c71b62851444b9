"""Where a pruned stream's error comes from: LIPAR against an oracle that computes every token in the
denoising steps (so the current frame's context is exact) but still restores the pruned outputs and
recovers their K/V in the cache pass, as LIPAR does. If the oracle drifts as much as LIPAR, the drift
comes from the restored outputs feeding later frames, not from attention recovery. A third run,
`perturbed_once`, is the unpruned stream with its noise changed once (by `--perturb` x a standard normal, at
the first measured frame): how long one error lasts in the stream, i.e. whether the errors LIPAR makes
every frame can pile up. A fourth, `other_seed`, is the unpruned stream with another noise seed: how far
the model's output is from itself when only its noise differs, the scale to read LIPAR's figure against.

    python benchmarks/lipar_drift_oracle.py --frames 48 --out benchmarks/results/lipar_drift_oracle.json
    python benchmarks/lipar_drift_oracle.py --frames 104 --out benchmarks/results/lipar_drift_horizon.json

Clip: the bench's synthetic clip (a disc over a texture, seed 0), shipped tiny model, CPU, fp32;
sequence PSNR vs the unpruned run over consecutive 8-frame windows after 8 warm-up frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import PROMPT, synthetic_clip  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from engine.quality import sequence_psnr  # noqa: E402
from engine.sampler import SeededNoise, add_noise, next_sigmas  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402
from lipar.prune import restore  # noqa: E402


class OracleContext(StreamingGenerator):
    """Denoising steps over all tokens; restoration and the cache pass as LIPAR's (video-to-video, one
    latent frame a block, as tiny runs)."""

    def denoise(self, t, source_tokens, keep_idx, pruned_idx, text_kv, on_clean=None):
        (keep,), (pruned,) = keep_idx, pruned_idx
        sigmas = self.cfg.v2v_schedule.sigmas
        x = add_noise(source_tokens.float(), self.noise_source((1, self.tokens, self.cfg.patch_dim)), sigmas[0])
        every = self.cache.block_token_index(self.all_idx)
        for sigma, sigma_next in zip(sigmas, next_sigmas(sigmas)):
            v = self.runner(x, self.positions(t, self.all_idx), self._timestep(sigma), text_kv, every, False)
            x = self.sampler.step(x, v.float(), sigma, sigma_next, self.noise_source)
        if pruned.numel():
            x = x[:, keep]
            self._recover(self._pruned_rope(t, pruned), pruned, None, self.cache.current_slots[0])
        clean = restore(x, keep, self.previous_clean) if pruned.numel() else x
        if on_clean is not None:  # the step's decode, as in StreamingGenerator.denoise
            on_clean(clean)
        write = self.cache.block_token_index(keep)
        self._cache_block(x, clean, source_tokens, keep, self.positions(t, keep), text_kv, write, None)
        return clean


def perturb_once(noise, call: int, eps: float):
    """A noise source that adds eps x N(0, 1) to the `call`-th draw (0-based) of `noise`, once."""
    calls = [0]

    def source(shape):
        n = noise(shape)
        if calls[0] == call:
            n = n + eps * torch.randn(n.shape, generator=torch.Generator().manual_seed(1)).to(n.device)
        calls[0] += 1
        return n

    return source


def windows(
    gen: StreamingGenerator, lipar: LiparConfig, clip: list, base: list | None, warmup: int, noise=None
) -> dict:
    """`noise`: called with the stream's noise source after the reset, returns the one to use instead."""
    gen.set_lipar(lipar)
    gen.reset()
    gen.set_prompt(PROMPT)
    if noise is not None:
        gen.noise_source = noise(gen.noise_source)
    steps = [gen.step(f) for f in clip]
    outs = [s.frames[-1] for s in steps]
    kept = float(np.mean([s.stats["kept_ratio"] for s in steps[warmup:]]))
    if base is None:
        return {"outs": outs}
    psnr = [sequence_psnr(outs[i : i + 8], base[i : i + 8]) for i in range(warmup, len(clip) - 7, 8)]
    return {"kept_ratio": kept, "psnr_per_8_frames": psnr}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--perturb", type=float, default=1e-2, help="size of the one-off noise change")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lipar_drift_oracle.json"))
    a = p.parse_args()
    torch.set_grad_enabled(False)
    clip = synthetic_clip(128, 128, a.frames, 0)
    result = {"command": "python " + " ".join(sys.argv), "torch": torch.__version__, "device": "cpu", "runs": {}}
    for name, cls in (("lipar", StreamingGenerator), ("oracle_context", OracleContext)):
        gen = cls.from_pretrained("tiny", device="cpu", size=(128, 128))
        base = windows(gen, LiparConfig(enabled=False), clip, None, a.warmup)["outs"]
        result["runs"][name] = windows(gen, LiparConfig(), clip, base, a.warmup)
        print(name, json.dumps(result["runs"][name]))
        if name == "lipar":  # one noise draw per frame (euler): the warmup-th is the first measured frame's
            variants = {
                "perturbed_once": lambda noise: perturb_once(noise, a.warmup, a.perturb),
                "other_seed": lambda noise: SeededNoise(noise.seed + 1, noise.device),
            }
            for variant, noise in variants.items():
                result["runs"][variant] = windows(gen, LiparConfig(enabled=False), clip, base, a.warmup, noise)
                print(variant, json.dumps(result["runs"][variant]))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
