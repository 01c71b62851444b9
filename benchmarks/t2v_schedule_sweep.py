"""Text-to-video schedules (and the sampler) of the shipped `tiny` model against motion following, on more
prompts than train.evaluate's eight (which come first): the figure the T2V schedule in engine/config.py is chosen by.

    python benchmarks/t2v_schedule_sweep.py --out benchmarks/results/tiny_t2v_schedule.json

CPU, 16 frames a prompt; a prompt counts when its object moves >= 0.15 of the width the named way.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import Schedule  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from engine.sampler import build_sampler  # noqa: E402
from train.evaluate import MOTION_PROMPTS, MOTION_TARGET, motion_following  # noqa: E402

# twelve more (colour, shape, direction, plain background), none of them in MOTION_PROMPTS
EXTRA_PROMPTS = [
    (c, s, d, "black")
    for (c, s), d in zip(
        itertools.product(["red", "blue", "green", "yellow"], ["ball", "square"]),
        ["left", "up", "down", "right", "up", "left", "right", "up"],
        strict=True,
    )
] + [(c, "ball", d, "white") for c, d in [("red", "up"), ("blue", "down"), ("purple", "left"), ("orange", "right")]]


def variants(shipped: Schedule, sampler: str) -> dict[str, tuple[Schedule, str]]:
    """(schedule, sampler) per run; the shipped pair first."""
    other = "renoise" if sampler == "euler" else "euler"
    return {
        f"shipped ({len(shipped.timesteps)} steps, shift {shipped.shift:g}, {sampler})": (shipped, sampler),
        "8 steps, shift 1": (Schedule(shipped.timesteps, 1.0), sampler),
        "8 steps, shift 6": (Schedule(shipped.timesteps, 6.0), sampler),
        "4 steps, shift 3": (Schedule((1000.0, 750.0, 500.0, 250.0), 3.0), sampler),
        f"shipped schedule, {other} sampler": (shipped, other),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny_t2v_schedule.json"))
    a = p.parse_args(argv)
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu")
    prompts = MOTION_PROMPTS + EXTRA_PROMPTS
    result = {"command": "python " + " ".join(sys.argv), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "prompts": len(prompts), "runs": {}}  # fmt: skip
    for name, (schedule, sampler) in variants(gen.cfg.t2v_schedule, gen.cfg.sampler).items():
        gen.cfg = dataclasses.replace(gen.cfg, t2v_schedule=schedule)  # read at every step
        gen.sampler = build_sampler(sampler)
        start = time.time()
        with torch.inference_mode():
            motion = motion_following(gen, a.frames, prompts)
        moved = list(motion["per_prompt"].values())
        hits = [m is not None and m >= MOTION_TARGET for m in moved]
        run = {"sigmas": schedule.sigmas, "sampler": sampler, "rate": motion["rate"],
               "eval_prompts_hit": sum(hits[: len(MOTION_PROMPTS)]),
               "background_flicker": motion["background_flicker"], "per_prompt": motion["per_prompt"],
               "seconds": time.time() - start}  # fmt: skip
        result["runs"][name] = run
        print(f"{name}: {run['rate']:.2f} of {len(moved)} prompts, {run['eval_prompts_hit']} of the eval's 8")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
