"""Three q/k/v projections against one fused (3*dim) projection, at the token counts a LIPAR frame runs.

    python benchmarks/probe_qkv_fusion.py --out benchmarks/results/gpu_h200/sessionN/probe_qkv.json [--block]

The profile (session 19) shows the self-attention q, k and v as separate GEMMs of N = dim = 1536: at 1,560
tokens that is 143 output tiles on 132 SMs (two waves, the second nearly empty), at ~890 kept tokens one
partly filled wave. One (M, 3*dim) product fills the card. Timed as 30 layers' worth inside one CUDA graph
(what the runner replays), CUDA events, median of --repeats.

--block times instead one wan2.1-1.3b block's compiled `attention_inputs` (LayerNorm + modulation, the
projections, QK RMSNorm, RoPE: what the runner compiles) per way of splitting the joined product, since
inductor's kernels after it depend on the split's strides (session 20: the chunked views made the norm +
RoPE kernels 3-4x slower), and counts the graphs dynamo compiled over a run of kept counts.
Session 20 (H200): every joined variant was slower than the three products inside the compiled block
(benchmarks/results/gpu_h200/session20/probe_qkv_block.json), so the model keeps three.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dit_pass import time_cuda  # noqa: E402

from engine.backends import capture  # noqa: E402
from engine.dit import AttentionProjections  # noqa: E402


def graphed(fn):
    """`fn` captured in a CUDA graph (as the runner replays a pass): its replay."""
    graph = torch.cuda.CUDAGraph()
    capture(graph, fn, warmups=3)
    return graph.replay


def median_ms(fn, repeats: int) -> float:
    return float(np.median(time_cuda(fn, repeats, warmup=0)))


def qkv_variants() -> dict:
    """The model's three products ("separate") and ways of splitting one joined product (`sa._qkv`)."""

    def fused_chunk(sa, x):
        return F.linear(x, *sa._qkv).chunk(3, dim=-1)

    def fused_contiguous(sa, x):
        return tuple(t.contiguous() for t in F.linear(x, *sa._qkv).chunk(3, dim=-1))

    def fused_qk_contiguous(sa, x):  # the normed q and k as copies; v stays a view (the cache write copies it)
        q, k, v = F.linear(x, *sa._qkv).chunk(3, dim=-1)
        return q.contiguous(), k.contiguous(), v

    def fused_out_buffers(sa, x):  # the product into one (3, B, n, dim) buffer: each part contiguous
        w, b = sa._qkv
        out = torch.baddbmm(b.view(3, 1, -1), x.flatten(0, 1).expand(3, -1, -1), w.view(3, -1, w.shape[1]).mT)
        return tuple(out.view(3, *x.shape[:-1], -1).unbind(0))

    joined = (fused_chunk, fused_contiguous, fused_qk_contiguous, fused_out_buffers)
    return {"separate": AttentionProjections.qkv, **{f.__name__: f for f in joined}}


def time_block(a) -> dict:
    """The compiled attention_inputs of one wan2.1-1.3b block, per q/k/v variant."""
    from engine.config import get_config
    from engine.dit import DiTBlock

    cfg = get_config("wan2.1-1.3b")
    torch.manual_seed(0)
    block = DiTBlock(cfg).cuda().to(torch.bfloat16).eval()
    sa = block.self_attn
    with torch.no_grad():  # the joined product's weights, beside the model's three (the variants read them)
        sa._qkv = (torch.cat([sa.q.weight, sa.k.weight, sa.v.weight]), torch.cat([sa.q.bias, sa.k.bias, sa.v.bias]))
    original = AttentionProjections.qkv
    rows = {}
    sizes = [int(t) for t in a.tokens.split(",")]
    try:
        for name, variant in qkv_variants().items():
            torch._dynamo.reset()
            AttentionProjections.qkv = lambda sa, x, variant=variant: variant(sa, x)
            fn = torch.compile(block.attention_inputs, dynamic=True, fullgraph=True)
            row = {}
            with torch.inference_mode():
                inputs = {}
                for m in sizes:
                    x = torch.randn(1, m, cfg.dim, device="cuda", dtype=torch.bfloat16)
                    e = torch.randn(1, 1, 6, cfg.dim, device="cuda")
                    cos, sin = (
                        torch.randn(m, cfg.head_dim // 2, device="cuda"),
                        torch.randn(m, cfg.head_dim // 2, device="cuda"),
                    )
                    inputs[m] = (x, e, cos, sin)
                    fn(*inputs[m])
                for m in sizes:  # a second round: a recompile here would be a stall mid-stream
                    fn(*inputs[m])
                row["graphs_compiled"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
                ref = original(block.self_attn, inputs[sizes[0]][0])
                got = variant(block.self_attn, inputs[sizes[0]][0])
                row["max_abs_diff_vs_separate"] = max(float((r - g).abs().max()) for r, g in zip(ref, got))
                for m in sizes:
                    outs = []

                    def layers(m=m, outs=outs, fn=fn, inputs=inputs) -> None:
                        outs.clear()
                        for _ in range(a.layers):
                            outs.append(fn(*inputs[m]))

                    row[m] = median_ms(graphed(layers), a.repeats)
            rows[name] = row
            print(name, row, flush=True)
    finally:
        AttentionProjections.qkv = original
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--tokens", default="1560,1170,890,780,390")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--block", action="store_true", help="time a compiled block's input half per q/k/v variant")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    if a.block:
        what = f"{a.layers} calls of one wan2.1-1.3b block's compiled attention_inputs in one CUDA graph, ms"
        result = {"what": what, "variants": time_block(a)}
    else:
        what = f"{a.layers} layers of q/k/v projections (dim {a.dim}, bf16) in one CUDA graph, ms per graph"
        result = {"what": what, "tokens": time_gemms(a)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"card": torch.cuda.get_device_name(), "torch": torch.__version__, **result}, indent=2))


def time_gemms(a) -> dict:
    """30 layers' q/k/v products, three of width dim against one of 3 * dim, per token count."""
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
    return rows


if __name__ == "__main__":
    main()
