"""`app.py bench`: baseline (LIPAR off) and LIPAR on the same source and seed, in one process.

Each variant runs the clip once untimed (CUDA graphs for every kept-count bucket get captured there),
then `timed_passes` times from a reset, the variants alternating in ABBA order (`run_variants`).
Latency is wall clock around `step()`, which ends by copying the frames to the host, so every frame is
complete when its time is taken.
Each run's quality figures (engine/quality.py) are taken over its timed frames against the baseline's
and against the source: sequence PSNR, the per-frame curve, drift, warp error.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from engine.backends import CudaGraphRunner
from engine.config import get_config
from engine.dit import patchify
from engine.generator import StreamingGenerator
from engine.quality import PSNR_CAP, fit_frames, sequence_metrics
from engine.video_io import read_frames
from lipar.config import LiparConfig

log = logging.getLogger(__name__)

PROMPT = "a red ball moving right over a brick wall"
RANDOM_WEIGHTS_NOTE = (
    "random weights: the lipar run's kept ratio and PSNR come from a random VAE and say nothing about "
    "real video; the kept-ratio sweep is the timing that transfers"
)
MASK_ENCODER_NOTE = (
    "random DiT and VAE weights, but LIPAR's mask comes from the shipped {} VAE's latents of the source "
    "(real kept ratios, calibrated thresholds): the lipar row's speed is real, its PSNR compares random outputs"
)
SWEEP = (1.0, 0.75, 0.5, 0.25)
PEER_SAME_CALL_S = 1800  # a peer file younger than this, from the same card, was written in this device call


@dataclass(frozen=True)
class BenchConfig:
    model: str = "tiny"
    device: str = "auto"
    size: tuple[int, int] | None = None
    seed: int = 0
    weights: str | None = None
    random_weights: bool = False
    text_encoder: str | None = None  # local text encoder folder; None: the installed package
    vae: str | None = None  # VAE weights file (e.g. taew2_1.pth); None: the preset's
    window: str | None = None  # SINKS,M or global[:N]; None: the preset's
    sampler: str | None = None  # euler | renoise; None: the preset's
    source: str | None = None
    frames: int = 64  # timed latent frames per variant
    warmup: int = 8  # latent frames before timing starts (the window fills up)
    timed_passes: int = 2  # per variant, in ABBA order with the other variant's
    target_fps: float | None = None
    sweep_keep: bool = False
    backend: str = "auto"
    graph_buckets: int | None = None  # kept-count buckets of the CUDA graphs; None: GRAPH_BUCKETS
    side_stream: bool = True  # the decode beside the cache pass (StreamingGenerator.set_side_stream)
    triton: bool = False  # every LIPAR Triton kernel on, the split-KV attention too (default: the measured winners)
    out: Path = Path("benchmarks/results/bench")
    lipar: LiparConfig = LiparConfig()
    # another preset's shipped frame VAE drives LIPAR's mask (StreamingGenerator.set_mask_encoder), with its
    # calibrated thresholds unless given: real kept ratios for a random-weight model at real scale
    mask_encoder: str | None = None
    peer: Path | None = None  # peer_self_forcing.json from the same device call: bench.json's "peer" block
    command: str = ""

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError(f"--frames must be at least 2, got {self.frames}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.timed_passes < 1:
            raise ValueError(f"--timed-passes must be at least 1, got {self.timed_passes}")
        if self.target_fps is not None and self.target_fps <= 0:
            raise ValueError(f"--target-fps must be > 0, got {self.target_fps}")
        if self.graph_buckets is not None and self.graph_buckets < 1:
            raise ValueError(f"--graph-buckets must be at least 1, got {self.graph_buckets}")


def synthetic_clip(height: int, width: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """A static textured background with a disc crossing it: static regions for LIPAR to prune."""
    rng = np.random.default_rng(seed)
    import cv2

    coarse = rng.uniform(40, 215, size=(max(height // 32, 2), max(width // 32, 2), 3)).astype(np.float32)
    background = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width]
    radius = max(min(height, width) // 8, 2)
    frames = []
    for i in range(count):
        cx = radius + (i * max(width // 48, 1)) % max(width - 2 * radius, 1)
        cy = height // 2 + int(radius * np.sin(i / 5))
        frame = background.copy()
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = (220, 40, 40)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def latent_chunks(frames: list[np.ndarray], per: int) -> list[list[np.ndarray]]:
    """Source frames grouped per latent frame (a tail too short for one is dropped)."""
    return [frames[i * per : (i + 1) * per] for i in range(len(frames) // per)]


def run_variants(
    gen: StreamingGenerator,
    chunks: list,
    variants: dict[str, LiparConfig],
    warmup: int,
    budget_ms: float | None,
    prompt: str = PROMPT,
    timed_passes: int = 2,
) -> dict[str, tuple[dict, list[np.ndarray]]]:
    """Each variant's figures and its first timed pass's frames (passes are identical: the noise is
    seeded at reset), by label. Every variant first runs one untimed pass (it captures the CUDA graphs
    it needs); then the timed passes go in ABBA order (A B, B A, ...), because a machine's speed drifts
    within a run (on the 2-core CPU successive passes of one variant slowed by up to 10 %): in a fixed
    order the later variant would pay for it. Latencies of all timed passes are pooled."""
    records: dict[str, list[dict]] = {label: [] for label in variants}
    order = list(variants)
    schedule = [(label, False) for label in order]
    for r in range(timed_passes):
        schedule += [(label, True) for label in (order if r % 2 == 0 else order[::-1])]
    for label, timed in schedule:
        keep_frames = timed and not records[label]  # quality is read off the first timed pass alone
        gen.set_lipar(variants[label])
        gen.reset()
        gen.set_prompt(prompt)
        if gen.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        record: dict = {"latencies": [], "stages": [], "kept": [], "outputs": [], "ttff": None}
        desc = f"{label} ({'timed' if timed else 'capture'})"
        for i, chunk in enumerate(tqdm(chunks, desc=desc, unit="step", leave=False)):
            _sync(gen.device)
            start = time.perf_counter()
            out = gen.step(chunk)
            ms = (time.perf_counter() - start) * 1000.0
            if i == 0:
                record["ttff"] = ms
            if i >= warmup:
                record["latencies"].append(ms)
                record["stages"].append(out.stats["stages_ms"])
                record["kept"].append(out.stats["kept_ratio"])
                if keep_frames:
                    record["outputs"].extend(out.frames)
        record["peak"] = torch.cuda.max_memory_allocated() / 1e9 if gen.device.type == "cuda" else None
        if timed:
            records[label].append(record)
    return {label: (_summary(gen, passes, budget_ms), passes[0]["outputs"]) for label, passes in records.items()}


def run_variant(
    gen: StreamingGenerator,
    chunks: list,
    lipar: LiparConfig,
    warmup: int,
    budget_ms: float | None,
    label: str,
    prompt: str = PROMPT,
) -> tuple[dict, list[np.ndarray]]:
    """One variant, one timed pass (for quality sweeps, where no other variant shares the timing)."""
    return run_variants(gen, chunks, {label: lipar}, warmup, budget_ms, prompt, timed_passes=1)[label]


def _summary(gen: StreamingGenerator, passes: list[dict], budget_ms: float | None) -> dict:
    lat = np.array([ms for p in passes for ms in p["latencies"]])  # per step: one block of latent frames
    stages = [s for p in passes for s in p["stages"]]
    peaks = [p["peak"] for p in passes if p["peak"] is not None]
    return {
        "fps": gen.frames_per_step * len(lat) / (lat.sum() / 1000.0),
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_per_latent_frame_p50": float(np.percentile(lat, 50)) / gen.block,
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "ttff_ms": float(np.median([p["ttff"] for p in passes])),
        "timed_passes": len(passes),
        "kept_ratio_mean": float(np.mean([k for p in passes for k in p["kept"]])),
        "peak_mem_gb": max(peaks) if peaks else None,
        "stages_ms": {k: float(np.mean([s.get(k, 0.0) for s in stages])) for k in stages[0]},
        "deadline_miss_rate": float(np.mean(lat > budget_ms)) if budget_ms else None,
        "latency_ms": [float(v) for v in lat],
    }


def steady_source_tokens(gen: StreamingGenerator, chunk: list[np.ndarray]) -> Tensor:
    """Reset the stream, fill its KV window with `chunk` (the steady state the forced steps run in) and
    return the chunk's source tokens (1, F*N, C*4). Call under inference mode."""
    gen.reset()
    gen.set_prompt(PROMPT)
    for _ in range(gen.cfg.window.slots + 1):
        gen.step(chunk)
    source = gen.encode_block(chunk)
    return torch.cat([patchify(source[:, i]) for i in range(gen.block)], dim=1)


