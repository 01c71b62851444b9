"""Rolling self-attention KV cache: sink frames + the last m frames + the block being generated.

One allocation per tensor for all layers, made once, sized from the window (`KVWindow.slots`).
Frames live in fixed slots: `[sink_0 .. sink_{S-1} | ring_0 .. ring_{m+B-1}]`. The ring has m + B
slots (B = frames per block): m hold the last m clean frames and B hold the block being generated
now. A new block takes the slots of the oldest non-sink frames (that is the eviction), so nothing
is copied or concatenated on the hot path. Slot order does not matter to attention: RoPE is baked
into K at each frame's true time index and softmax over keys is order-free. Slots fill in order,
so the valid keys are always a prefix; a block's queries see the whole block (block-causal).

K is stored after RoPE (for attention) and before RoPE (`k_pre`, for LIPAR attention recovery,
which re-rotates a clean frame's keys at another time index). The clean latent tokens of each
frame are kept too, so a prompt switch can recompute the cached K/V under the new prompt.
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
        token_dim: int = 0,
    ) -> None:
        """`token_dim` > 0 also keeps each frame's clean latent tokens (batch, N, token_dim), for `recache`."""
        self.window = window
        self.tokens_per_frame = tokens_per_frame
        shape = (layers, batch, window.slots * tokens_per_frame, heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.k_pre = torch.zeros(shape, device=device, dtype=dtype)
        self.clean = torch.zeros((batch, window.slots * tokens_per_frame, token_dim), device=device)
        # slot offsets on the device, one tensor per slot tuple (the ring repeats a few): a fresh
        # torch.tensor(list, device="cuda") copies from pageable host memory, a host sync in every block
        self._slot_offsets: dict[tuple[int, ...], Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.frames = 0  # clean frames committed so far (= time index of the block's first frame)
        self.current_slots = [self.slot_of(f) for f in range(self.window.block)]
        self.previous_slot: int | None = None  # slot of the latest clean frame
        self.slot_time = [-1] * self.window.slots  # time index of the clean frame in each slot (-1: none)

    def slot_of(self, frame: int) -> int:
        sinks, ring = self.window.sinks, self.window.m + self.window.block
        return frame if frame < sinks else sinks + (frame - sinks) % ring

    @property
    def current_slot(self) -> int:
        """The slot of the block's first frame (the only one when frames are generated one at a time)."""
        return self.current_slots[0]

    def append(self) -> int:
        """Open the slots of the next block (`current_slots`), evicting the oldest non-sink frames if the
        window is full. Returns the first one (the frame's slot when blocks are one frame)."""
        self.current_slots = [self.slot_of(self.frames + i) for i in range(self.window.block)]
        for slot in self.current_slots:
            self.slot_time[slot] = -1
        return self.current_slot

    def commit(self, clean: Tensor | None = None) -> None:
        """The block's slots now hold clean frames (written by the cache pass); `clean` (batch, B*N, D) are
        their latent tokens, kept when the cache was made with a token_dim."""
        if clean is not None and self.clean.shape[-1]:
            self.clean.index_copy_(1, self.block_token_index(torch.arange(clean.shape[1], device=clean.device)), clean)
        for i, slot in enumerate(self.current_slots):
            self.slot_time[slot] = self.frames + i
        self.previous_slot = self.current_slots[-1]
        self.frames += self.window.block

    @property
    def valid_tokens(self) -> int:
        """Keys visible to the current block: a prefix of the slots, the block's own slots included."""
        return min(self.frames + self.window.block, self.window.slots) * self.tokens_per_frame

    @property
    def context_frames(self) -> int:
        """Clean frames the current block attends to."""
        return min(self.frames, self.window.slots - self.window.block)

    def frame(self, slot: int) -> tuple[Tensor, Tensor, Tensor]:
        """(k, v, k_pre) of one frame slot for all layers, each (layers * B, N, H, D), writable views."""
        n = self.tokens_per_frame
        s = slice(slot * n, (slot + 1) * n)
        return tuple(t[:, :, s].flatten(0, 1) for t in (self.k, self.v, self.k_pre))

    def token_index(self, slot: int, idx: Tensor) -> Tensor:
        """Flat token indices of a frame -> indices along a layer's key axis (L) in that slot."""
        return idx + slot * self.tokens_per_frame

    def block_token_index(self, idx: Tensor, slots: list[int] | None = None) -> Tensor:
        """Token indices over a block's frames (frame i's token j is i * N + j) -> indices along a layer's
        key axis; `slots` defaults to the current block's."""
        n = self.tokens_per_frame
        key = tuple(slots or self.current_slots)
        offsets = self._slot_offsets.get(key)
        if offsets is None or offsets.device != idx.device:
            offsets = self._slot_offsets[key] = torch.tensor(key, device=idx.device) * n
        return offsets[idx // n] + idx % n

    def cached_blocks(self) -> list[list[int]]:
        """Slots of the clean frames in the window, grouped by the block each was generated in, oldest first."""
        held = sorted((t, slot) for slot, t in enumerate(self.slot_time) if t >= 0)
        blocks: dict[int, list[int]] = {}
        for t, slot in held:
            blocks.setdefault(t // self.window.block, []).append(slot)
        return list(blocks.values())

    def keys_up_to(self, time: int) -> Tensor:
        """(valid_tokens,) bool: keys of the clean frames with time index <= `time` (a recache's view)."""
        n = self.tokens_per_frame
        times = torch.tensor(self.slot_time, device=self.k.device).repeat_interleave(n)
        return ((times >= 0) & (times <= time))[: self.valid_tokens]

    def view(self, layer: int) -> tuple[Tensor, Tensor]:
        """Valid keys and values of one layer, each (B, L, H, D), as views (no copy)."""
        end = self.valid_tokens
        return self.k[layer, :, :end], self.v[layer, :, :end]
