"""Evidence for the shipped `tiny` model: samples, VAE reconstruction, prompt following, speed.

    python benchmarks/tiny_quality.py --out benchmarks/results

Writes tiny_quality.{md,json} and PNG strips (text-to-video prompts; video-to-video from a
procedural clip and from a photograph-background clip). Runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strips import save_strip  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from engine.generator import StreamingGenerator  # noqa: E402
from train.evaluate import BRICK, generation_fps, prompt_following, v2v_source  # noqa: E402
from train.train_vae import VaeTrainConfig, evaluate_psnr  # noqa: E402

T2V_PROMPTS = [
    "a red ball moving right over a plain black background",
    "a yellow square drifting up over blue and white vertical stripes",
    "a white triangle moving left over grass",
    "two balls, a pink one and a cyan one, bouncing over a checkered black and white floor",
]


def t2v_frames(gen: StreamingGenerator, prompt: str, frames: int) -> list[np.ndarray]:
    gen.reset()
    gen.set_prompt(prompt)
    return [gen.step(None).frames[-1] for _ in range(frames)]


def v2v_frames(gen: StreamingGenerator, prompt: str, source: list[np.ndarray]) -> list[np.ndarray]:
    gen.reset()
    gen.set_prompt(prompt)
    return [gen.step(f).frames[-1] for f in source]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--frames", type=int, default=16)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    a.out.mkdir(parents=True, exist_ok=True)
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu")
    pick = list(range(0, a.frames, max(a.frames // 8, 1)))

    rows = {pr[:48]: [f for i, f in enumerate(t2v_frames(gen, pr, a.frames)) if i in pick] for pr in T2V_PROMPTS}
    save_strip(rows, a.out / "tiny_t2v.png", "tiny, text-to-video, 128x128 (every other frame)")
    for name, background, words in (
        ("procedural", None, "a plain black background"),
        ("photo", BRICK, "an old brick wall"),
    ):
        source, _ = v2v_source("red", a.frames, 128, background)
        rows = {"source (red ball)": [source[i] for i in pick]}
        for dst in ("blue", "yellow"):
            prompt = f"a {dst} ball moving right over {words}"
            rows[prompt[:48]] = [f for i, f in enumerate(v2v_frames(gen, prompt, source)) if i in pick]
        save_strip(rows, a.out / f"tiny_v2v_{name}.png", f"tiny, video-to-video ({name} source), 128x128")

    start = time.time()
    follow = prompt_following(gen, a.frames)
    print("prompt following", json.dumps({k: v["rate"] for k, v in follow.items()}), f"{time.time() - start:.0f}s")
    vae_cfg = VaeTrainConfig(eval_clips=32, eval_frames=4)
    vae_psnr = evaluate_psnr(gen.vae, vae_cfg, torch.device("cpu"))
    source, _ = v2v_source("red", 24, 128)
    speed = {
        "t2v_fps_cpu_128": generation_fps(gen, 24),
        "v2v_fps_cpu_128": generation_fps(gen, 20, source),
        "threads": torch.get_num_threads(),
    }
    params = {
        "dit": sum(p.numel() for p in gen.dit.parameters()),
        "vae": sum(p.numel() for p in gen.vae.parameters()),
    }
    result = {
        "command": "python " + " ".join(sys.argv),
        "device": "cpu",
        "torch": torch.__version__,
        "params": params,
        "vae_psnr_db": {str(k): v for k, v in vae_psnr.items()},
        "prompt_following": follow,
        "speed": speed,
    }
    (a.out / "tiny_quality.json").write_text(json.dumps(result, indent=1))
    (a.out / "tiny_quality.md").write_text(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "prompt_following"}, indent=1))


def markdown(result: dict) -> str:
    """The JSON as a page a reader can take in: the issue's targets next to each measure, the strips."""
    follow, speed, psnr = result["prompt_following"], result["speed"], result["vae_psnr_db"]
    met = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    lines = [
        "# The shipped `tiny` model",
        "",
        f"Command: `{result['command']}` · CPU ({speed['threads']} threads) · torch {result['torch']} · "
        f"DiT {result['params']['dit'] / 1e6:.2f} M, VAE {result['params']['vae'] / 1e6:.2f} M parameters",
        "",
        "| measure | value | target |",
        "|---|---|---|",
    ]
    for size, value in psnr.items():
        lines.append(f"| VAE held-out PSNR, {size}×{size} | {value:.1f} dB | ≥ 30 dB: {met(value >= 30)} |")
    for key, label in (("t2v", "text-to-video"), ("v2v_procedural", "video-to-video, plain background"),
                       ("v2v_photo", "video-to-video, brick-wall photo")):  # fmt: skip
        rate = follow[key]["rate"]
        lines.append(
            f"| colour-prompt following, {label} | {100 * rate:.1f} % of frames | ≥ 80 %: {met(rate >= 0.8)} |"
        )
    t2v_fps = speed["t2v_fps_cpu_128"]
    lines.append(f"| text-to-video speed, 128×128 | {t2v_fps:.1f} fps | ≥ 4 fps: {met(t2v_fps >= 4)} |")
    lines.append(f"| video-to-video speed, 128×128 (LIPAR on) | {speed['v2v_fps_cpu_128']:.1f} fps | |")
    lines += ["", "GPU speed (256×256, target ≥ 200 fps) is measured by `app.py bench` on the device: "
              "`gpu_h200/bench_tiny256/bench.json`.", ""]  # fmt: skip
    lines += ["Per colour (text-to-video) and per source → prompt pair (video-to-video):", ""]
    for key, result_part in follow.items():
        parts = result_part.get("per_color") or result_part.get("per_pair")
        lines.append(f"- {key}: " + ", ".join(f"{name} {100 * v:.0f} %" for name, v in parts.items()))
    lines += ["", "![text-to-video](tiny_t2v.png)", "![video-to-video, procedural](tiny_v2v_procedural.png)",
              "![video-to-video, photo](tiny_v2v_photo.png)", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