def forced_mask(gen: StreamingGenerator, ratio: float, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """(keep, pruned) flat token indices of a random mask keeping `ratio` of a frame: the sweep's masks,
    where only the kept count matters for time."""
    order = torch.randperm(gen.tokens, generator=rng).to(gen.device)
    count = max(1, round(ratio * gen.tokens))
    return order[:count].sort().values, order[count:].sort().values


def forced_step(gen: StreamingGenerator, tokens: Tensor, keep: Tensor, pruned: Tensor, text_kv: list) -> None:
    """One block's DiT work (denoising steps, recovery, cache pass) under the same mask for every frame,
    without the encoder, mask or decoder around it."""
    t = gen.cache.frames
    gen.cache.append()
    gen.denoise(t, tokens, [keep] * gen.block, [pruned] * gen.block, text_kv)


def forced_step_ms(
    gen: StreamingGenerator, tokens: Tensor, keep: Tensor, pruned: Tensor, text_kv: list, repeats: int
) -> list[float]:
    """Wall-clock ms of `repeats` forced steps, after three untimed ones (they capture this bucket's graphs)."""
    times = []
    for r in range(repeats + 3):
        _sync(gen.device)
        start = time.perf_counter()
        forced_step(gen, tokens, keep, pruned, text_kv)
        _sync(gen.device)
        if r >= 3:
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def sweep_keep(gen: StreamingGenerator, chunk: list[np.ndarray], repeats: int = 20) -> list[dict]:
    """DiT time per step (denoising steps + recovery + cache pass over a block) at forced kept ratios; `ms`
    is per block, `ms_per_latent_frame` per latent frame."""
    gen.set_lipar(LiparConfig(enabled=False))
    with torch.inference_mode():
        tokens = steady_source_tokens(gen, chunk)
        text_kv = gen.prompt.kv
        rng = torch.Generator().manual_seed(0)
        rows = []
        for ratio in SWEEP:
            keep, pruned = forced_mask(gen, ratio, rng)
            times = forced_step_ms(gen, tokens, keep, pruned, text_kv, repeats)
            ms = float(np.median(times))
            rows.append(
                {
                    "kept": ratio,
                    "ms": ms,
                    "ms_p95": float(np.percentile(times, 95)),
                    "ms_per_latent_frame": ms / gen.block,
                }
            )
    for row in rows:
        row["speedup"] = rows[0]["ms"] / row["ms"]
        row["ideal"] = 1.0 / row["kept"]
        row["fraction_of_ideal"] = row["speedup"] / row["ideal"]
    return rows


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_bench(cfg: BenchConfig) -> dict:
    from lipar.kernels import set_all_triton

    if cfg.triton:
        set_all_triton(True)
    gen = StreamingGenerator.from_pretrained(
        cfg.model,
        device=cfg.device,
        random_weights=cfg.random_weights,
        size=cfg.size,
        seed=cfg.seed,
        weights=cfg.weights,
        text_encoder_path=cfg.text_encoder,
        backend=cfg.backend,
        vae_path=cfg.vae,
        window=cfg.window,
        sampler=cfg.sampler,
    )
    if cfg.graph_buckets is not None:
        if gen.backend != "cudagraph":
            raise ValueError(f"--graph-buckets needs the cudagraph backend (this run's is {gen.backend})")
        gen.runner = CudaGraphRunner(gen.dit, gen.cache, buckets=cfg.graph_buckets)  # before any capture
    gen.set_side_stream(cfg.side_stream)
    lipar = cfg.lipar
    if cfg.mask_encoder:
        gen.set_mask_encoder(cfg.mask_encoder)
        taus = get_config(cfg.mask_encoder).lipar
        lipar = replace(
            lipar,
            tau_short=taus.tau_short if lipar.tau_short is None else lipar.tau_short,
            tau_long=taus.tau_long if lipar.tau_long is None else lipar.tau_long,
        )
    per = gen.frames_per_step  # source frames per step (a block)
    need = (cfg.warmup + cfg.frames) * per
    if cfg.source:
        frames = list(read_frames(cfg.source, limit=need))
        if len(frames) < need:
            raise ValueError(f"source {cfg.source} has {len(frames)} frames; --warmup + --frames need {need}")
    else:
        frames = synthetic_clip(gen.height, gen.width, need, cfg.seed)
    chunks = latent_chunks(frames, per)
    budget = per / cfg.target_fps * 1000.0 if cfg.target_fps else None
    lipar_on = replace(lipar, enabled=True)
    runs = run_variants(
        gen, chunks, {"baseline": replace(lipar, enabled=False), "lipar": lipar_on}, cfg.warmup, budget,
        timed_passes=cfg.timed_passes,
    )  # fmt: skip
    (baseline, base_frames), (pruned, lipar_frames) = runs["baseline"], runs["lipar"]
    timed_source = frames[cfg.warmup * per : need]  # the source frames of the timed outputs, in order
    baseline.update(sequence_metrics(base_frames, base_frames, timed_source))
    pruned.update(sequence_metrics(lipar_frames, base_frames, timed_source))
    result = {
        "model": cfg.model,
        "size": f"{gen.height}x{gen.width}",
        "card": card_name(gen.device),
        "torch": torch.__version__,
        "backend": gen.backend,
        "graph_buckets": getattr(gen.runner, "buckets", None),  # None: eager, no buckets
        "side_stream": cfg.side_stream and gen.device.type == "cuda",  # decode beside the cache pass
        "triton_kernels": cfg.triton,
        "command": cfg.command,
        "frames_timed": cfg.frames,
        "frames_per_latent": gen.frames_per_latent,
        "frames_per_block": gen.block,
        "sampler": gen.cfg.sampler,
        "denoising_steps_v2v": len(gen.cfg.v2v_schedule.sigmas),
        "v2v_anchor": gen.cfg.v2v_anchor,  # context anchoring's tolerance (engine/anchor.py); None: off
        "window": {"sinks": gen.cfg.window.sinks, "m": gen.cfg.window.m, "block": gen.cfg.window.block},
        "mask_encoder": cfg.mask_encoder,
        "lipar_motion": lipar_on.motion,  # camera-motion compensation of the lipar run (lipar/motion.py)
        "lipar_t2v": lipar_on.t2v,
        "runs": {"baseline": baseline, "lipar": pruned},
        "sweep": sweep_keep(gen, chunks[0]) if cfg.sweep_keep else [],
        # a random VAE barely moves its latents between frames (on the synthetic clip the wan preset's
        # random TAEHV changes its latents ~20x less than their spread), so LIPAR prunes almost all
        "notes": (MASK_ENCODER_NOTE.format(cfg.mask_encoder) if cfg.mask_encoder else RANDOM_WEIGHTS_NOTE)
        if cfg.random_weights
        else "",
    }
    if cfg.peer:
        result["peer"] = peer_block(cfg.peer, result["card"], baseline["fps"])
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "bench.json").write_text(json.dumps(result, indent=1, default=float))
    plot_bench(result, cfg.out)
    plot_frames(timed_source, base_frames, lipar_frames, cfg.out)
    print_table(result)
    return result


