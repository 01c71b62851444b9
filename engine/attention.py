"""What the DiT's queries attend to: a masked token sequence (training, references) or the rolling
KV cache (inference). One `attention()` facade picks the kernel."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from engine.kv_cache import RollingKVCache
from lipar.kernels.attention import attention as lipar_attention


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """q (B, n, H, D), k/v (B, L, H, D) (strided views allowed), key_mask (L,) or (n, L) bool,
    True = attend. Returns (B, n, H, D). Calls without a mask or with a per-key mask go to lipar's
    kernel choice (`lipar.kernels.attention.choose_backend`: the measured fastest per query count on
    CUDA, SDPA elsewhere); per-query masks (training) go straight to SDPA."""
    if key_mask is None or key_mask.dim() == 1:
        return lipar_attention(q, k, v, key_mask)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask)
    return out.transpose(1, 2)


class SequenceAttention:
    """Queries attend to the tokens of the same forward call under a boolean mask (n, n)."""

    def __init__(self, mask: Tensor | None) -> None:
        self.mask = mask

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor, k_pre: Tensor) -> Tensor:
        return attention(q, k, v, self.mask)


class CacheAttention:
    """Queries of the current frame attend to the cache window and to the whole current frame.

    The current tokens' K/V are written into the cache at `write_idx` (positions along a layer's key
    axis, `cache.token_index(cache.current_slot, idx)`) before attending, so nothing is concatenated.
    Positions of the current slot that are not computed here must already hold recovered K/V (LIPAR),
    or be excluded by `key_mask`.
    `store_pre` also writes K before RoPE: only the cache pass does, since only clean frames are
    sources for recovery.
    """

    def __init__(
        self,
        cache: RollingKVCache,
        write_idx: Tensor,
        store_pre: bool,
        key_mask: Tensor | None = None,
    ) -> None:
        self.cache = cache
        self.write_idx = write_idx
        self.store_pre = store_pre
        self.key_mask = key_mask

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor, k_pre: Tensor) -> Tensor:
        cache = self.cache
        cache.k[layer].index_copy_(1, self.write_idx, k)
        cache.v[layer].index_copy_(1, self.write_idx, v)
        if self.store_pre:
            cache.k_pre[layer].index_copy_(1, self.write_idx, k_pre)
        keys, values = self.cache.view(layer)
        return attention(q, keys, values, self.key_mask)


def frame_causal_mask(frames: int, tokens_per_frame: int, sinks: int, m: int, device=None, copies: int = 1) -> Tensor:
    """Block mask (L, L), True = attend, for `copies` stacked copies of a `frames`-frame clip.

    Copy 0 is the clean context (each clean frame sees itself and its window of clean frames: the
    cache pass); every other copy is a noisy version whose frame f sees the window of *clean*
    frames before it (sinks + last m) and itself, exactly what inference sees.
    """
    import torch

    f = torch.arange(frames, device=device)
    window = (f[None, :] < sinks) | (f[None, :] >= f[:, None] - m)  # key frame j in the window of query i
    before = f[None, :] < f[:, None]
    clean_ctx = window & (before | (f[None, :] == f[:, None]))  # (F, F) query frame -> clean key frame
    ctx = window & before
    eye = f[None, :] == f[:, None]
    blocks = [[None] * copies for _ in range(copies)]
    for qi in range(copies):
        for ki in range(copies):
            if ki == 0:
                blocks[qi][ki] = clean_ctx if qi == 0 else ctx
            else:
                blocks[qi][ki] = eye if qi == ki else torch.zeros_like(eye)
    frame_mask = torch.cat([torch.cat(row, dim=1) for row in blocks], dim=0)  # (cF, cF)
    return frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)
