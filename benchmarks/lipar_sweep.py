"""LIPAR's speed-quality curve: kept ratio against PSNR-vs-unpruned and warp error over a threshold sweep.

    python benchmarks/lipar_sweep.py --taus 0.003,0.006 0.005,0.01 0.008,0.016 --out benchmarks/results/lipar_sweep
    python benchmarks/lipar_sweep.py --clips benchmarks/data/vtest_path.mp4 --taus 0.005 --modes all \\
        --lipar warmup_frames=3 max_age=0 --out /tmp/sweep

For each clip, the unpruned stream runs once and the LIPAR stream once per (recovery mode, threshold
pair), through `engine.bench.run_variant` (the bench's loop: warm-up frames, then timed frames; the
same seed and noise in every run). Figures over the timed frames (engine/quality.py): kept ratio,
sequence PSNR against the unpruned output, warp error beside the unpruned output's, drift, PSNR vs
the source, fps and its ratio to the unpruned run's in the same process.
Writes OUT/sweep.json (with the command; a point's `psnr_vs_baseline` is against the unpruned run, the
clip's `unpruned` entry holds that run's own warp error and fps) and OUT/sweep.png (one line per clip
and mode; the horizontal lines are the unpruned runs' warp errors).

--taus: SHORT[,LONG] pairs as `app.py generate --lipar-tau` takes them (LONG left out: the model's).
--modes: recovery modes from lipar.config.RECOVERY_MODES, or `all`; default: the --lipar config's.
--lipar KEY=VALUE: any LiparConfig field for every LIPAR run (ints, floats, inf, true/false, null or
a string), applied with dataclasses.replace, so new fields need no change here.
Clips: video files; a file listed in benchmarks/data/clips.json gets the prompt given there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import parse_taus  # noqa: E402
from engine.bench import PROMPT, card_name, latent_chunks, run_variant  # noqa: E402
from engine.config import get_config  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from engine.quality import sequence_metrics  # noqa: E402
from engine.video_io import read_frames  # noqa: E402
from lipar.config import RECOVERY_MODES, LiparConfig  # noqa: E402

log = logging.getLogger("lipar_sweep")
DATA = Path(__file__).resolve().parent / "data"


def parse_value(text: str):
    """A --lipar value: int, float (inf included), true/false, null, else the string itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text.lower(), text)


def lipar_override(pairs: list[str], base: LiparConfig | None = None) -> LiparConfig:
    """KEY=VALUE strings applied to a LiparConfig; unknown keys and bad values are one-line errors."""
    fields = {f.name for f in dataclasses.fields(LiparConfig)}
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--lipar takes KEY=VALUE with KEY one of {', '.join(sorted(fields))}; got {pair!r}")
        changes[key] = parse_value(value)
    return dataclasses.replace(base or LiparConfig(), **changes)  # LiparConfig validates every field


def parse_modes(names: list[str] | None, base: LiparConfig) -> list[str]:
    if not names:
        return [base.recovery]
    if names == ["all"]:
        return list(RECOVERY_MODES)
    for name in names:
        if name not in RECOVERY_MODES:
            raise ValueError(f"unknown recovery mode {name!r}; choose from {', '.join(RECOVERY_MODES)} or all")
    return names


def clip_prompts() -> dict[str, str]:
    index = DATA / "clips.json"
    return {m["file"]: m["prompt"] for m in json.loads(index.read_text()).values()} if index.is_file() else {}


def default_clips() -> list[Path]:
    return sorted(DATA / f for f in clip_prompts())


def load_clip(path: Path, need: int) -> list[np.ndarray]:
    source = list(read_frames(path, limit=need))
    if len(source) < need:
        raise ValueError(f"{path} has {len(source)} frames; --warmup + --frames need {need}")
    return source


def sweep_clip(
    gen: StreamingGenerator,
    path: Path,
    source: list[np.ndarray],
    prompt: str,
    runs: list[LiparConfig],
    warmup: int,
    bar: tqdm,
) -> dict:
    """The unpruned run and every LIPAR run of one clip, with their figures over the frames after `warmup`."""
    per = gen.frames_per_step  # source frames per step (a block of latent frames)
    chunks = latent_chunks(source, per)
    timed_source = source[warmup * per :]
    base_cfg = dataclasses.replace(runs[0], enabled=False)
    base, base_out = run_variant(gen, chunks, base_cfg, warmup, None, f"{path.stem} unpruned", prompt)
    bar.update()
    unpruned = {k: base[k] for k in ("fps", "latency_ms_p50")}
    unpruned.update(sequence_metrics(base_out, base_out, timed_source))
    points = []
    for cfg in runs:
        label = f"{path.stem} {cfg.recovery} {cfg.tau_short},{cfg.tau_long}"
        run, out = run_variant(gen, chunks, cfg, warmup, None, label, prompt)
        bar.update()
        resolved = gen.lipar  # the thresholds the run used, the model's defaults filled in
        point = {
            "recovery": cfg.recovery,
            "tau_short": resolved.tau_short,
            "tau_long": resolved.tau_long,
            "kept_ratio": run["kept_ratio_mean"],
            "fps": run["fps"],
            "speedup_vs_unpruned": run["fps"] / base["fps"],
            "latency_ms_p50": run["latency_ms_p50"],
            **sequence_metrics(out, base_out, timed_source),
        }
        points.append(point)
        log.info(
            "%s: kept %.2f, %.1f dB, warp %.2f (unpruned %.2f), drift %+.1f dB, %.2fx fps",
            label, point["kept_ratio"], point["psnr_vs_baseline"], point["warp_error"], unpruned["warp_error"],
            point["drift"]["change_db"], point["speedup_vs_unpruned"],
        )  # fmt: skip
    return {"source": str(path), "prompt": prompt, "unpruned": unpruned, "points": points}


