"""Micro-benchmark of the LIPAR Triton kernels against their PyTorch paths, on one CUDA GPU.

    python benchmarks/kernel_speed.py --out benchmarks/results/kernels-h100.json

Shapes are Wan2.1-1.3B's at 480x832: N = 1560 tokens per latent frame, 12 heads of 128, 30 layers,
a KV window of 8 frames (sink + m = 6 + the current frame). Every kernel is checked against its
reference before it is timed (relative error in the JSON). Times are medians of
triton.testing.do_bench (CUDA events, L2 flushed between runs).

Named kernels.py until session 21. A script's own folder comes first on sys.path, so that name hid the PyPI
package `kernels`, which transformers imports: every benchmark script that loads the MiniLM text encoder failed.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import platform
import sys
from pathlib import Path

import torch
import triton
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.backends import bucket_sizes  # noqa: E402
from lipar.config import LiparConfig  # noqa: E402
from lipar.kernels import attention, gather, recovery  # noqa: E402
from lipar.mask import StreamingMask  # noqa: E402

N, HEADS, HEAD_DIM, LAYERS, WINDOW_FRAMES, MODEL_DIM = 1560, 12, 128, 30, 8, 1536
KEPT = (1.0, 0.75, 0.5, 0.25)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def sorted_subset(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, device="cuda", generator=g)[:k].sort().values


def bench_attention(args, g: torch.Generator) -> tuple[list[dict], list[dict]]:
    lk = WINDOW_FRAMES * N
    # k/v are views of one layer of a cache laid out (layers, B, slots * N, H, D), as the engine's
    cache = torch.randn(2, 2, 1, (WINDOW_FRAMES + 1) * N, HEADS, HEAD_DIM, device="cuda", generator=g)
    cache = cache.bfloat16()
    k, v = cache[0, 1, :, :lk], cache[1, 1, :, :lk]
    rows, sweep = [], []
    for kept in KEPT:
        lq = round(kept * N)
        q = torch.randn(1, lq, HEADS, HEAD_DIM, device="cuda", generator=g).bfloat16()
        ref = attention.attention_reference(q.float(), k.float(), v.float())
        err = rel_err(attention.split_kv_attention(q, k, v), ref)
        t_ref = do_bench(
            lambda q=q: attention.attention_reference(q, k, v), args.warmup, args.rep, return_mode="median"
        )
        t_new = do_bench(lambda q=q: attention.split_kv_attention(q, k, v), args.warmup, args.rep, return_mode="median")
        flops = 4 * lq * lk * HEADS * HEAD_DIM
        rows.append(
            dict(
                kernel="attention",
                case=f"kept {kept:.0%} (Lq={lq}, Lk={lk})",
                ms_reference=t_ref,
                ms_triton=t_new,
                rel_err=err,
                tflops_reference=flops / t_ref / 1e9,
                tflops_triton=flops / t_new / 1e9,
            )
        )
        if args.sweep and kept in (1.0, 0.25):
            tilings = [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3), (64, 128, 4, 3)]
            for (bm, bn, warps, stages), splits in itertools.product(tilings, (None, 1, 2, 4, 8)):
                fn = functools.partial(
                    attention.split_kv_attention,
                    q,
                    k,
                    v,
                    num_splits=splits,
                    block_m=bm,
                    block_n=bn,
                    num_warps=warps,
                    num_stages=stages,
                )
                try:
                    err = rel_err(fn(), ref)
                    ms = do_bench(fn, args.warmup, args.rep, return_mode="median")
                except OutOfResources as e:  # a tiling too large for the card
                    err, ms = math.nan, math.nan
                    print(f"skip {bm}x{bn} w{warps} s{stages}: {e}")
                sweep.append(
                    dict(
                        kept=kept,
                        block_m=bm,
                        block_n=bn,
                        num_warps=warps,
                        num_stages=stages,
                        num_splits=splits or "auto",
                        ms=ms,
                        rel_err=err,
                    )
                )
    base_ref, base_new = rows[0]["ms_reference"], rows[0]["ms_triton"]
    for r in rows:  # how close each path comes to a speed-up linear in the kept fraction
        r["scaling_reference"] = base_ref / r["ms_reference"]
        r["scaling_triton"] = base_new / r["ms_triton"]
    return rows, sweep


def bench_attention_backends(args, g: torch.Generator) -> list[dict]:
    """Every attention backend at every kept-count bucket (the query counts the CUDA graphs use),
    against the full window: SDPA's choice, flash / efficient / cuDNN forced, the split-KV kernel,
    and flex_attention (compiled per shape, so at the four sweep ratios only)."""
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    lk = WINDOW_FRAMES * N
    cache = torch.randn(2, 1, (WINDOW_FRAMES + 1) * N, HEADS, HEAD_DIM, device="cuda", generator=g).bfloat16()
    k, v = cache[0, :, :lk], cache[1, :, :lk]
    flex_sizes = {round(kept * N) for kept in KEPT}
    rows = []
    for lq in bucket_sizes(N):
        q = torch.randn(1, lq, HEADS, HEAD_DIM, device="cuda", generator=g).bfloat16()
        ref = attention.attention_reference(q.float(), k.float(), v.float())
        fns = {}
        for name in attention.BACKENDS:
            attention.set_attention_backend(name)
            fns[name] = functools.partial(attention.attention, q, k, v)
        attention.set_attention_backend(None)
        if lq in flex_sizes:
            fns["flex"] = lambda q=q: flex(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        row = dict(lq=lq, lk=lk, ms={}, rel_err={}, errors={})
        for name, fn in fns.items():
            forced = name if name in attention.BACKENDS else None
            try:
                attention.set_attention_backend(forced)
                row["rel_err"][name] = rel_err(fn(), ref)
                row["ms"][name] = do_bench(fn, args.warmup, args.rep, return_mode="median")
            except Exception as e:  # noqa: BLE001 - a backend that cannot run these operands is a result
                row["errors"][name] = f"{type(e).__name__}: {e}"[:300]
            finally:
                attention.set_attention_backend(None)
        ok = {n: ms for n, ms in row["ms"].items() if row["rel_err"][n] < 2e-2}
        row["fastest"] = min(ok, key=ok.get)
        rows.append(row)
    return rows


def bench_recovery(args, g: torch.Generator) -> list[dict]:
    # all layers at once, as the engine calls it: (layers * B, N, H, D) views of one frame slot
    shape = (LAYERS, 3 * N, HEADS, HEAD_DIM)
    src = torch.randn(2, *shape, device="cuda", generator=g).bfloat16()
    src_k_pre, src_v = src[0, :, N : 2 * N], src[1, :, N : 2 * N]
    rows = []
    for kept in KEPT[1:]:
        pruned = sorted_subset(N, round((1 - kept) * N), g)
        cos, sin = torch.randn(2, pruned.numel(), HEAD_DIM // 2, device="cuda", generator=g).unbind(0)
        got = [torch.zeros(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
        want = [t.clone() for t in got]
        new_args = (src_k_pre, src_v, *[t[:, 2 * N :] for t in got], pruned, cos, sin)
        ref_args = (src_k_pre, src_v, *[t[:, 2 * N :] for t in want], pruned, cos, sin)
        recovery.recover_kv_triton(*new_args)
        recovery.recover_kv_reference(*ref_args)
        err = max(rel_err(a, b) for a, b in zip(got, want, strict=True))
        t_ref = do_bench(
            lambda a=ref_args: recovery.recover_kv_reference(*a), args.warmup, args.rep, return_mode="median"
        )
        t_new = do_bench(lambda a=new_args: recovery.recover_kv_triton(*a), args.warmup, args.rep, return_mode="median")
        moved = LAYERS * pruned.numel() * HEADS * HEAD_DIM * 2 * 5  # read k_pre, v; write k, v, k_pre
        rows.append(
            dict(
                kernel="recovery",
                case=f"{LAYERS} layers, pruned {1 - kept:.0%} (P={pruned.numel()})",
                ms_reference=t_ref,
                ms_triton=t_new,
                rel_err=err,
                gbps_triton=moved / t_new / 1e6,
            )
        )
    return rows


def bench_gather(args, g: torch.Generator) -> list[dict]:
    rows = []
    for (width, dtype), kept in itertools.product(((MODEL_DIM, torch.bfloat16), (64, torch.float32)), KEPT[1:]):
        tokens = torch.randn(1, N, width, device="cuda", generator=g).to(dtype)
        previous = torch.randn_like(tokens)
        idx = sorted_subset(N, round(kept * N), g)
        kept_tokens = gather.gather_reference(tokens, idx)
        err = max(
            rel_err(gather.gather_triton(tokens, idx), kept_tokens),
            rel_err(
                gather.restore_triton(kept_tokens, idx, previous),
                gather.restore_reference(kept_tokens, idx, previous),
            ),
        )
        for name, ref_fn, new_fn, fn_args in (
            ("gather", gather.gather_reference, gather.gather_triton, (tokens, idx)),
            ("restore", gather.restore_reference, gather.restore_triton, (kept_tokens, idx, previous)),
        ):
            t_ref = do_bench(lambda f=ref_fn, a=fn_args: f(*a), args.warmup, args.rep, return_mode="median")
            t_new = do_bench(lambda f=new_fn, a=fn_args: f(*a), args.warmup, args.rep, return_mode="median")
            rows.append(
                dict(
                    kernel=name,
                    case=f"D={width} {str(dtype)[6:]}, kept {kept:.0%}",
                    ms_reference=t_ref,
                    ms_triton=t_new,
                    rel_err=err,
                )
            )
    return rows


def bench_mask(args, g: torch.Generator) -> list[dict]:
    """The keep mask is plain PyTorch (no kernel): its cost per latent frame, host sync included."""
    frames = [torch.randn(16, 60, 104, device="cuda", generator=g) for _ in range(2)]
    mask = StreamingMask(LiparConfig(tau_short=0.15, tau_long=0.3), (30, 52))
    state = {"t": 0}

    def step():
        state["t"] += 1
        mask.update(frames[state["t"] % 2])

    step()
    ms = do_bench(step, args.warmup, args.rep, return_mode="median")
    case = "StreamingMask.update, 16x60x104 latent"
    return [dict(kernel="mask", case=case, ms_reference=ms, ms_triton=math.nan, rel_err=0.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    parser.add_argument("--rep", type=int, default=200, help="do_bench repetition time, ms")
    parser.add_argument("--sweep", action="store_true", help="also sweep attention tilings and split counts")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/kernel_speed.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator("cuda").manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    attention_rows, sweep = bench_attention(args, g)
    backends = bench_attention_backends(args, g)
    rows = attention_rows + bench_recovery(args, g) + bench_gather(args, g) + bench_mask(args, g)
    for r in rows:
        r["speedup"] = r["ms_reference"] / r["ms_triton"]
    result = dict(
        device=props.name,
        sms=props.multi_processor_count,
        torch=torch.__version__,
        triton=triton.__version__,
        python=platform.python_version(),
        rows=rows,
        attention_sweep=sweep,
        attention_backends=backends,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))

    print(f"{props.name}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'kernel':<10} {'case':<44} {'torch ms':>9} {'triton ms':>9} {'speedup':>8} {'rel err':>9}")
    for r in rows:
        print(
            f"{r['kernel']:<10} {r['case']:<44} {r['ms_reference']:9.4f} {r['ms_triton']:9.4f} "
            f"{r['speedup']:8.2f} {r['rel_err']:9.2e}"
        )
    print("attention time vs kept 100% (linear would be 1/kept):")
    for r in attention_rows:
        print(f"  {r['case']:<44} SDPA {r['scaling_reference']:.2f}x   split-KV {r['scaling_triton']:.2f}x")
    names = sorted({name for r in backends for name in r["ms"]})
    print("attention ms per backend, Lk = " + str(backends[0]["lk"]) + " (fastest within 2e-2 rel err last):")
    print(f"{'Lq':>5} " + " ".join(f"{n:>9}" for n in names) + "  fastest")
    for r in backends:
        cells = " ".join(f"{r['ms'][n]:9.4f}" if n in r["ms"] else f"{'-':>9}" for n in names)
        print(f"{r['lq']:>5} {cells}  {r['fastest']}")
    for name, error in sorted({item for r in backends for item in r["errors"].items()}):
        print(f"  {name} failed: {error}")
    if sweep:
        for kept in (1.0, 0.25):
            best = min((s for s in sweep if s["kept"] == kept and not math.isnan(s["ms"])), key=lambda s: s["ms"])
            print(f"best attention tiling at kept {kept:.0%}: {best}")


if __name__ == "__main__":
    main()
