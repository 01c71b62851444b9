"""Milliseconds per full-frame DiT pass with a full KV window, next to the FLOP floor.

    python benchmarks/dit_pass.py --model wan2.1-1.3b --out benchmarks/results/dit_pass

Random weights (timing only), bf16, CUDA events, median of --repeats passes. The floor is the
pass's matmul FLOPs over this card's measured bf16 matmul rate (an 8192^3 product, same run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.backends import CudaGraphRunner, EagerRunner  # noqa: E402
from engine.config import get_config  # noqa: E402
from engine.dit import CausalDiT, init_weights  # noqa: E402
from engine.kv_cache import RollingKVCache  # noqa: E402


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
    results = {}
    with torch.inference_mode():
        for name, runner in (("eager", EagerRunner(model, cache)), ("cudagraph", CudaGraphRunner(model, cache))):
            ms = time_cuda(lambda r=runner: r(x, pos, t, text_kv, idx, False), a.repeats)
            results[name] = {"ms_median": float(np.median(ms)), "ms_p95": float(np.percentile(ms, 95)), "ms": ms}
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
    for r in results.values():
        r["measured_over_floor"] = r["ms_median"] / floor_ms
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "dit_pass.json").write_text(json.dumps(out, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = list(results)
    ax.bar(names, [results[k]["ms_median"] for k in names], color=["tab:blue", "tab:green"])
    ax.axhline(floor_ms, color="k", ls="--", label=f"FLOP floor {floor_ms:.1f} ms")
    ax.set(ylabel="ms per full-frame pass (median)", title=f"{a.model} {h}x{w}, {out['card']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "dit_pass.png", dpi=120)
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    for k, r in results.items():
        ratio = r["measured_over_floor"]
        print(f"{k:10s} median {r['ms_median']:.2f} ms  p95 {r['ms_p95']:.2f} ms  measured/floor {ratio:.2f}")


if __name__ == "__main__":
    main()
