"""How one DiT forward over the current frame's tokens is executed: eagerly, or replayed from CUDA graphs.

Both runners take the same call: tokens x (1, K, D), positions (K, 3), a timestep, the prompt's
cross-attention K/V, where the tokens' K/V go in the cache (`write_idx`), whether K before RoPE is
stored (the cache pass), and an optional key mask (the `none` ablation).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.attention import CacheAttention
from engine.dit import CausalDiT
from engine.kv_cache import RollingKVCache

log = logging.getLogger(__name__)

BACKENDS = ("torch", "cudagraph")
# torch.compile of the blocks inside the CUDA graphs: measured on an H200 (benchmarks/dit_pass.py)
COMPILED_DEFAULT = True  # 19.5 vs 28.1 ms per full-frame pass (results/gpu_h200/dit_pass_variants.json)
# Kept counts are padded up to the next of this many buckets per block; a padded token costs what a kept one
# does. With 16, vtest's latency sits on levels ~4 ms apart, which looked like padding; 32 buckets measured
# 62.3 against 61.8 fps (DiT 48.5 against 49.2 ms; wan2.1-1.3b, H200, session 15, same call): within the
# spread between runs (why the finer padding bought no more was not profiled). So 16, half the graphs to capture.
# Sizes on whole 64-row attention tiles (multiples of 64, 25 sizes at 480x832) did not pay either (session 21,
# H200): vtest's DiT 50.2 against 50.6 ms at kept 0.57 (~890 tokens run as 896, not 975), while the sweep's
# 50 % row, 780 tokens run as 832, fell from 0.85 to 0.80 of ideal.
GRAPH_BUCKETS = 16


def bucket_sizes(tokens_per_frame: int, buckets: int = GRAPH_BUCKETS) -> list[int]:
    """Kept-token counts rounded up to 1/`buckets` of a frame: one CUDA graph (or engine) each."""
    return sorted({math.ceil(tokens_per_frame * i / buckets) for i in range(1, buckets + 1)})


def graphs_apply(cache: RollingKVCache, key_mask: Tensor | None) -> bool:
    """Whether a fixed-shape graph can run this call: not before the window is full (the count of valid
    keys still grows) and not with a key mask (the `none` ablation runs eagerly)."""
    return key_mask is None and cache.frames + cache.window.block >= cache.window.slots


def pad_to_bucket(size: int, x: Tensor, pos: Tensor, write_idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pad the kept tokens to `size` by repeating the last one with its own position and cache index:
    padded rows compute the same K/V as that token and write the same values to the same place, so
    the cache and the other tokens' attention are untouched and no mask is needed."""
    pad = size - x.shape[1]
    if pad == 0:
        return x, pos, write_idx
    return (
        torch.cat([x, x[:, -1:].expand(-1, pad, -1)], dim=1),
        torch.cat([pos, pos[-1:].expand(pad, -1)]),
        torch.cat([write_idx, write_idx[-1:].expand(pad)]),
    )


