"""Rolling self-attention KV cache: sink frames + the last m frames + the frame being generated.

One allocation per tensor for all layers, made once. Frames live in fixed slots:
`[sink_0 .. sink_{S-1} | ring_0 .. ring_m]`. The ring has m + 1 slots: m hold the last m clean
frames and one holds the frame being generated now. A new frame takes the slot of the oldest
non-sink frame (that is the eviction), so nothing is copied or concatenated on the hot path.
Slot order does not matter to attention: RoPE is baked into K at each frame's true time index and
softmax over keys is order-free. Slots fill in order, so the valid keys are always a prefix.

K is stored after RoPE (for attention) and before RoPE (`k_pre`, for LIPAR attention recovery,
which re-rotates a clean frame's keys at another time index).
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.config import KVWindow


class RollingKVCache:
    def __init__(
        self,
        layers: int,
        batch: int,
        tokens_per_frame: int,
        heads: int,
        head_dim: int,
        window: KVWindow,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        self.window = window
        self.tokens_per_frame = tokens_per_frame
        shape = (layers, batch, window.slots * tokens_per_frame, heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.k_pre = torch.zeros(shape, device=device, dtype=dtype)
        self.frames = 0  # clean frames committed so far (= time index of the frame being generated)
        self.current_slot = 0
        self.previous_slot: int | None = None  # slot of the latest clean frame

    def slot_of(self, frame: int) -> int:
        sinks, ring = self.window.sinks, self.window.m + 1
        return frame if frame < sinks else sinks + (frame - sinks) % ring

    def append(self) -> int:
        """Open the slot for the next frame, evicting the oldest non-sink frame if the window is full."""
        self.current_slot = self.slot_of(self.frames)
        return self.current_slot

    def commit(self) -> None:
        """The current slot now holds a clean frame (written by the cache pass)."""
        self.previous_slot = self.current_slot
        self.frames += 1

    @property
    def valid_tokens(self) -> int:
        """Keys visible to the current frame: a prefix of the slots, the current slot included."""
        return min(self.frames + 1, self.window.slots) * self.tokens_per_frame

    @property
    def context_frames(self) -> int:
        """Clean frames the current frame attends to."""
        return min(self.frames, self.window.slots - 1)

    def frame(self, slot: int) -> tuple[Tensor, Tensor, Tensor]:
        """(k, v, k_pre) of one frame slot for all layers, each (layers * B, N, H, D), writable views."""
        n = self.tokens_per_frame
        s = slice(slot * n, (slot + 1) * n)
        return tuple(t[:, :, s].flatten(0, 1) for t in (self.k, self.v, self.k_pre))

    def token_index(self, slot: int, idx: Tensor) -> Tensor:
        """Flat token indices of a frame -> indices along a layer's key axis (L) in that slot."""
        return idx + slot * self.tokens_per_frame

    def view(self, layer: int) -> tuple[Tensor, Tensor]:
        """Valid keys and values of one layer, each (B, L, H, D), as views (no copy)."""
        end = self.valid_tokens
        return self.k[layer, :, :end], self.v[layer, :, :end]

    def reset(self) -> None:
        self.frames = 0
        self.current_slot = 0
        self.previous_slot = None
