"""Where one latent frame's time goes: torch.profiler over `StreamingGenerator.step()`, top kernels.

    python benchmarks/profile_frame.py --out benchmarks/results/gpu_h200/profile

`wan2.1-1.3b` (random weights, timing only) at 480x832, video-to-video on the bench's synthetic
clip, LIPAR off (the unpruned baseline), steady state (KV window full, every CUDA graph captured).
For each variant it times --frames latent frames (wall clock around `step()`, which ends with the
frames on the host), then profiles one more frame. Variants, in this order on one generator:

- `before`: CUDA graphs of the uncompiled blocks, attention by SDPA's own choice, the VAE eager (the
  state before issue 15);
- `shipped`: the generator's defaults (blocks compiled inside the graphs, attention tuned per shape, the
  VAE's encode and decode replayed from graphs; until session 21 this variant ran the VAE eagerly);
- `shipped+<backend>`: the same with one attention backend forced (`--backends`, default none);
- `shipped+lipar`: the defaults with LIPAR on (`--lipar-tau`), its mask from the shipped tiny VAE as in
  `bench --mask-encoder tiny`; with `--source` (a static-camera clip) the masks are real ones;
- `shipped+fp8_row`: the same with FP8 linears, row-wise scales (last: it replaces the weights).

`--source CLIP` times every variant on that clip instead of the synthetic one. Each profiled frame also
reports how long the GPU ran any kernel (`gpu_busy_ms`, the union of kernel intervals) against its wall
clock: the rest is the GPU waiting for the host. Where it waited is tabled too: every interval of 20 us
or more in which no kernel ran, with the kernels either side and the host's stage then (each `StageTimer`
stage is a "stage:NAME" profiler range), and the idle time summed per stage; and the kernel time per
stage that launched it. `--trace` also writes each profiled frame's Chrome trace (host ops and kernels on
one timeline, for chrome://tracing or Perfetto).

`--kept 1.0,0.5` also profiles the shipped DiT work alone (denoising steps, recovery, cache pass:
bench's kept-ratio sweep, `engine.bench.forced_step`) under random masks keeping each share, and
tables each kernel category's time against its time at the first share: where pruning's time goes
that does not shrink with the kept count.

Writes profile_frame.json (every variant's latencies, stages, kernel table, host-sync count) and
profile_frame.md (the tables). Kernel shares are of the summed kernel time of the profiled frame.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import parse_taus  # noqa: E402
from engine.backends import CudaGraphRunner  # noqa: E402
from engine.bench import (  # noqa: E402
    PROMPT,
    forced_mask,
    forced_step,
    forced_step_ms,
    steady_source_tokens,
    synthetic_clip,
)
from engine.config import get_config  # noqa: E402
from engine.fp8 import quantize_linears  # noqa: E402
from engine.generator import StreamingGenerator  # noqa: E402
from engine.timing import STAGE_PREFIX  # noqa: E402
from engine.video_io import read_frames  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402
from lipar.kernels.attention import set_attention_backend  # noqa: E402

# kernel-name patterns -> what the kernel does (first match wins)
CATEGORIES = (
    ("attention", r"flash|fmha|attention|attn|sdpa|_split_kv|_combine"),
    ("gemm", r"gemm|sm90_xmma|cutlass|cublas|nvjet|wgmma|_scaled_mm|f8f8"),
    ("compiled (inductor)", r"^triton_"),
    ("lipar triton", r"_recover|_gather|_restore"),
    ("conv (VAE)", r"conv|implicit|winograd|cudnn"),
    ("norm / reduction", r"norm|reduce|softmax|welford"),
    ("copy", r"copy|memcpy|memset|cat|index|scatter|gather"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise"),
)
SYNC_OPS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def category(name: str) -> str:
    low = name.lower()
    return next((cat for cat, pattern in CATEGORIES if re.search(pattern, low)), "other")


def union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals: kernels that overlap (two streams) count once."""
    busy, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        busy += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return busy


