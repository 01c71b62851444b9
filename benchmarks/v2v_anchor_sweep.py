"""Video-to-video source anchoring of the context (engine/anchor.py): fidelity against colour following.

    python benchmarks/v2v_anchor_sweep.py --out benchmarks/results [--tolerances off,0.2,0.4] [--no-lipar]

For each tolerance, on the shipped `tiny` (LIPAR as shipped unless --no-lipar): fidelity (video-to-video
with the source's own caption, sequence PSNR against the source) on train.evaluate's four clips and on
held-out static-camera clips drawn as the training set draws them (seeds no training run saw), the
flicker where the source stands still, and colour following of a differing prompt (plain background and
brick-wall photo as train.evaluate measures it, and five more photographs). Writes tiny_v2v_anchor.json
and .png. Runs on the CPU (about a minute a tolerance).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.generator import StreamingGenerator  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402
from train.dataset import HELDOUT_SEEDS_START, PHOTOS, Background, sample_clip  # noqa: E402
from train.evaluate import EVAL_PAIRS, evaluate_v2v, fidelity, prompt_following_v2v  # noqa: E402

# held-out clips for the second fidelity set: far from train.evaluate's own seeds
OTHER_SEEDS_START = HELDOUT_SEEDS_START + 50_000
# restyling over more photographs than train.evaluate's brick wall (the anchor keeps what agrees with
# the source, and a busy photo agrees with more of a restyled output than a plain background)
OTHER_PHOTOS = ("grass", "gravel", "coins", "moon", "cat")


def other_clips(count: int, frames: int) -> list:
    """The first `count` static-camera clips of one scene from the held-out seeds."""
    clips, seed = [], OTHER_SEEDS_START
    while len(clips) < count:
        params = sample_clip(seed, frames)
        if params.static_camera and len(params.scenes) == 1:
            clips.append(params)
        seed += 1
    return clips


def parse_tolerances(text: str) -> list[float | None]:
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = None if item == "off" else float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"tolerances are numbers > 0 or 'off', got {item!r}") from None
        if value is not None and not value > 0:
            raise argparse.ArgumentTypeError(f"tolerances are numbers > 0 or 'off', got {item!r}")
        out.append(value)
    return out


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["tolerance"] or 0.0 for r in runs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(x, [r["fidelity_db"] for r in runs], "o-", label="train.evaluate's 4 clips")
    a.plot(x, [r["fidelity_other_db"] for r in runs], "s-", label="other held-out static-camera clips")
    a.axhline(24, color="grey", ls=":", label="issue 16 target")
    a.set(xlabel="anchor tolerance (0 = off)", ylabel="PSNR vs source, source's caption (dB)", title="fidelity")
    a.legend(fontsize=8)
    b.plot(x, [100 * r["colour_procedural"] for r in runs], "o-", label="plain background")
    b.plot(x, [100 * r["colour_photo"] for r in runs], "s-", label="brick-wall photo")
    for name in OTHER_PHOTOS:
        b.plot(x, [100 * r["colour_other_photos"][name] for r in runs], ".--", lw=0.8, label=f"{name} photo")
    b.axhline(80, color="grey", ls=":", label="issue 16 target")
    b.set(xlabel="anchor tolerance (0 = off)", ylabel="% of frames in the prompt's colour", title="restyling")
    b.set_ylim(0, 105)
    b.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tolerances", type=parse_tolerances, default=parse_tolerances("off,0.2,0.3,0.4,0.5,0.6"))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--other-clips", type=int, default=8)
    p.add_argument("--no-lipar", action="store_true")
    a = p.parse_args(argv)
    if a.frames < 2 or a.other_clips < 1:
        p.error("--frames must be >= 2 and --other-clips >= 1")
    torch.set_num_threads(2)
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu")
    if a.no_lipar:
        gen.set_lipar(LiparConfig(enabled=False))
    shipped = gen.cfg
    others = other_clips(a.other_clips, a.frames)
    runs = []
    for tolerance in tqdm(a.tolerances, desc="tolerances"):
        gen.cfg = dataclasses.replace(shipped, v2v_anchor=tolerance)  # read at every step
        start = time.perf_counter()
        with torch.inference_mode():
            result = evaluate_v2v(gen, a.frames)
            other = fidelity(gen, a.frames, others)
            photos = {}
            for name in OTHER_PHOTOS:
                background = Background("photo", photo=name, view=(0.1, 0.1, 0.7))
                words = PHOTOS[name].phrases[0]
                photos[name] = prompt_following_v2v(gen, EVAL_PAIRS, a.frames, background, words)["rate"]
        runs.append(
            {
                "tolerance": tolerance,
                "fidelity_db": result["fidelity"]["psnr_db"],
                "fidelity_other_db": other["psnr_db"],
                "still_flicker": result["fidelity"]["still_flicker"],
                "still_flicker_other": other["still_flicker"],
                "colour_procedural": result["v2v_procedural"]["rate"],
                "colour_photo": result["v2v_photo"]["rate"],
                "colour_other_photos": photos,
                "details": {**result, "fidelity_other": other},
                "seconds": time.perf_counter() - start,
            }
        )
        r = runs[-1]
        tqdm.write(
            f"tolerance {tolerance}: fidelity {r['fidelity_db']:.2f} dB (other clips {r['fidelity_other_db']:.2f}), "
            f"colour {r['colour_procedural']:.0%} / {r['colour_photo']:.0%} (other photos: lowest "
            f"{min(photos.values()):.0%}), flicker {r['still_flicker']:.2f}"
        )
    report = {
        "command": "python benchmarks/v2v_anchor_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": "cpu",
        "torch": torch.__version__,
        "lipar": gen.lipar.enabled,
        "v2v_sigmas": shipped.v2v_schedule.sigmas,
        "shipped_tolerance": shipped.v2v_anchor,
        "frames": a.frames,
        "other_clip_seeds": [c.seed for c in others],
        "runs": runs,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "tiny_v2v_anchor.json").write_text(json.dumps(report, indent=1))
    title = (
        f"tiny, video-to-video source anchoring ({'LIPAR on' if gen.lipar.enabled else 'LIPAR off'}, "
        f"{a.frames} frames a clip), CPU, torch {torch.__version__}"
    )
    plot(runs, a.out / "tiny_v2v_anchor.png", title)
    return report


if __name__ == "__main__":
    main()