def plot_sweep(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_psnr, ax_warp) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("o-", "s--", "^:", "d-.")
    modes = sorted({p["recovery"] for c in result["clips"].values() for p in c["points"]})
    for i, (name, clip) in enumerate(result["clips"].items()):
        colour = colours[i % len(colours)]
        for j, mode in enumerate(modes):
            pts = sorted((p for p in clip["points"] if p["recovery"] == mode), key=lambda p: p["kept_ratio"])
            if not pts:
                continue
            kept = [p["kept_ratio"] for p in pts]
            label = name if len(modes) == 1 else f"{name} · {mode}"
            style = styles[j % len(styles)]
            ax_psnr.plot(kept, [p["psnr_vs_baseline"] for p in pts], style, color=colour, label=label, ms=4)
            ax_warp.plot(kept, [p["warp_error"] for p in pts], style, color=colour, label=label, ms=4)
            for pt in pts:  # the thresholds beside each point: what a user picks from this figure
                ax_psnr.annotate(f"{pt['tau_short']:g}", (pt["kept_ratio"], pt["psnr_vs_baseline"]), fontsize=6)
        ax_warp.axhline(clip["unpruned"]["warp_error"], color=colour, lw=0.8, alpha=0.6)
    meta = result["meta"]
    ax_psnr.set(xlabel="kept ratio", ylabel="sequence PSNR vs unpruned (dB)", title="quality kept (labels: tau_short)")
    ax_warp.set(xlabel="kept ratio", ylabel="warp error (0-255; lines: unpruned)", title="temporal consistency")
    for ax in (ax_psnr, ax_warp):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"LIPAR threshold sweep · {meta['model']} {meta['size']} · {meta['warmup']} warm-up + {meta['frames']} "
        f"timed frames · {meta['card']} · torch {meta['torch']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", nargs="+", type=Path, default=None, help="video files (default: benchmarks/data/)")
    p.add_argument("--taus", nargs="+", type=parse_taus, required=True, metavar="SHORT[,LONG]")
    p.add_argument("--modes", nargs="+", default=None, help=f"{', '.join(RECOVERY_MODES)} or all")
    p.add_argument("--lipar", nargs="+", default=[], metavar="KEY=VALUE", help="LiparConfig fields for every run")
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=8, help="steps (blocks; tiny: 1 frame) before the measured")
    p.add_argument("--frames", type=int, default=24, help="measured steps")
    p.add_argument("--prompt", default=PROMPT, help="for clips without one in benchmarks/data/clips.json")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lipar_sweep"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        base = lipar_override(a.lipar)
        modes = parse_modes(a.modes, base)
        runs = [
            dataclasses.replace(base, enabled=True, recovery=m, tau_short=s, tau_long=lg)
            for m in modes
            for s, lg in a.taus
        ]
    except ValueError as e:
        p.error(str(e))
    if a.warmup < 0 or a.frames < 2:
        p.error(f"--warmup must be >= 0 and --frames >= 2, got {a.warmup} and {a.frames}")
    clips = a.clips or default_clips()
    if not clips:
        p.error("no clips: pass --clips, or make benchmarks/data/ (benchmarks/data/make_clips.py)")
    try:  # every clip is read before the model loads: a bad one fails at once
        cfg = get_config(a.model)
        need = (a.warmup + a.frames) * cfg.frames_per_step
        sources = {path: load_clip(path, need) for path in clips}
    except ValueError as e:
        p.error(str(e))
    gen = StreamingGenerator.from_pretrained(a.model, device=a.device, size=(a.size, a.size))
    prompts = clip_prompts()
    start = time.perf_counter()
    results = {}
    with tqdm(total=len(clips) * (1 + len(runs)), desc="sweep", unit="run") as bar:
        for path, source in sources.items():
            prompt = prompts.get(path.name, a.prompt)
            results[path.stem] = sweep_clip(gen, path, source, prompt, runs, a.warmup, bar)
    meta = {
        "model": a.model,
        "size": f"{gen.height}x{gen.width}",
        "card": card_name(gen.device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "warmup": a.warmup,
        "frames": a.frames,
        "lipar": dataclasses.asdict(base),
        "wall_s": time.perf_counter() - start,
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
    }
    result = {"meta": meta, "clips": results}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_sweep(result, a.out / "sweep.png")
    log.info("wrote %s and %s in %.0f s", a.out / "sweep.json", a.out / "sweep.png", meta["wall_s"])
    return result


if __name__ == "__main__":
    main()