def innermost(spans: list[tuple[float, float, str]]) -> str:
    """The name of the innermost of nested (start, end, name) spans (the latest to start), "none" if none."""
    return max(spans, key=lambda s: (s[0], -s[1]))[2] if spans else "none"


def idle_gaps(
    kernels: list[tuple[float, float, str]], stages: list[tuple[float, float, str]], min_gap: float, top: int
) -> dict:
    """Where the GPU waited: the intervals (us) in which no kernel ran on any stream, between a frame's first
    and last kernel, of at least `min_gap`, each with the kernels either side and the host stages (the
    StageTimer's "stage:NAME" ranges) that overlap it; and the idle time per stage, each idle microsecond
    given to the innermost stage the host was in ("none": outside all)."""
    gaps, reach, before = [], None, None
    for start, end, name in sorted(kernels):
        if reach is not None and start - reach >= min_gap:
            gaps.append({"start": reach, "end": start, "us": start - reach, "before": before, "after": name})
        if reach is None or end > reach:
            reach, before = end, name
    by_stage: dict[str, float] = defaultdict(float)
    for g in gaps:
        inside = [s for s in stages if s[0] < g["end"] and s[1] > g["start"]]
        g["stages"] = sorted({s[2] for s in inside})
        cuts = sorted({g["start"], g["end"], *(t for s in inside for t in s[:2] if g["start"] < t < g["end"])})
        for a, b in zip(cuts, cuts[1:]):
            by_stage[innermost([s for s in inside if s[0] <= a and s[1] >= b])] += b - a
    return {
        "idle_ms": sum(g["us"] for g in gaps) / 1000.0,
        "idle_ms_by_stage": {k: v / 1000.0 for k, v in sorted(by_stage.items(), key=lambda kv: -kv[1])},
        "gaps": sorted(gaps, key=lambda g: -g["us"])[:top],
    }


def split_events(events) -> tuple[list, list, list, dict[str, int]]:
    """A profile's events as device kernels, host stages and the stages' device spans, (start, end, name)
    each, and host syncs counted. A `record_function` range shows on the device timeline too, as a user
    annotation spanning the kernels launched inside it: it is not a kernel (counting it as one hides every
    idle gap inside the stage), but it says which stage launched a kernel."""
    kernels, stages, device_stages, syncs = [], [], [], defaultdict(int)
    for e in events:
        span = (e.time_range.start, e.time_range.end)
        if e.device_type == torch.autograd.DeviceType.CUDA:
            if not e.is_user_annotation:
                kernels.append((*span, e.name))
            elif e.name.startswith(STAGE_PREFIX):
                device_stages.append((*span, e.name[len(STAGE_PREFIX) :]))
        elif e.name in SYNC_OPS:
            syncs[e.name] += 1
        elif e.name.startswith(STAGE_PREFIX):
            stages.append((*span, e.name[len(STAGE_PREFIX) :]))
    return kernels, stages, device_stages, dict(syncs)


def kernels_by_stage(kernels: list, device_stages: list, top: int) -> dict:
    """Kernel ms per stage, each kernel given to the innermost stage whose device span holds its start
    ("none": outside all), with the stage's `top` kernels by time."""
    per_stage: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for start, end, name in kernels:
        per_stage[innermost([s for s in device_stages if s[0] <= start < s[1]])][name].append((end - start) / 1000.0)
    out = {}
    for stage, names in per_stage.items():
        rows = sorted(({"kernel": k, "calls": len(v), "ms": sum(v)} for k, v in names.items()), key=lambda r: -r["ms"])
        out[stage] = {"ms": sum(r["ms"] for r in rows), "calls": sum(r["calls"] for r in rows), "top": rows[:top]}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"]))