def peer_block(path: Path, card: str, our_fps: float) -> dict:
    """Self-Forcing's fps from benchmarks' peer harness (/work/shared/peers/peer_self_forcing.py): chunk-wise
    (3 latent frames a block) and frame-wise, each the better of its profiled and unprofiled runs, beside
    our baseline's ratio to each. `same_call`: the file is fresh and from this card."""
    data = json.loads(Path(path).read_text())
    modes = data["modes"]

    def fps(mode: str) -> float:
        m = modes[mode]
        return max(m["fps_diffusion_only"], m["fps_diffusion_only_noprofile"])

    chunk, frame = fps("3"), fps("1")
    fresh = time.time() - Path(path).stat().st_mtime < PEER_SAME_CALL_S
    return {
        "self_forcing_chunkwise_fps": chunk,
        "self_forcing_framewise_fps": frame,
        "same_call": bool(fresh and data.get("gpu") == card),
        "ours_over_chunkwise": our_fps / chunk,
        "ours_over_framewise": our_fps / frame,
        "what": "their CausalInferencePipeline, random weights, diffusion only (no VAE, no text encoder), "
        "text-to-video 4 steps + cache pass per block, 81 frames at 480x832; ours: the baseline row",
        "file": str(path),
    }


def plot_bench(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from_source = all(run.get("psnr_vs_source_frames") for run in result["runs"].values())
    panels = 2 + bool(result["sweep"]) + from_source
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    for name, run in result["runs"].items():
        ax.plot(run["latency_ms"], label=f"{name} (p50 {run['latency_ms_p50']:.1f} ms)", lw=1)
    ax.set(
        xlabel="latent frame", ylabel="latency (ms)", title=f"{result['model']} {result['size']} on {result['card']}"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    # drift shows as a falling curve; the baseline against itself sits at the cap and is left out
    ax = axes[0, 1]
    for name, run in result["runs"].items():
        if name != "baseline":
            d = run["drift"]
            drift = f"last {d['frames']} frames {d['change_db']:+.1f} dB vs first"
            label = f"{name}: {run['psnr_vs_baseline']:.1f} dB; {drift}"
            ax.plot(run["psnr_vs_baseline_frames"], label=label, lw=1)
    ax.set(xlabel="timed video frame", ylabel="PSNR vs baseline (dB)", title="per-frame PSNR against the unpruned run")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if from_source:  # which run moved, where the two part: each against the source
        ax = axes[0, 2]
        for name, run in result["runs"].items():
            d = run["drift_vs_source"]
            label = f"{name}: {run['psnr_vs_source']:.1f} dB; last {d['frames']} {d['change_db']:+.1f} dB vs first"
            ax.plot(run["psnr_vs_source_frames"], label=label, lw=1)
        ax.set(xlabel="timed video frame", ylabel="PSNR vs source (dB)", title="per-frame PSNR against the source")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if result["sweep"]:
        ax = axes[0, -1]
        kept = [r["kept"] for r in result["sweep"]]
        ax.plot(kept, [r["speedup"] for r in result["sweep"]], "o-", label="measured")
        ideal = np.linspace(min(kept), 1.0, 50)
        ax.plot(ideal, 1 / ideal, "--", label="ideal 1/kept")
        ax.set(xlabel="kept ratio", ylabel="DiT speedup", title="speedup vs kept ratio")
        ax.invert_xaxis()
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=120)
    plt.close(fig)


def plot_frames(source: list[np.ndarray], baseline: list[np.ndarray], lipar: list[np.ndarray], out: Path) -> None:
    """frames.png: eight timed frames, evenly spaced, of the source, both runs and their difference (x3),
    to see where the runs part (the PSNR curves say when, not where)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pick = np.linspace(0, len(baseline) - 1, min(8, len(baseline))).astype(int)
    src = fit_frames(source, *baseline[0].shape[:2])
    diff = [np.clip(np.abs(b.astype(np.int16) - p.astype(np.int16)) * 3, 0, 255).astype(np.uint8)
            for b, p in zip(baseline, lipar)]  # fmt: skip
    rows = {"source": src, "baseline": baseline, "lipar": lipar, "|baseline - lipar| x3": diff}
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.6 * len(pick), 1.7 * len(rows)), squeeze=False)
    for ax, (label, frames) in zip(axes[:, 0], rows.items()):
        ax.imshow(np.concatenate([frames[i] for i in pick], axis=1))
        ax.set_xticks([(i + 0.5) * baseline[0].shape[1] for i in range(len(pick))], [str(i) for i in pick], fontsize=7)
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=8)
    axes[-1, 0].set_xlabel("timed video frame")
    fig.tight_layout()
    fig.savefig(out / "frames.png", dpi=110)
    plt.close(fig)


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} {result['size']} · {result['card']} · torch {result['torch']}")
    # latencies are per step (a block of frames_per_block latent frames); "p50/frame" per latent frame
    for col in ("run", "fps", "p50 ms", "p50/frame", "p95 ms", "p99 ms", "ttff ms", "kept", "PSNR dB", "peak GB"):
        table.add_column(col, justify="right")
    for name, r in result["runs"].items():
        table.add_row(
            name,
            f"{r['fps']:.1f}",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_per_latent_frame_p50']:.1f}",
            f"{r['latency_ms_p95']:.1f}",
            f"{r['latency_ms_p99']:.1f}",
            f"{r['ttff_ms']:.0f}",
            f"{r['kept_ratio_mean']:.2f}",
            f"{r['psnr_vs_baseline']:.1f}",
            f"{r['peak_mem_gb']:.2f}" if r["peak_mem_gb"] else "-",
        )
    console = Console()
    console.print(table)
    # a second table: one row of thirteen columns no longer fits an 80-column terminal
    n = result["runs"]["baseline"]["drift"]["frames"]
    quality = Table(title=f"quality over the timed frames (PSNR from the total MSE, {PSNR_CAP:.0f} dB = identical)")
    columns = ("run", "vs baseline dB", f"first {n} dB", f"last {n} dB", "dB/frame", "warp error", "vs source dB")
    for col in (*columns, "source drift dB"):
        quality.add_column(col, justify="right")
    for name, r in result["runs"].items():
        d, warp, src, src_drift = r["drift"], r["warp_error"], r["psnr_vs_source"], r.get("drift_vs_source")
        quality.add_row(
            name,
            f"{r['psnr_vs_baseline']:.1f}",
            f"{d['first_db']:.1f}",
            f"{d['last_db']:.1f}",
            f"{d['slope_db_per_frame']:+.2f}",
            "-" if warp is None else f"{warp:.2f}",
            "-" if src is None else f"{src:.1f}",
            "-" if src_drift is None else f"{src_drift['change_db']:+.1f}",
        )
    console.print(quality)
    for name, r in result["runs"].items():
        console.print(f"{name} stages (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items()))
    if result.get("notes"):
        console.print(f"note: {result['notes']}")
    if result.get("peer"):
        peer = result["peer"]
        console.print(
            f"peer Self-Forcing: chunk-wise {peer['self_forcing_chunkwise_fps']:.1f} fps "
            f"(ours {peer['ours_over_chunkwise']:.2f}x), frame-wise {peer['self_forcing_framewise_fps']:.1f} fps "
            f"(ours {peer['ours_over_framewise']:.2f}x), same call: {peer['same_call']}"
        )
    if result["sweep"]:
        sweep = Table(title="kept-ratio sweep (DiT per latent frame)")
        for col in ("kept", "ms", "speedup", "ideal", "of ideal"):
            sweep.add_column(col, justify="right")
        for r in result["sweep"]:
            sweep.add_row(
                f"{r['kept']:.2f}",
                f"{r['ms']:.2f}",
                f"{r['speedup']:.2f}",
                f"{r['ideal']:.2f}",
                f"{r['fraction_of_ideal']:.2f}",
            )
        console.print(sweep)
