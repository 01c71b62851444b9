"""FP8 (e4m3) linear layers for the DiT's large projections, an option for speed on Hopper GPUs.

Weights are quantised once, activations at every call; `torch._scaled_mm` multiplies the e4m3
operands on the tensor cores (twice the bf16 rate) and applies both dequantisation scales and the
bias in its epilogue. Two scalings:

- "tensor": one scale per tensor (activation amax over the whole call, weight amax over the matrix);
- "row": one scale per activation row (token) and one per weight output channel, which keeps a token
  with small values from losing its precision to another token's outlier.

Where `_scaled_mm` is not available (the CPU), the same arithmetic runs as `fp8_matmul_reference`
on dequantised operands, which is what the CPU tests check. The quality cost against bf16 is in
benchmarks/results/gpu_h200/fp8_quality.json (benchmarks/fp8_quality.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
SCALINGS = ("tensor", "row")
_TINY = 1e-12  # amax floor: an all-zero tensor gets a finite scale (and quantises to zeros)


def _check_scaling(scaling: str) -> None:
    if scaling not in SCALINGS:
        raise ValueError(f"unknown FP8 scaling {scaling!r}; choose one of: {', '.join(SCALINGS)}")


def quantize(x: Tensor, scaling: str) -> tuple[Tensor, Tensor]:
    """x (M, K) -> (e4m3 values (M, K), float32 dequantisation scale: () for "tensor", (M, 1) for "row").

    The scale maps each tensor's (or row's) largest magnitude to e4m3's largest value, 448, so
    x ~= values * scale with e4m3's 3-bit mantissa (relative rounding error <= 1/16)."""
    _check_scaling(scaling)
    xf = x.float()
    amax = xf.abs().amax() if scaling == "tensor" else xf.abs().amax(dim=-1, keepdim=True)
    scale = amax.clamp(min=_TINY) / FP8_MAX
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def fp8_matmul_reference(x_q: Tensor, x_scale: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None) -> Tensor:
    """What `torch._scaled_mm` computes, in float32: (x_q * x_scale) @ (w_q * w_scale)^T + bias.

    x_q (M, K), w_q (N, K) e4m3; x_scale () or (M, 1); w_scale () or (1, N) (`_scaled_mm`'s layout)."""
    out = (x_q.float() * x_scale) @ (w_q.float() * w_scale.reshape(-1, 1)).t()
    return out if bias is None else out + bias.float()


class Float8Linear(nn.Module):
    """Drop-in for an `nn.Linear` (same call, same output dtype) with e4m3 weights and activations."""

    def __init__(self, linear: nn.Linear, scaling: str) -> None:
        super().__init__()
        _check_scaling(scaling)
        self.scaling = scaling
        self.out_dtype = linear.weight.dtype
        w_q, w_scale = quantize(linear.weight.detach(), scaling)  # (N, K), () | (N, 1)
        self.register_buffer("weight", w_q)
        self.register_buffer("weight_scale", w_scale.reshape(1, -1) if scaling == "row" else w_scale)
        bias = None if linear.bias is None else linear.bias.detach().to(self.out_dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x_q, x_scale = quantize(x.reshape(-1, x.shape[-1]), self.scaling)  # (M, K)
        if x.is_cuda:
            out = torch._scaled_mm(
                x_q,
                self.weight.t(),
                scale_a=x_scale,
                scale_b=self.weight_scale,
                bias=self.bias,
                out_dtype=self.out_dtype,
            )
        else:
            out = fp8_matmul_reference(x_q, x_scale, self.weight, self.weight_scale, self.bias).to(self.out_dtype)
        return out.reshape(*lead, -1)


def quantize_linears(model: nn.Module, scaling: str) -> int:
    """Replace the per-token projections of every DiT block (self-attention q, k, v, o; cross-attention
    q, o; both FFN layers) by `Float8Linear`s, in place. The cross-attention K/V (once per prompt),
    embeddings and head stay in their dtype. Returns how many layers were replaced."""
    _check_scaling(scaling)
    count = 0
    for block in model.blocks:
        for parent, name in (
            *((block.self_attn, n) for n in ("q", "k", "v", "o")),
            (block.cross_attn, "q"),
            (block.cross_attn, "o"),
            (block.ffn, "0"),
            (block.ffn, "2"),
        ):
            layer = getattr(parent, name)
            if isinstance(layer, nn.Linear):
                setattr(parent, name, Float8Linear(layer, scaling))
                count += 1
    return count