def capture(graph: torch.cuda.CUDAGraph, run: Callable[[], Tensor], warmups: int, pool=None) -> Tensor:
    """Record `run()` into `graph` after `warmups` eager runs on a side stream (capture needs them:
    lazy initialisation and kernel selection must not happen inside it). Returns the graph's output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups):
            run()
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph, pool=pool):
        out = run()
    # Everything alive now (the compiled blocks' code and guards, the graphs, the model) lives as long as
    # the stream: move it out of the cyclic collector's reach. With wan2.1-1.3b compiled, a full collection
    # walked ~580,000 such objects in 310-340 ms, a stall of several frames whenever the collector ran one;
    # frozen, it takes ~1 ms (H200 host, benchmarks/step_stalls.py).
    gc.freeze()
    return out


class EagerRunner:
    def __init__(self, dit: CausalDiT, cache: RollingKVCache) -> None:
        self.dit, self.cache = dit, cache

    def __call__(
        self,
        x: Tensor,
        pos: Tensor,
        timestep: Tensor,
        text_kv: list,
        write_idx: Tensor,
        store_pre: bool,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        return self.dit(x, pos, timestep, text_kv, CacheAttention(self.cache, write_idx, store_pre, key_mask))


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    x: Tensor  # (1, size, D)
    pos: Tensor  # (size, 3)
    timestep: Tensor  # (1, 1)
    write_idx: Tensor  # (size,)
    out: Tensor  # (1, size, D)
    loaded_pos: Tensor | None = None  # the caller's tensors now copied into pos / write_idx
    loaded_idx: Tensor | None = None


class CudaGraphRunner:
    """Replays one CUDA graph per (kept-token bucket, cache pass or not).

    Kept counts are rounded up to buckets of 1/`buckets` of a block and padded by `pad_to_bucket`.
    Before `graphs_apply` frames run eagerly. At the first call that can replay a graph, the graphs of
    *every* bucket for that pass (denoising step or cache pass) are captured at once, which also runs the
    attention tuner on every shape: captured lazily, a kept count first met mid-stream had cost that frame
    ~0.7 s instead of ~60 ms (wan2.1-1.3b, H200, `gpu_h200/session16/`). `compiled`
    fuses each block's elementwise work (`CausalDiT.compile_blocks`, which changes the model for good;
    the graphs then replay the compiled kernels). It is applied here, so the compilation (~20 s on an
    H200) happens in the stream's first frame, not as a stall at the first capture; COMPILED_DEFAULT
    says whether that measured faster.
    """

    def __init__(
        self, dit: CausalDiT, cache: RollingKVCache, buckets: int = GRAPH_BUCKETS, compiled: bool | None = None
    ) -> None:
        if COMPILED_DEFAULT if compiled is None else compiled:
            dit.compile_blocks()
        self.eager = EagerRunner(dit, cache)
        self.dit, self.cache = dit, cache
        self.buckets = buckets
        self.sizes = bucket_sizes(cache.tokens_per_frame * cache.window.block, buckets)  # a block's tokens
        self.graphs: dict[tuple[int, bool], _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.text_kv: list[tuple[Tensor, Tensor]] | None = None
        self._text_source: list | None = None

    def bucket(self, count: int) -> int:
        return next(s for s in self.sizes if s >= count)

    def __call__(
        self,
        x: Tensor,
        pos: Tensor,
        timestep: Tensor,
        text_kv: list,
        write_idx: Tensor,
        store_pre: bool,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        if not graphs_apply(self.cache, key_mask):
            return self.eager(x, pos, timestep, text_kv, write_idx, store_pre, key_mask)
        self._load_text(text_kv)
        k = x.shape[1]
        if (self.sizes[-1], store_pre) not in self.graphs:
            self._capture_every_bucket(x, pos, timestep, write_idx, store_pre)
        entry = self.graphs[(self.bucket(k), store_pre)]
        x_pad, pos_pad, idx_pad = pad_to_bucket(entry.x.shape[1], x, pos, write_idx)
        entry.x.copy_(x_pad)
        if entry.loaded_pos is not pos or entry.loaded_idx is not write_idx:  # the same for a frame's steps
            entry.pos.copy_(pos_pad)
            entry.write_idx.copy_(idx_pad)
            entry.loaded_pos, entry.loaded_idx = pos, write_idx
        entry.timestep.copy_(timestep)
        entry.graph.replay()
        return entry.out[:, :k]

    def _capture_every_bucket(
        self, x: Tensor, pos: Tensor, timestep: Tensor, write_idx: Tensor, store_pre: bool
    ) -> None:
        """Capture one pass's graph for every bucket, from this call's tokens cycled to each size. The
        captures write K/V into this call's cache positions (the current block's slots), which may already
        hold recovered K/V for pruned tokens: the block's slots are saved first and put back after."""
        start = time.perf_counter()
        block = self.cache.block_token_index(torch.arange(self.sizes[-1], device=x.device))
        saved = [t.index_select(2, block) for t in (self.cache.k, self.cache.v, self.cache.k_pre)]
        for size in self.sizes:
            rows = torch.arange(size, device=x.device) % x.shape[1]
            entry = self._buffers(size, x, pos)
            entry.x.copy_(x[:, rows])
            entry.pos.copy_(pos[rows])
            entry.write_idx.copy_(write_idx[rows])
            entry.timestep.copy_(timestep)
            self._capture(entry, store_pre)
            self.graphs[(size, store_pre)] = entry
        for t, before in zip((self.cache.k, self.cache.v, self.cache.k_pre), saved):
            t.index_copy_(2, block, before)
        log.info(
            "captured %d CUDA graphs (cache pass %s) in %.1f s", len(self.sizes), store_pre, time.perf_counter() - start
        )

    def _load_text(self, text_kv: list) -> None:
        if text_kv is self._text_source:
            return
        if self.text_kv is None:
            self.text_kv = [(k.clone(), v.clone()) for k, v in text_kv]
        else:
            for (sk, sv), (k, v) in zip(self.text_kv, text_kv):
                sk.copy_(k)
                sv.copy_(v)
        self._text_source = text_kv

    def _buffers(self, size: int, x: Tensor, pos: Tensor) -> _Graph:
        dev = x.device
        return _Graph(
            graph=torch.cuda.CUDAGraph(),
            x=torch.empty((1, size, x.shape[2]), device=dev, dtype=x.dtype),
            pos=torch.empty((size, 3), device=dev, dtype=pos.dtype),
            timestep=torch.empty((1, 1), device=dev),
            write_idx=torch.empty((size,), device=dev, dtype=torch.long),
            out=torch.empty(0, device=dev),
        )

    def _capture(self, e: _Graph, store_pre: bool) -> None:
        def run() -> Tensor:
            return self.eager(e.x, e.pos, e.timestep, self.text_kv, e.write_idx, store_pre)

        e.out = capture(e.graph, run, warmups=2, pool=self.pool)


