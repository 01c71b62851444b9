"""Attention recovery in one launch: gather a source frame's pre-RoPE K and V at the pruned
positions, rotate K at the current frame's positions, write K, V and pre-RoPE K into the cache slot.

RoPE convention (same as engine/rope.py, which lipar must not import): a head of dimension D holds D/2
complex pairs (x[2i], x[2i+1]), each rotated by (cos, sin)[i] in float32; results in x's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_BLOCK_TOKENS = 8


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, P, H, D); cos/sin (P, D/2) -> x rotated, in x's dtype."""
    xf = x.float().unflatten(-1, (-1, 2))  # (B, P, H, D/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2).to(x.dtype)


def recover_kv_reference(
    src_k_pre: Tensor,
    src_v: Tensor,
    dst_k: Tensor,
    dst_v: Tensor,
    dst_k_pre: Tensor,
    pruned_idx: Tensor,
    cos: Tensor,
    sin: Tensor,
) -> None:
    """All K/V (B, N, H, D), written in place at pruned_idx (P,); cos/sin (P, D/2)."""
    k_pre = src_k_pre.index_select(1, pruned_idx)  # (B, P, H, D)
    dst_k.index_copy_(1, pruned_idx, rope(k_pre, cos, sin))
    dst_v.index_copy_(1, pruned_idx, src_v.index_select(1, pruned_idx))
    dst_k_pre.index_copy_(1, pruned_idx, k_pre)


@triton.jit
def _recover_kernel(
    src_k_pre,
    src_v,
    dst_k,
    dst_v,
    dst_k_pre,
    idx,
    cos,
    sin,
    P,
    sk_b,
    sk_n,
    sk_h,
    sk_d,
    sv_b,
    sv_n,
    sv_h,
    sv_d,
    dk_b,
    dk_n,
    dk_h,
    dk_d,
    dv_b,
    dv_n,
    dv_h,
    dv_d,
    dp_b,
    dp_n,
    dp_h,
    dp_d,
    c_p,
    c_i,
    s_p,
    s_i,
    HD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # columns run over the flattened (H, D) of a token, so a contiguous cache is read in whole rows
    b = tl.program_id(2).to(tl.int64)
    j = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    col = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    j_ok = j < P
    ok = j_ok[:, None] & (col < HD)[None, :]
    n = tl.load(idx + j, mask=j_ok, other=0).to(tl.int64)[:, None]  # (BLOCK_P, 1) token positions
    h = (col // HEAD_DIM)[None, :]
    d = (col % HEAD_DIM)[None, :]
    pair = d // 2
    even = (d % 2) == 0
    j2 = j[:, None]

    src = src_k_pre + b * sk_b + n * sk_n + h * sk_h
    x = tl.load(src + d * sk_d, mask=ok)
    partner = tl.load(src + (d ^ 1) * sk_d, mask=ok).to(tl.float32)
    c = tl.load(cos + j2 * c_p + pair * c_i, mask=ok)
    s = tl.load(sin + j2 * s_p + pair * s_i, mask=ok)
    xf = x.to(tl.float32)
    # pair (x0, x1) -> (x0 c - x1 s, x1 c + x0 s)
    rotated = tl.where(even, xf * c - partner * s, xf * c + partner * s)
    v = tl.load(src_v + b * sv_b + n * sv_n + h * sv_h + d * sv_d, mask=ok)

    tl.store(dst_k + b * dk_b + n * dk_n + h * dk_h + d * dk_d, rotated.to(dst_k.dtype.element_ty), mask=ok)
    tl.store(dst_v + b * dv_b + n * dv_n + h * dv_h + d * dv_d, v, mask=ok)
    tl.store(dst_k_pre + b * dp_b + n * dp_n + h * dp_h + d * dp_d, x, mask=ok)


def recover_kv_triton(
    src_k_pre: Tensor,
    src_v: Tensor,
    dst_k: Tensor,
    dst_v: Tensor,
    dst_k_pre: Tensor,
    pruned_idx: Tensor,
    cos: Tensor,
    sin: Tensor,
) -> None:
    """Triton version of `recover_kv_reference`: one launch, any strides."""
    b, _, h, d = src_k_pre.shape
    p = pruned_idx.numel()
    if p == 0 or b == 0:
        return
    hd = h * d
    block_c = min(triton.next_power_of_2(hd), 512)
    grid = (triton.cdiv(p, _BLOCK_TOKENS), triton.cdiv(hd, block_c), b)
    _recover_kernel[grid](
        src_k_pre,
        src_v,
        dst_k,
        dst_v,
        dst_k_pre,
        pruned_idx,
        cos,
        sin,
        p,
        *src_k_pre.stride(),
        *src_v.stride(),
        *dst_k.stride(),
        *dst_v.stride(),
        *dst_k_pre.stride(),
        *cos.stride(),
        *sin.stride(),
        HD=hd,
        HEAD_DIM=d,
        BLOCK_P=_BLOCK_TOKENS,
        BLOCK_C=block_c,
    )
