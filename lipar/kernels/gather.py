"""Token gather (kept tokens out of a frame) and restoration scatter (kept tokens back into a frame).

The restoration kernel writes every output row once, from the kept tokens or from the previous
frame, instead of copying the previous frame whole and then scattering the kept rows over it. It finds
each row's kept slot by a binary search in the ascending `keep_idx`, so it needs no inverse map.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_BLOCK_ROWS = 16


def gather_reference(tokens: Tensor, keep_idx: Tensor) -> Tensor:
    """tokens (B, N, D), keep_idx (K,) -> (B, K, D)."""
    return tokens.index_select(1, keep_idx)


def restore_reference(kept: Tensor, keep_idx: Tensor, previous: Tensor) -> Tensor:
    """kept (B, K, D) at keep_idx (K,), previous (B, N, D) -> (B, N, D)."""
    return previous.index_copy(1, keep_idx, kept)


@triton.jit
def _gather_kernel(
    src,
    idx,
    out,
    K,
    D,
    s_b,
    s_n,
    s_d,
    o_b,
    o_k,
    o_d,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < K
    src_rows = tl.load(idx + rows, mask=row_ok, other=0).to(tl.int64)
    ok = row_ok[:, None] & (cols < D)[None, :]
    x = tl.load(src + b * s_b + src_rows[:, None] * s_n + cols[None, :] * s_d, mask=ok)
    tl.store(out + b * o_b + rows[:, None].to(tl.int64) * o_k + cols[None, :] * o_d, x, mask=ok)


@triton.jit
def _restore_kernel(
    kept,
    idx,
    prev,
    out,
    K,
    N,
    D,
    steps,
    k_b,
    k_k,
    k_d,
    p_b,
    p_n,
    p_d,
    o_b,
    o_n,
    o_d,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < N
    # lower bound of each row in the ascending keep_idx: first j with keep_idx[j] >= row
    lo = tl.zeros([BLOCK_R], dtype=tl.int32)
    hi = tl.zeros([BLOCK_R], dtype=tl.int32) + K
    for _ in range(steps):
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(idx + mid, mask=active, other=0)
        right = active & (v < rows)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & ~right, mid, hi)
    found = row_ok & (lo < K)
    found = found & (tl.load(idx + lo, mask=found, other=-1) == rows)
    col_ok = (cols < D)[None, :]
    x_kept = tl.load(
        kept + b * k_b + lo[:, None].to(tl.int64) * k_k + cols[None, :] * k_d, mask=found[:, None] & col_ok
    )
    r64 = rows[:, None].to(tl.int64)
    x_prev = tl.load(prev + b * p_b + r64 * p_n + cols[None, :] * p_d, mask=(row_ok & ~found)[:, None] & col_ok)
    x = tl.where(found[:, None], x_kept, x_prev)
    tl.store(out + b * o_b + r64 * o_n + cols[None, :] * o_d, x, mask=row_ok[:, None] & col_ok)


def _block_cols(d: int) -> int:
    return min(triton.next_power_of_2(d), 256)


def gather_triton(tokens: Tensor, keep_idx: Tensor, out: Tensor | None = None) -> Tensor:
    """Triton version of `gather_reference`; any strides; writes into `out` (B, K, D) if given."""
    b, _, d = tokens.shape
    k = keep_idx.numel()
    if out is None:
        out = torch.empty(b, k, d, device=tokens.device, dtype=tokens.dtype)
    if k == 0 or b == 0:
        return out
    bc = _block_cols(d)
    grid = (triton.cdiv(k, _BLOCK_ROWS), triton.cdiv(d, bc), b)
    _gather_kernel[grid](tokens, keep_idx, out, k, d, *tokens.stride(), *out.stride(), BLOCK_R=_BLOCK_ROWS, BLOCK_C=bc)
    return out


def restore_triton(kept: Tensor, keep_idx: Tensor, previous: Tensor, out: Tensor | None = None) -> Tensor:
    """Triton version of `restore_reference`; keep_idx must be ascending and unique; writes into
    `out` (B, N, D) if given."""
    b, n, d = previous.shape
    k = keep_idx.numel()
    if out is None:
        out = torch.empty(b, n, d, device=previous.device, dtype=previous.dtype)
    if n == 0 or b == 0:
        return out
    bc = _block_cols(d)
    grid = (triton.cdiv(n, _BLOCK_ROWS), triton.cdiv(d, bc), b)
    _restore_kernel[grid](
        kept,
        keep_idx,
        previous,
        out,
        k,
        n,
        d,
        k.bit_length(),
        *kept.stride(),
        *previous.stride(),
        *out.stride(),
        BLOCK_R=_BLOCK_ROWS,
        BLOCK_C=bc,
    )
    return out