class GraphedCall:
    """`fn(x)` replayed from a CUDA graph captured per input shape: for the per-frame work around the
    DiT (VAE encode and decode), whose kernel launches cost more than their math. Returns a fresh tensor
    (the graph's output buffer is overwritten by the next replay).

    A stateful step (TAEHV's streaming memory) names the buffers it reads and rewrites in place through
    `memory()`. Its stream's first call runs eagerly, because it allocates them; the graph is captured
    at the next call against those very buffers, and captured again when a new stream's buffers lie
    elsewhere. The capture's warm-up runs advance the memory, so it is put back afterwards.
    """

    def __init__(
        self, fn: Callable[[Tensor], Tensor], memory: Callable[[], list[Tensor] | None] = lambda: None
    ) -> None:
        self.fn, self.memory = fn, memory
        # (shape, dtype) -> (memory addresses it was captured with, graph, input buffer, output buffer)
        self.graphs: dict[tuple, tuple[tuple[int, ...], torch.cuda.CUDAGraph, Tensor, Tensor]] = {}

    def __call__(self, x: Tensor) -> Tensor:
        state = self.memory()
        if state is not None and not state:
            return self.fn(x)
        key, where = (tuple(x.shape), x.dtype), tuple(t.data_ptr() for t in state or ())
        if key not in self.graphs or self.graphs[key][0] != where:
            self.graphs[key] = (where, *self._capture(x, state or []))
        _, graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: Tensor, state: list[Tensor]) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        static_in = x.clone()
        saved = [t.clone() for t in state]
        graph = torch.cuda.CUDAGraph()
        static_out = capture(graph, lambda: self.fn(static_in), warmups=1)  # cuDNN picks its kernels in the warm-up
        for t, before in zip(state, saved):
            t.copy_(before)
        log.info("captured CUDA graph of %s for input %s", getattr(self.fn, "__name__", self.fn), tuple(x.shape))
        return graph, static_in, static_out
