"""Where cudnn_split's time goes at LIPAR's query counts (780, 890 and 1,560 queries x 12 heads against
12,480 keys, Wan's window), and whether cuDNN takes the chunks' queries as a stride-0 (expanded) batch,
which drops the S-fold copy of q, and how cuDNN then lays out its output (session 19: after q's strides, so
not contiguous; the merge reads it in place). Every time is one call replayed from a CUDA graph (the tuner's timing).

    python benchmarks/probe_cudnn_split.py OUT.json     (a CUDA GPU; results/gpu_h200/session1{8,9}/probe_attn.json)
"""

import json
import sys

import torch

import lipar.kernels.attention as A

HEADS, HEAD_DIM, KEYS = 12, 128, 12480


def timed(fn) -> float | str:
    try:
        return round(A._time_ms(fn), 4)
    except RuntimeError as e:
        return f"ERR {str(e)[:200]}"


def cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True)[:2]


def probe_splits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ref: torch.Tensor, s: int) -> dict:
    lq, chunk = q.shape[1], KEYS // s
    ks = k[0].unflatten(0, (s, chunk)).transpose(1, 2)
    vs = v[0].unflatten(0, (s, chunk)).transpose(1, 2)
    copied = q[0].transpose(0, 1).expand(s, HEADS, lq, HEAD_DIM).contiguous()
    expanded = q[0].transpose(0, 1).expand(s, HEADS, lq, HEAD_DIM)  # batch stride 0
    o, lse = cudnn(copied, ks, vs)
    row = {
        f"split{s}": timed(lambda: A.cudnn_split_attention(q, k, v, s)),
        f"split{s}_err": float((A.cudnn_split_attention(q, k, v, s).float() - ref).norm() / ref.norm()),
        f"split{s}_qcopy": timed(lambda: q[0].transpose(0, 1).expand(s, HEADS, lq, HEAD_DIM).contiguous()),
        f"split{s}_cudnn_only": timed(lambda: cudnn(copied, ks, vs)),
        f"split{s}_o_layout": [list(o.shape), list(o.stride()), o.is_contiguous(), list(lse.shape), list(lse.stride())],
    }
    try:
        o0, lse0 = cudnn(expanded, ks, vs)
        row[f"split{s}_stride0_err"] = float((o0.float() - o.float()).abs().max())
        row[f"split{s}_stride0_o_layout"] = [list(o0.stride()), o0.is_contiguous(), list(lse0.stride())]
        row[f"split{s}_stride0_o_copy"] = timed(lambda: o0.contiguous())  # what the merge used to cost on top
        row[f"split{s}_stride0_cudnn_only"] = timed(lambda: cudnn(expanded, ks, vs))
    except RuntimeError as e:
        row[f"split{s}_stride0_cudnn_only"] = f"ERR {str(e)[:300]}"
    return row


def main() -> None:
    torch.manual_seed(0)
    k, v = (torch.randn(1, KEYS, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    out = {}
    for lq in (780, 890, 1560):
        q = torch.randn(1, lq, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        ref = A.attention_reference(q, k, v).float()
        row = {"sdpa": timed(lambda: A.attention_reference(q, k, v))}  # noqa: B023 (called at once)
        for s in (4, 6, 8, 10):
            row.update(probe_splits(q, k, v, ref, s))
        out[lq] = row
        print(lq, json.dumps(row), flush=True)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
