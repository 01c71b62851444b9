"""Export the per-step DiT forward over one kept-token bucket to ONNX.

The exported graph is what `CacheAttention` + `CausalDiT.forward` compute once the KV window is full
(the steady state that CUDA graphs and TensorRT engines serve), with plain tensors at its edge:

inputs (K = the bucket's kept tokens, L = window slots * tokens per frame, Lt = text_len,
H = heads, D = head_dim, layers = cfg.layers)
    x          (1, K, patch_dim)       float32  noisy tokens
    cos, sin   (K, D/2)                float32  RoPE at the tokens' true (t, h, w) positions
    timestep   (1, 1)                  float32  sigma * 1000
    write_idx  (K,)                    int64    the tokens' positions along the cache's key axis
    k, v       (layers, 1, L, H, D)    float32  the rolling cache (K after RoPE), all slots valid
    text_k, text_v (layers, 1, Lt, H, D) float32  the prompt's cross-attention K/V
outputs
    velocity   (1, K, patch_dim)
    k_rows, v_rows, k_pre_rows (layers, 1, K, H, D)  the tokens' new cache rows (K after / before RoPE)

Why these choices:
- RoPE's cos/sin are inputs, computed outside the graph by the model's own `Rope3D` in float64.
  Traced from positions, the graph would hold float64 angles, and TensorRT casts DOUBLE down to
  FLOAT: phase drifts once stream time indices pass ~1e4 frames. (The timestep sinusoid stays in the
  graph: timesteps are <= 1000, where float32 angles are exact enough.)
- The cache is an input and the graph returns only the new rows: returning the whole updated cache
  would copy all of it out every step. Inside the graph, `index_copy_` becomes an out-of-place
  scatter (ONNX ScatterElements) so attention sees the tokens' own K/V exactly as `CacheAttention`
  does. The caller writes the rows into its cache (`index_copy_` along the key axis); k_pre only on
  the cache pass. The cache's k_pre is not an input: attention never reads it.
- Shapes are static: one file per bucket. Padded rows repeat the last kept token with its own
  position and cache index (as `CudaGraphRunner` pads), so they write identical values.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from engine import checkpoint
from engine.attention import attention
from engine.backends import bucket_sizes
from engine.config import ModelConfig
from engine.dit import CausalDiT
from engine.kv_cache import RollingKVCache

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAMES = ("x", "cos", "sin", "timestep", "write_idx", "k", "v", "text_k", "text_v")
OUTPUT_NAMES = ("velocity", "k_rows", "v_rows", "k_pre_rows")


def graph_shapes(cfg: ModelConfig, tokens_per_frame: int, bucket: int) -> dict[str, tuple[int, ...]]:
    """The documented shape of every input and output of one bucket's graph, by name."""
    cache = (cfg.layers, 1, cfg.window.slots * tokens_per_frame, cfg.heads, cfg.head_dim)
    text = (cfg.layers, 1, cfg.text_len, cfg.heads, cfg.head_dim)
    rows = (cfg.layers, 1, bucket, cfg.heads, cfg.head_dim)
    return {
        "x": (1, bucket, cfg.patch_dim),
        "cos": (bucket, cfg.head_dim // 2),
        "sin": (bucket, cfg.head_dim // 2),
        "timestep": (1, 1),
        "write_idx": (bucket,),
        "k": cache,
        "v": cache,
        "text_k": text,
        "text_v": text,
        "velocity": (1, bucket, cfg.patch_dim),
        "k_rows": rows,
        "v_rows": rows,
        "k_pre_rows": rows,
    }


class _RowsAttention:
    """`CacheAttention` with the cache as a graph input: write-then-attend through an out-of-place
    scatter, and the written rows collected as graph outputs."""

    def __init__(self, k: Tensor, v: Tensor, write_idx: Tensor) -> None:
        self.k, self.v, self.write_idx = k, v, write_idx  # cache (layers, 1, L, H, D), idx (K,)
        self.rows: list[tuple[Tensor, Tensor, Tensor]] = []

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor, k_pre: Tensor) -> Tensor:
        self.rows.append((k, v, k_pre))  # each (1, K, H, D)
        keys = self.k[layer].index_copy(1, self.write_idx, k)  # (1, L, H, D)
        values = self.v[layer].index_copy(1, self.write_idx, v)
        return attention(q, keys, values)


class StepGraph(nn.Module):
    """One denoising step (or the cache pass) of `CausalDiT` over K kept tokens, plain tensors in
    and out (see the module docstring). Shares the DiT's parameters; RoPE enters as cos/sin tables."""

    def __init__(self, dit: CausalDiT) -> None:
        super().__init__()
        self.dit = dit

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        timestep: Tensor,
        write_idx: Tensor,
        k: Tensor,
        v: Tensor,
        text_k: Tensor,
        text_v: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        attn = _RowsAttention(k, v, write_idx)
        text_kv = list(zip(text_k.unbind(0), text_v.unbind(0)))
        velocity = self.dit.forward_rotary(x, cos, sin, timestep, text_kv, attn)
        k_rows, v_rows, k_pre_rows = (torch.stack(r) for r in zip(*attn.rows))  # each (layers, 1, K, H, D)
        return velocity, k_rows, v_rows, k_pre_rows


@dataclass(frozen=True)
class StepInputs:
    """Random but realistic inputs of one step: distinct kept tokens of frame `time_index`, a full window.

    `graph["k"]`, `graph["v"]` are `cache.k`, `cache.v` themselves (no copy): run the graph before the
    eager reference, which writes the tokens' rows into the cache."""

    graph: dict[str, Tensor]  # by INPUT_NAMES
    pos: Tensor  # (K, 3) int64, the positions cos/sin were computed from
    cache: RollingKVCache  # random contents, frame `time_index` open in its slot
    time_index: int


def token_grid(cfg: ModelConfig, size: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of a frame's token grid at video `size`; ValueError for sizes the model cannot take."""
    h, w = cfg.latent_size(*size)
    return h // cfg.patch[1], w // cfg.patch[2]


def random_step(dit: CausalDiT, grid: tuple[int, int], bucket: int, seed: int = 0) -> StepInputs:
    """Inputs for tracing and for checking a graph against the eager forward. The time index is large
    (past where float32 RoPE angles drift) so a precision loss in the RoPE path would show."""
    cfg = dit.cfg
    tokens_per_frame = grid[0] * grid[1]
    g = torch.Generator().manual_seed(seed)
    cache = RollingKVCache(cfg.layers, 1, tokens_per_frame, cfg.heads, cfg.head_dim, cfg.window, "cpu", torch.float32)
    for t in (cache.k, cache.v, cache.k_pre):
        t.copy_(torch.randn(t.shape, generator=g))
    cache.frames = 20_000 + int(torch.randint(0, 1000, (1,), generator=g))
    slot = cache.append()
    idx = torch.randperm(tokens_per_frame, generator=g)[:bucket]
    pos = torch.stack([torch.full_like(idx, cache.frames), idx // grid[1], idx % grid[1]], dim=1)  # (K, 3)
    cos, sin = dit.rope.cos_sin(pos)
    with torch.no_grad():
        text_kv = dit.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, generator=g))
    graph = {
        "x": torch.randn((1, bucket, cfg.patch_dim), generator=g),
        "cos": cos,
        "sin": sin,
        "timestep": torch.rand((1, 1), generator=g) * 1000.0,
        "write_idx": cache.token_index(slot, idx),
        "k": cache.k,
        "v": cache.v,
        "text_k": torch.stack([k for k, _ in text_kv]),
        "text_v": torch.stack([v for _, v in text_kv]),
    }
    return StepInputs(graph=graph, pos=pos, cache=cache, time_index=cache.frames)


def export_step(dit: CausalDiT, grid: tuple[int, int], bucket: int, path: str | Path) -> Path:
    """Trace one bucket's step graph of an fp32 CPU DiT, frames of `grid` (rows, cols) tokens, to `path`
    (ONNX, opset 17). Returns the path."""
    tokens_per_frame = grid[0] * grid[1]
    if not 1 <= bucket <= tokens_per_frame:
        raise ValueError(f"bucket must be a kept-token count in [1, {tokens_per_frame}], got {bucket}")
    weight = next(dit.parameters())
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(
            f"export an fp32 CPU DiT (got {weight.dtype} on {weight.device}): TensorRT lowers the precision "
            "itself (builder flags), and onnxruntime checks the graph on the CPU"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = random_step(dit, grid, bucket)
    graph = StepGraph(dit).eval()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated in favour of dynamo, which the legacy path still beats
        # here (no shape guards to specialise); its deprecation warning says nothing about this graph
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            tuple(inputs.graph[n] for n in INPUT_NAMES),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamo=False,
        )
    log.info("exported %s (bucket %d of %d tokens)", path, bucket, tokens_per_frame)
    return path


def load_dit(name: str, weights: str | Path | None = None, random_weights: bool = False, seed: int = 0) -> CausalDiT:
    """An fp32 CPU DiT for export, loaded as `StreamingGenerator.from_pretrained` loads it."""
    return checkpoint.load_dit(name, weights, random_weights, seed).float().eval()


def onnx_name(model: str, size: tuple[int, int], bucket: int) -> str:
    return f"{model}-{size[0]}x{size[1]}-k{bucket}.onnx"


def resolve_buckets(tokens_per_frame: int, buckets: Sequence[int] | None) -> list[int]:
    """Sorted kept-token counts to export (default: the 16 `bucket_sizes` of a frame), each checked."""
    sizes = bucket_sizes(tokens_per_frame) if buckets is None else sorted(set(buckets))
    bad = [b for b in sizes if not 1 <= b <= tokens_per_frame]
    if bad:
        raise ValueError(f"buckets {bad} are outside [1, {tokens_per_frame}] (the tokens of one frame at this size)")
    return sizes


def export_onnx(
    model_name: str,
    out_dir: str | Path,
    buckets: Sequence[int] | None = None,
    size: tuple[int, int] | None = None,
    random_weights: bool = False,
    weights: str | Path | None = None,
    seed: int = 0,
) -> list[Path]:
    """Export `model_name`'s step graphs, one per kept-token bucket, at video `size` (default: the
    model's). `buckets` are kept-token counts (default: the 16 `bucket_sizes` of a frame). Weights come
    from the repo or the `weights` folder, or are random when asked for."""
    dit = load_dit(model_name, weights, random_weights, seed)
    size = size or (dit.cfg.height, dit.cfg.width)
    grid = token_grid(dit.cfg, size)
    out_dir = Path(out_dir)
    return [
        export_step(dit, grid, b, out_dir / onnx_name(model_name, size, b))
        for b in resolve_buckets(grid[0] * grid[1], buckets)
    ]
