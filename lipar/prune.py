"""Pruned forward plumbing: gather the kept tokens, restore a full frame, and kept tokens' positions.

DESIGN.md §4.2 (drop pruned tokens after patch embedding, RoPE at true positions) and §4.4
(restoration: pruned positions take the previous frame's values).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lipar.kernels import gather as kernels
from lipar.kernels import use_triton


def _check_idx(name: str, idx: Tensor, device: torch.device) -> None:
    if idx.dim() != 1 or idx.dtype != torch.int64:
        raise ValueError(f"{name} must be a 1-D int64 tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
    if idx.device != device:
        raise ValueError(f"{name} is on {idx.device} but the tokens are on {device}")


def gather(tokens: Tensor, keep_idx: Tensor) -> Tensor:
    """tokens (B, N, D), keep_idx (K,) int64 -> kept tokens (B, K, D), in keep_idx order."""
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (B, N, D), got shape {tuple(tokens.shape)}")
    _check_idx("keep_idx", keep_idx, tokens.device)
    if use_triton("gather", tokens):
        return kernels.gather_triton(tokens, keep_idx)
    return kernels.gather_reference(tokens, keep_idx)


def restore(kept: Tensor, keep_idx: Tensor, previous: Tensor) -> Tensor:
    """kept (B, K, D) at keep_idx (K,) ascending, previous (B, N, D) -> (B, N, D), a new tensor:
    kept rows at keep_idx, the previous frame's rows at every other position."""
    if previous.dim() != 3 or kept.dim() != 3:
        raise ValueError(
            f"kept and previous must be (B, K, D) and (B, N, D), got {tuple(kept.shape)} and {tuple(previous.shape)}"
        )
    _check_idx("keep_idx", keep_idx, previous.device)
    b, k, d = kept.shape
    if (b, d) != (previous.shape[0], previous.shape[2]) or k != keep_idx.numel() or k > previous.shape[1]:
        raise ValueError(
            f"kept {tuple(kept.shape)}, keep_idx ({keep_idx.numel()},) and previous {tuple(previous.shape)} "
            "do not agree: need kept (B, K, D), keep_idx (K,), previous (B, N, D) with K <= N"
        )
    if kept.dtype != previous.dtype or kept.device != previous.device:
        raise ValueError(
            f"kept ({kept.dtype}, {kept.device}) and previous ({previous.dtype}, {previous.device}) "
            "must share dtype and device"
        )
    if use_triton("gather", kept, previous):
        return kernels.restore_triton(kept, keep_idx, previous)
    return kernels.restore_reference(kept, keep_idx, previous)


def positions(t: int, gh: int, gw: int, idx: Tensor | None = None, device: torch.device | str = "cpu") -> Tensor:
    """(t, row, col) of tokens of frame t on a (gh, gw) grid -> (K, 3) int64; idx (K,) flat
    row-major indices, None for all gh*gw tokens."""
    if t < 0 or gh < 1 or gw < 1:
        raise ValueError(f"need t >= 0 and a positive grid, got t={t}, grid=({gh}, {gw})")
    if idx is None:
        idx = torch.arange(gh * gw, device=device)
    else:
        _check_idx("idx", idx, idx.device)
        idx = idx.to(device)
    return torch.stack((torch.full_like(idx, t), idx // gw, idx % gw), dim=1)