def kernel_table(prof, top: int) -> dict:
    """Device kernels of one profiled frame grouped by name, with their share of the kernel time."""
    kernels, stages, device_stages, syncs = split_events(prof.events())
    per_name: dict[str, list[float]] = defaultdict(list)
    for start, end, name in kernels:
        per_name[name].append((end - start) / 1000.0)
    total = sum(sum(v) for v in per_name.values())
    rows = sorted(
        ({"kernel": k, "calls": len(v), "ms": sum(v), "category": category(k)} for k, v in per_name.items()),
        key=lambda r: -r["ms"],
    )
    for r in rows:
        r["share"] = r["ms"] / total if total else 0.0
    cats: dict[str, float] = defaultdict(float)
    for r in rows:
        cats[r["category"]] += r["ms"]
    return {
        "kernel_ms_total": total,
        "gpu_busy_ms": union_length([k[:2] for k in kernels]) / 1000.0,
        "kernels_launched": sum(r["calls"] for r in rows),
        "top": rows[:top],
        "categories": {k: {"ms": v, "share": v / total} for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "host_syncs": syncs,
        "kernels_by_stage": kernels_by_stage(kernels, device_stages, top=8),
        **idle_gaps(kernels, stages, min_gap=20.0, top=12),
    }


def time_frames(gen: StreamingGenerator, chunks: list, frames: int) -> dict:
    """Steady-state latency: reset, fill the window (graphs get captured), then time `frames` steps."""
    gen.reset()
    gen.set_prompt(PROMPT)
    warm = gen.cfg.window.slots + 2
    start = time.perf_counter()
    for chunk in chunks[:warm]:
        gen.step(chunk)
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - start
    lat, stages = [], []
    for chunk in chunks[warm : warm + frames]:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = gen.step(chunk)
        lat.append((time.perf_counter() - t0) * 1000.0)
        stages.append(out.stats["stages_ms"])
    lat = np.array(lat)
    return {
        "warmup_s": warm_s,
        "ms_p50": float(np.median(lat)),
        "ms_p95": float(np.percentile(lat, 95)),
        "fps": gen.frames_per_step * len(lat) / (lat.sum() / 1000.0),
        "stages_ms": {k: float(np.mean([s[k] for s in stages])) for k in stages[0]},
    }


def profile_frame(gen: StreamingGenerator, chunk, top: int, trace: Path | None = None) -> dict:
    """One profiled step; `trace`: also write its Chrome trace there (gzipped), host and device timelines."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.step(chunk)
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1000.0
    if trace is not None:
        raw = trace.with_suffix("")
        prof.export_chrome_trace(str(raw))
        with open(raw, "rb") as src, gzip.open(trace, "wb") as dst:
            shutil.copyfileobj(src, dst)
        raw.unlink()
    return {**kernel_table(prof, top), "wall_ms": wall}


def profile_kept(gen: StreamingGenerator, chunk, ratios: list[float], repeats: int, top: int) -> dict:
    """The DiT work of one block under forced masks: wall-clock median over `repeats` and one profiled
    step per kept share, on a full window (as bench's sweep)."""
    tokens = steady_source_tokens(gen, chunk)
    rng = torch.Generator().manual_seed(0)
    rows = {}
    for ratio in ratios:
        keep, pruned = forced_mask(gen, ratio, rng)
        times = forced_step_ms(gen, tokens, keep, pruned, gen.prompt.kv, repeats)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            forced_step(gen, tokens, keep, pruned, gen.prompt.kv)
            torch.cuda.synchronize()
        rows[str(ratio)] = {"kept": ratio, "ms_p50": float(np.median(times)), "profile": kernel_table(prof, top)}
    return rows


def kept_markdown(rows: dict) -> list[str]:
    """Each category's kernel ms per kept share, and its ratio to the first share's (ideal: the kept share)."""
    shares = list(rows.values())
    base = shares[0]
    cats = list(base["profile"]["categories"])
    head = " | ".join(f"{r['kept']:.0%} ms (ratio)" for r in shares)
    lines = [
        "",
        "## DiT work alone under forced masks: kernel ms by category",
        "",
        "Ideal ratio: the kept share over the first share. Wall clock p50: "
        + ", ".join(f"{r['kept']:.0%} {r['ms_p50']:.1f} ms" for r in shares)
        + ".",
        "",
        f"| category | {head} |",
        "|---|" + "---|" * len(shares),
    ]

    def ms(r: dict, c: str) -> float:
        p = r["profile"]
        return p["kernel_ms_total"] if c == "total" else p["categories"].get(c, {}).get("ms", 0.0)

    for c in cats + ["total"]:
        cells = [f"{ms(r, c):.2f} ({ms(r, c) / ms(base, c):.2f})" if ms(base, c) else f"{ms(r, c):.2f}" for r in shares]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    for r in shares[1:]:
        lines += ["", f"### top kernels at {r['kept']:.0%} kept", "", "| kernel | category | calls | ms |"]
        lines.append("|---|---|---|---|")
        lines += [
            f"| `{k['kernel'][:90]}` | {k['category']} | {k['calls']} | {k['ms']:.2f} |" for k in r["profile"]["top"]
        ]
    return lines


def markdown(result: dict) -> str:
    lines = [
        f"# One latent frame, {result['model']} {result['size']}, {result['card']}, torch {result['torch']}",
        "",
        f"`{result['command']}`; {result['clip']}; LIPAR off except in `shipped+lipar`, steady state, "
        f"V2V {result['steps']} steps + the cache pass.",
        "",
        "| variant | p50 ms | p95 ms | fps | stages ms | kernel ms | GPU busy / wall ms | kernels | syncs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        if "error" in v:
            lines.append(f"| {name} | failed: {v['error'][:120]} | | | | | | | |")
            continue
        st = ", ".join(f"{k} {x:.1f}" for k, x in v["stages_ms"].items())
        p = v["profile"]
        lines.append(
            f"| {name} | {v['ms_p50']:.1f} | {v['ms_p95']:.1f} | {v['fps']:.1f} | {st} | "
            f"{p['kernel_ms_total']:.1f} | {p['gpu_busy_ms']:.1f} / {p['wall_ms']:.1f} | {p['kernels_launched']} | "
            f"{sum(p['host_syncs'].values())} |"
        )
    for name, v in result["variants"].items():
        if "error" in v:
            continue
        p = v["profile"]
        lines += ["", f"## {name}: kernel time by category", "", "| category | ms | share |", "|---|---|---|"]
        lines += [f"| {c} | {x['ms']:.2f} | {x['share']:.1%} |" for c, x in p["categories"].items()]
        lines += [
            "",
            f"## {name}: top kernels",
            "",
            "| kernel | category | calls | ms | share |",
            "|---|---|---|---|---|",
        ]
        for r in p["top"]:
            lines.append(
                f"| `{r['kernel'][:90]}` | {r['category']} | {r['calls']} | {r['ms']:.2f} | {r['share']:.1%} |"
            )
        if "idle_ms" in p:
            by_stage = ", ".join(f"{k} {x:.2f}" for k, x in p["idle_ms_by_stage"].items())
            lines += [
                "",
                f"## {name}: GPU idle, gaps of 20 us or more: {p['idle_ms']:.2f} ms (host stage then: {by_stage})",
                "",
                "| us | host stages | kernel before | kernel after |",
                "|---|---|---|---|",
            ]
            for g in p["gaps"]:
                stages = ", ".join(g["stages"]) or "-"
                lines.append(f"| {g['us']:.0f} | {stages} | `{(g['before'] or '')[:50]}` | `{g['after'][:50]}` |")
        lines += [
            "",
            f"## {name}: kernel time by the stage that launched it",
            "",
            "| stage | ms | calls | top kernels (ms) |",
        ]
        lines.append("|---|---|---|---|")
        for stage, row in p["kernels_by_stage"].items():
            tops = "; ".join(f"`{k['kernel'][:40]}` {k['ms']:.2f}" for k in row["top"][:4])
            lines.append(f"| {stage} | {row['ms']:.2f} | {row['calls']} | {tops} |")
    if result.get("kept"):
        lines += kept_markdown(result["kept"])
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wan2.1-1.3b")
    p.add_argument("--size", default="480x832")
    p.add_argument("--frames", type=int, default=12, help="timed latent frames per variant")
    p.add_argument("--top", type=int, default=25, help="kernels in the table")
    p.add_argument("--backends", default="", help="comma list of attention backends to force, one variant each")
    p.add_argument("--no-fp8", action="store_true")
    p.add_argument("--kept", default="", help="comma list of kept shares for the forced-mask profile, e.g. 1.0,0.5")
    p.add_argument("--source", type=Path, help="clip to time on (default: the synthetic clip)")
    p.add_argument(
        "--lipar-tau",
        type=parse_taus,
        metavar="SHORT[,LONG]",
        help="add the shipped+lipar variant with these thresholds",
    )
    p.add_argument("--trace", action="store_true", help="also write each variant's Chrome trace, trace_NAME.json.gz")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in a.size.split("x"))
    gen = StreamingGenerator.from_pretrained(
        # eager at first: the default graph runner would compile the blocks at once, before `before` ran
        a.model,
        device="cuda",
        random_weights=True,
        size=(h, w),
        lipar=LiparConfig(enabled=False),
        backend="torch",
    )
    per = gen.frames_per_step  # video frames per step(): a whole block
    need = gen.cfg.window.slots + 2 + a.frames + 1
    if a.source:
        clip = list(read_frames(a.source, limit=need * per))
        if len(clip) < need * per:
            raise SystemExit(f"{a.source} has {len(clip)} frames; {need * per} needed")
    else:
        clip = synthetic_clip(h, w, need * per)
    chunks = [clip[i * per : (i + 1) * per] for i in range(need)]
    variants: dict[str, dict] = {}

    def run(name: str) -> None:
        try:
            variants[name] = time_frames(gen, chunks, a.frames)
            trace = a.out / f"trace_{name.replace('+', '_')}.json.gz" if a.trace else None
            variants[name]["profile"] = profile_frame(gen, chunks[-1], a.top, trace)
        except Exception as e:  # noqa: BLE001 - a variant that fails on this card is a result too
            variants[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(name, {k: v for k, v in variants[name].items() if k != "profile"}, flush=True)

    with torch.inference_mode():
        set_attention_backend("sdpa")
        gen.runner = CudaGraphRunner(gen.dit, gen.cache, compiled=False)  # before any capture or compile
        run("before")
        set_attention_backend(None)
        gen.set_backend("cudagraph")  # the defaults: fresh DiT graphs, and the VAE replayed from graphs too
        run("shipped")
        for backend in filter(None, a.backends.split(",")):
            set_attention_backend(backend)
            gen.runner = CudaGraphRunner(gen.dit, gen.cache)  # re-captured with it
            run(f"shipped+{backend}")
        set_attention_backend(None)
        if a.lipar_tau:
            short, long = a.lipar_tau
            if long is None:  # as bench --mask-encoder: the mask encoder's own
                long = get_config("tiny").lipar.tau_long
            gen.set_backend("cudagraph")
            gen.set_mask_encoder("tiny")  # replayed from a graph as in bench
            gen.set_lipar(LiparConfig(tau_short=short, tau_long=long))
            run("shipped+lipar")
            gen.set_lipar(LiparConfig(enabled=False))
            gen.set_mask_encoder(None)
        kept = [float(x) for x in a.kept.split(",") if x]
        if kept:
            gen.set_backend("cudagraph")
            kept_rows = profile_kept(gen, chunks[0], kept, a.frames, a.top)
            print({k: round(v["ms_p50"], 2) for k, v in kept_rows.items()}, flush=True)
        if not a.no_fp8:
            quantize_linears(gen.dit, "row")
            gen.set_backend("cudagraph")
            run("shipped+fp8_row")
    result = {
        "model": a.model,
        "size": a.size,
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "command": "python " + " ".join(sys.argv),
        "steps": len(gen.cfg.v2v_schedule.sigmas),
        "clip": f"clip {a.source.name}" if a.source else "the synthetic clip",
        "variants": variants,
        "kept": kept_rows if kept else {},
    }
    (a.out / "profile_frame.json").write_text(json.dumps(result, indent=1))
    (a.out / "profile_frame.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
