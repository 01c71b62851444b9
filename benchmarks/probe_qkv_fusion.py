"""Three q/k/v projections against one fused (3*dim) projection, at the token counts a LIPAR frame runs.

    python benchmarks/probe_qkv_fusion.py --out benchmarks/results/gpu_h200/sessionN/probe_qkv.json

The profile (session 19) shows the self-attention q, k and v as separate GEMMs of N = dim = 1536: at 1,560
tokens that is 143 output tiles on 132 SMs (two waves, the second nearly empty), at ~890 kept tokens one
partly filled wave. One (M, 3*dim) product fills the card. Timed as 30 layers' worth inside one CUDA graph
(what the runner replays), CUDA events, median of --repeats.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def graphed(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--tokens", default="1560,1170,890,780,390")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    d, dev, dt = a.dim, "cuda", torch.bfloat16
    ws = [torch.randn(d, d, device=dev, dtype=dt) / d**0.5 for _ in range(3 * a.layers)]
    bs = [torch.randn(d, device=dev, dtype=dt) for _ in range(3 * a.layers)]
    fused_w = [torch.cat(ws[3 * i : 3 * i + 3]) for i in range(a.layers)]
    fused_b = [torch.cat(bs[3 * i : 3 * i + 3]) for i in range(a.layers)]
    rows = {}
    for m in (int(t) for t in a.tokens.split(",")):
        x = torch.randn(1, m, d, device=dev, dtype=dt)
        out_sep = [None] * (3 * a.layers)
        out_fused = [None] * a.layers

        def separate(x=x, out_sep=out_sep) -> None:
            for i in range(3 * a.layers):
                out_sep[i] = F.linear(x, ws[i], bs[i])

        def fused(x=x, out_fused=out_fused) -> None:
            for i in range(a.layers):
                out_fused[i] = F.linear(x, fused_w[i], fused_b[i])

        t_sep, t_fused = median_ms(graphed(separate), a.repeats), median_ms(graphed(fused), a.repeats)
        q, k, v = out_fused[0].split(d, dim=-1)
        same = bool(torch.equal(q, out_sep[0]) and torch.equal(k, out_sep[1]) and torch.equal(v, out_sep[2]))
        rows[m] = {"separate_ms": t_sep, "fused_ms": t_fused, "ratio": t_sep / t_fused, "bitwise_equal": same}
        print(m, rows[m], flush=True)
    result = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "what": f"{a.layers} layers of q/k/v projections (dim {a.dim}, bf16) in one CUDA graph, ms per graph",
        "tokens": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
