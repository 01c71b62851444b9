"""Milliseconds per full-frame DiT pass with a full KV window, next to the FLOP floor, per variant.

    python benchmarks/dit_pass.py --model wan2.1-1.3b --out benchmarks/results/dit_pass

Random weights (timing only), bf16, CUDA events, median of --repeats passes. The floor is the
pass's matmul FLOPs over this card's measured bf16 matmul rate (an 8192^3 product, same run).
Variants, in this order on one model (each failure is recorded, not fatal): eager; CUDA graphs with
SDPA's own choice, with the per-shape tuned attention (`lipar.kernels.attention`), and with each of
--backends forced; the blocks compiled (eager; graphs with SDPA and tuned attention); FP8 linears
(row-wise and per-tensor scales, compiled, graphs) on copies of the same weights.
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

from engine.backends import CudaGraphRunner, EagerRunner  # noqa: E402
from engine.config import get_config  # noqa: E402
from engine.dit import CausalDiT, init_weights  # noqa: E402
from engine.fp8 import SCALINGS, quantize_linears  # noqa: E402
from engine.kv_cache import RollingKVCache  # noqa: E402
from lipar.kernels.attention import set_attention_backend  # noqa: E402


def time_cuda(fn, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return out


def matmul_rate() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = np.median(time_cuda(lambda: a @ b, 10))
    return 2 * 8192**3 / (ms / 1000)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="wan2.1-1.3b")
    p.add_argument("--size", default=None, help="HxW (default: the model's)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--no-fp8", action="store_true", help="skip the FP8 variants")
    p.add_argument(
        "--backends", default="flash,efficient,cudnn,split_kv,cudnn_split", help="attention backends to force, each"
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/dit_pass"))
    a = p.parse_args()
    cfg = get_config(a.model)
    h, w = (int(v) for v in a.size.split("x")) if a.size else (cfg.height, cfg.width)
    n = cfg.tokens_per_frame(h, w)
    dev, dtype = torch.device("cuda"), torch.bfloat16
    model = CausalDiT(cfg)
    init_weights(model)
    model.to(dev, dtype).eval()
    cache = RollingKVCache(cfg.layers, 1, n, cfg.heads, cfg.head_dim, cfg.window, dev, dtype)
    for t in (cache.k, cache.v, cache.k_pre):
        t.normal_()
    cache.frames = cfg.window.slots - 1  # a full window: sinks + m clean frames + the current one
    cache.append()
    text_kv = model.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, device=dev))
    gh, gw = h // cfg.vae_scale // 2, w // cfg.vae_scale // 2
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    pos = torch.stack([torch.full((n,), cache.frames), rows.flatten(), cols.flatten()], 1).to(dev)
    x = torch.randn(1, n, cfg.patch_dim, device=dev, dtype=dtype)
    idx = cache.token_index(cache.current_slot, torch.arange(n, device=dev))
    t = torch.full((1, 1), 937.5, device=dev)

    def timed(name: str, make_runner) -> None:
        """Time one variant; its first call (capture, compilation) is timed apart."""
        try:
            start = time.perf_counter()
            runner = make_runner()
            runner(x, pos, t, text_kv, idx, False)
            torch.cuda.synchronize()
            first_s = time.perf_counter() - start
            ms = time_cuda(lambda: runner(x, pos, t, text_kv, idx, False), a.repeats)
            results[name] = {"ms_median": float(np.median(ms)), "ms_p95": float(np.percentile(ms, 95)), "ms": ms}
            results[name]["first_call_s"] = first_s
        except Exception as e:  # noqa: BLE001 - a variant that fails on this card is a result too
            results[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(name, {k: v for k, v in results[name].items() if k != "ms"}, flush=True)

    def graphs(backend: str | None, compiled: bool, m: CausalDiT = model):
        def make():
            set_attention_backend(backend)  # read when the graphs are captured (first call)
            return CudaGraphRunner(m, cache, compiled=compiled)

        return make

    results: dict[str, dict] = {}
    with torch.inference_mode():
        timed("eager", lambda: EagerRunner(model, cache))
        timed("cudagraph+sdpa", graphs("sdpa", False))  # the committed state before issue 15
        timed("cudagraph", graphs(None, False))  # attention tuned per shape
        for backend in filter(None, a.backends.split(",")):
            timed(f"cudagraph+{backend}", graphs(backend, False))
        set_attention_backend(None)
        timed("compiled", lambda: (model.compile_blocks(), EagerRunner(model, cache))[1])
        timed("cudagraph+compiled+sdpa", graphs("sdpa", True))
        timed("cudagraph+compiled", graphs(None, True))  # the shipped default
        for scaling in SCALINGS:
            if a.no_fp8:
                break
            with torch.device(dev):
                fp8 = CausalDiT(cfg)
            fp8.load_state_dict(model.state_dict())
            fp8.to(dtype).eval()
            quantize_linears(fp8, scaling)
            timed(f"cudagraph+compiled+fp8_{scaling}", graphs(None, True, fp8))
            del fp8
            torch.cuda.empty_cache()
        set_attention_backend(None)
    rate = matmul_rate()
    context = cache.valid_tokens
    flops = model.flops_per_token(context, cfg.text_len) * n
    floor_ms = flops / rate * 1000
    out = {
        "model": a.model,
        "size": f"{h}x{w}",
        "tokens": n,
        "context_tokens": context,
        "window": {"sinks": cfg.window.sinks, "m": cfg.window.m},
        "dtype": "bf16",
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "command": "python " + " ".join(sys.argv),
        "repeats": a.repeats,
        "matmul_tflops_measured": rate / 1e12,
        "pass_tflop": flops / 1e12,
        "floor_ms": floor_ms,
        "runs": results,
    }
    timed_runs = {k: r for k, r in results.items() if "ms_median" in r}
    for r in timed_runs.values():
        r["measured_over_floor"] = r["ms_median"] / floor_ms
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "dit_pass.json").write_text(json.dumps(out, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(timed_runs)
    ax.barh(names, [timed_runs[k]["ms_median"] for k in names], color="tab:blue")
    ax.axvline(floor_ms, color="k", ls="--", label=f"bf16 FLOP floor {floor_ms:.1f} ms")
    ax.set(
        xlabel="ms per full-frame pass (median)", title=f"{a.model} {h}x{w}, {out['card']}, torch {torch.__version__}"
    )
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "dit_pass.png", dpi=120)
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    for k, r in results.items():
        if "error" in r:
            print(f"{k:34s} failed: {r['error'][:200]}")
            continue
        ratio = r["measured_over_floor"]
        print(f"{k:34s} median {r['ms_median']:.2f} ms  p95 {r['ms_p95']:.2f} ms  measured/floor {ratio:.2f}")


if __name__ == "__main__":
    main()
