"""Run the DiT step through exported per-bucket graphs, with the call of engine/backends.py's runners.

    runner(x, pos, timestep, text_kv, write_idx, store_pre, key_mask=None) -> velocity (1, K, patch_dim)

x (1, K, patch_dim) kept tokens, pos (K, 3) int64 their true (t, h, w), timestep (1, 1) sigma * 1000,
text_kv the prompt's per-layer cross-attention (K, V) each (1, Lt, H, D), write_idx (K,) where their K/V
go along the cache's key axis, store_pre whether K before RoPE is stored too (the cache pass), key_mask
an optional (L,) key mask (the `none` recovery ablation). Side effect, as for the other runners: the
tokens' K/V (and K before RoPE if store_pre) are in the cache afterwards.

`GraphRunner` does everything but execute: picks the smallest bucket that holds K tokens, pads by
repeating the last token (same position, same cache index: the padded rows compute the last token's
K/V, so nothing else changes), computes RoPE's cos/sin with the model's own float64 `Rope3D`, feeds the
cache as is, and writes the returned rows into the cache. Like `CudaGraphRunner`, it runs eagerly while
the window is still filling (the number of valid keys changes every frame until then), with a key mask,
and for more tokens than the largest bucket. Subclasses only execute a bucket's graph:
`OnnxRuntimeRunner` here (CPU; it checks this marshalling against the eager path wherever onnxruntime
exists) and `TensorRTRunner` in tensorrt_build.py.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from build_engines.export import INPUT_NAMES, OUTPUT_NAMES, graph_shapes
from engine.backends import EagerRunner, graphs_apply, pad_to_bucket
from engine.dit import CausalDiT
from engine.kv_cache import RollingKVCache


class GraphRunner(ABC):
    def __init__(self, dit: CausalDiT, cache: RollingKVCache, shapes: Mapping[int, Mapping[str, tuple[int, ...]]]):
        """`shapes`: bucket -> the shape of every input and output of that bucket's graph, by name; they
        must be the ones `graph_shapes` documents for this model and cache."""
        if not shapes:
            raise ValueError("a graph runner needs at least one bucket's graph")
        self.eager = EagerRunner(dit, cache)
        self.dit, self.cache = dit, cache
        cfg = dataclasses.replace(dit.cfg, window=cache.window)  # the cache's window is what is fed
        for bucket, got in shapes.items():
            want = graph_shapes(cfg, cache.tokens_per_frame, bucket)
            wrong = {n: (tuple(got.get(n, ())), want[n]) for n in want if tuple(got.get(n, ())) != want[n]}
            if wrong:
                raise ValueError(
                    f"the graph for bucket {bucket} was not exported for this model, size and window "
                    f"(name: (graph shape, expected shape)): {wrong}"
                )
        self.sizes = sorted(shapes)
        self._text: tuple[Tensor, Tensor] | None = None  # (layers, 1, Lt, H, D) each
        self._text_source: list | None = None

    @abstractmethod
    def _run(self, bucket: int, feed: dict[str, Tensor]) -> dict[str, Tensor]:
        """Execute the bucket's graph on `feed` (by INPUT_NAMES); return its outputs by OUTPUT_NAMES."""

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
        cache = self.cache
        k = x.shape[1]
        size = next((s for s in self.sizes if s >= k), None)
        if not graphs_apply(cache, key_mask) or size is None:
            return self.eager(x, pos, timestep, text_kv, write_idx, store_pre, key_mask)
        x, pos, idx = pad_to_bucket(size, x, pos, write_idx)  # (1, size, patch_dim), (size, 3), (size,)
        cos, sin = self.dit.rope.cos_sin(pos)  # (size, D/2) each
        text_k, text_v = self._stacked_text(text_kv)
        values = (x, cos, sin, timestep.float().reshape(1, 1), idx, cache.k, cache.v, text_k, text_v)
        out = self._run(size, dict(zip(INPUT_NAMES, values)))
        # only the real tokens' rows: the padded ones are copies of the last token's
        cache.k.index_copy_(2, write_idx, out["k_rows"][:, :, :k].to(cache.k.dtype))
        cache.v.index_copy_(2, write_idx, out["v_rows"][:, :, :k].to(cache.v.dtype))
        if store_pre:
            cache.k_pre.index_copy_(2, write_idx, out["k_pre_rows"][:, :, :k].to(cache.k_pre.dtype))
        return out["velocity"][:, :k]

    def _stacked_text(self, text_kv: list) -> tuple[Tensor, Tensor]:
        """The prompt's K/V as two (layers, 1, Lt, H, D) tensors, restacked only when the prompt changes."""
        if text_kv is not self._text_source:
            self._text = (torch.stack([k for k, _ in text_kv]), torch.stack([v for _, v in text_kv]))
            self._text_source = text_kv
        return self._text


class OnnxRuntimeRunner(GraphRunner):
    """Exported step graphs in onnxruntime's CPU provider, fp32 (cache and model in float32 on the CPU)."""

    def __init__(self, dit: CausalDiT, cache: RollingKVCache, onnx_files: list[str | Path]) -> None:
        import onnxruntime as ort

        if cache.k.device.type != "cpu" or cache.k.dtype != torch.float32:
            raise ValueError(f"OnnxRuntimeRunner needs a float32 CPU cache, got {cache.k.dtype} on {cache.k.device}")
        self.sessions: dict[int, ort.InferenceSession] = {}
        shapes = {}
        for path in onnx_files:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            io = {t.name: tuple(t.shape) for t in (*session.get_inputs(), *session.get_outputs())}
            if "x" not in io:
                raise ValueError(f"{path} is not a step graph exported by build_engines (it has no input 'x')")
            bucket = int(io["x"][1])
            self.sessions[bucket], shapes[bucket] = session, io
        super().__init__(dit, cache, shapes)

    def _run(self, bucket: int, feed: dict[str, Tensor]) -> dict[str, Tensor]:
        outs = self.sessions[bucket].run(list(OUTPUT_NAMES), {n: t.numpy() for n, t in feed.items()})
        return {n: torch.from_numpy(o) for n, o in zip(OUTPUT_NAMES, outs)}
