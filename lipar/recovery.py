"""Attention recovery: give self-attention a complete current frame although only kept tokens were
computed (DESIGN.md §4.3). The `LiparConfig.recovery` modes, named after what they do:

- "noise-aware" (the paper's method): pruned positions take the *clean* pre-RoPE K and V of the same
  position from the latest clean frame in the cache, K rotated at the current frame's time index.
  Duplicating the current step's noisy K/V instead correlates the noise and inflates attention.
- "noisy-copy" (an ablation; this project once called it "m-degree", which is the paper's name for the
  attention *window*, engine.config.KVWindow): the same copy, but from the previous frame's K/V at the
  same denoising step, which the engine keeps.
- "exclude" (an ablation, once "none"): pruned positions are left out of attention (`key_padding_mask`).

Each mode is one small object with the same four calls, so the denoising loop reads the same for all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lipar.config import LiparConfig
from lipar.kernels import recovery as kernels
from lipar.kernels import use_triton


def recover_kv(
    src_k_pre: Tensor,
    src_v: Tensor,
    dst_k: Tensor,
    dst_v: Tensor,
    dst_k_pre: Tensor,
    pruned_idx: Tensor,
    cos: Tensor,
    sin: Tensor,
) -> None:
    """Write recovered K/V for the pruned tokens into the current frame's cache slot, in place.

    src_k_pre, src_v: the source frame's pre-RoPE K and V, (B, N, H, D).
    dst_k, dst_v, dst_k_pre: the current slot's K (after RoPE), V and pre-RoPE K, (B, N, H, D);
    strided views of the cache are fine.
    pruned_idx (P,) int64; cos, sin (P, D/2) float32: RoPE of the pruned tokens at the current frame's
    (t, row, col). For p in pruned_idx: dst_k[:, p] = rope(src_k_pre[:, p]), dst_v[:, p] = src_v[:, p],
    dst_k_pre[:, p] = src_k_pre[:, p]; nothing else is written.
    """
    shape = src_k_pre.shape
    tensors = (src_k_pre, src_v, dst_k, dst_v, dst_k_pre)
    if len(shape) != 4 or any(t.shape != shape for t in tensors):
        raise ValueError(
            "K/V tensors must all be (B, N, H, D) of one shape, got " + ", ".join(str(tuple(t.shape)) for t in tensors)
        )
    if any(t.dtype != src_k_pre.dtype or t.device != src_k_pre.device for t in tensors):
        raise ValueError("K/V tensors must share one dtype and device")
    if pruned_idx.dim() != 1 or pruned_idx.dtype != torch.int64 or pruned_idx.device != src_k_pre.device:
        raise ValueError(f"pruned_idx must be a 1-D int64 tensor on {src_k_pre.device}")
    table = (pruned_idx.numel(), shape[3] // 2)
    for name, t in (("cos", cos), ("sin", sin)):
        if tuple(t.shape) != table or t.dtype != torch.float32 or t.device != src_k_pre.device:
            raise ValueError(
                f"{name} must be float32 of shape (P, D/2) = {table} on {src_k_pre.device}, "
                f"got {t.dtype} {tuple(t.shape)} on {t.device}"
            )
    if use_triton("recovery", src_k_pre):
        kernels.recover_kv_triton(src_k_pre, src_v, dst_k, dst_v, dst_k_pre, pruned_idx, cos, sin)
    else:
        kernels.recover_kv_reference(src_k_pre, src_v, dst_k, dst_v, dst_k_pre, pruned_idx, cos, sin)


def key_padding_mask(valid_len: int, current_slot_offset: int, pruned_idx: Tensor) -> Tensor:
    """For recovery "exclude": (valid_len,) bool over the valid keys, True = attend, False at the pruned
    tokens of the current frame, whose slot starts at key `current_slot_offset`."""
    if not 0 <= current_slot_offset < valid_len:
        raise ValueError(f"current_slot_offset {current_slot_offset} must lie in [0, valid_len={valid_len})")
    if pruned_idx.dim() != 1 or pruned_idx.dtype != torch.int64:
        raise ValueError("pruned_idx must be a 1-D int64 tensor")
    mask = torch.ones(valid_len, dtype=torch.bool, device=pruned_idx.device)
    return mask.index_fill_(0, pruned_idx + current_slot_offset, False)


SlotKV = tuple[Tensor, Tensor]  # (k_pre, v) of every layer for the current frame's cache slot


class Recovery:
    """ "noise-aware": the generator fills the pruned positions from the clean previous frame before the
    first pass of every frame; this mode then leaves them as they are. The generator calls, for a frame
    with pruned tokens, `key_mask` once, `source(step)` before each denoising step (None: leave the slot
    as it is), and `after_step`; then `end_frame` for every frame. The cache pass always sees the clean
    K/V, so the cache only ever holds clean frames."""

    name = "noise-aware"
    stores_step_kv = False  # whether denoising steps write K before RoPE into the slot (for `after_step`)

    def key_mask(self, valid_len: int, current_slot_offset: int, pruned_idx: Tensor) -> Tensor | None:
        return None

    def source(self, step: int) -> SlotKV | None:
        return None

    def after_step(self, step: int, snapshot: Callable[[], SlotKV]) -> None:
        pass

    def end_frame(self) -> None:
        pass


class ExcludeRecovery(Recovery):
    name = "exclude"

    def key_mask(self, valid_len: int, current_slot_offset: int, pruned_idx: Tensor) -> Tensor | None:
        return key_padding_mask(valid_len, current_slot_offset, pruned_idx)


class NoisyCopyRecovery(Recovery):
    """Before step i, the pruned positions take the previous frame's K/V after its step i (when the
    previous frame ran as many steps; else they keep the clean copy)."""

    name = "noisy-copy"
    stores_step_kv = True

    def __init__(self) -> None:
        self._previous: list[SlotKV] = []
        self._current: list[SlotKV] = []

    def source(self, step: int) -> SlotKV | None:
        return self._previous[step] if step < len(self._previous) else None

    def after_step(self, step: int, snapshot: Callable[[], SlotKV]) -> None:
        self._current.append(snapshot())

    def end_frame(self) -> None:
        self._previous, self._current = self._current, []


def make_recovery(config: LiparConfig) -> Recovery:
    """A fresh recovery object for `config.recovery` (state starts empty: use one per stream). With LIPAR off
    no token is pruned, so no mode's state would be read: the stateless one, or the unpruned stream would pay
    for the noisy-copy mode's per-step K/V (at Wan scale six whole-frame copies of every layer's K/V and 90
    more cache writes per latent frame, about 2 ms on an H200)."""
    mode = config.recovery if config.enabled else Recovery.name
    for cls in (Recovery, ExcludeRecovery, NoisyCopyRecovery):
        if cls.name == mode:
            return cls()
    raise ValueError(f"unknown recovery mode {mode!r}")
