"""Check an exported step graph numerically: onnxruntime (CPU) against the engine's own eager path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from build_engines.export import INPUT_NAMES, OUTPUT_NAMES, StepInputs, random_step
from engine.attention import CacheAttention
from engine.dit import CausalDiT

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # fp32 graph against fp32 eager: only summation order differs


def reference_step(dit: CausalDiT, inputs: StepInputs) -> dict[str, np.ndarray]:
    """What the runtime computes for the same step: `CausalDiT.forward` with `CacheAttention` writing
    into the rolling cache (RoPE from positions), then the rows it wrote. Writes into `inputs.cache`."""
    g, cache = inputs.graph, inputs.cache
    text_kv = list(zip(g["text_k"].unbind(0), g["text_v"].unbind(0)))
    idx = g["write_idx"]
    with torch.no_grad():
        velocity = dit(g["x"], inputs.pos, g["timestep"], text_kv, CacheAttention(cache, idx, store_pre=True))
    rows = (cache.k[:, :, idx], cache.v[:, :, idx], cache.k_pre[:, :, idx])  # each (layers, 1, K, H, D)
    return {name: t.numpy() for name, t in zip(OUTPUT_NAMES, (velocity, *rows))}


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def verify_onnx(path: str | Path, dit: CausalDiT, grid: tuple[int, int], seed: int = 1) -> dict[str, float]:
    """Run the graph at `path` in onnxruntime's CPU provider on random inputs (frames of `grid` tokens,
    the bucket read from the graph) and compare every output with `reference_step`.
    Returns ||out - ref|| / ||ref|| per output name; below `TOLERANCE` for a correct fp32 export."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x_shape = next(i.shape for i in session.get_inputs() if i.name == "x")
    inputs = random_step(dit, grid, bucket=int(x_shape[1]), seed=seed)
    feed = {name: inputs.graph[name].numpy() for name in INPUT_NAMES}
    outs = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed)))
    refs = reference_step(dit, inputs)  # after the session: it writes into the cache the feed shares
    errors = {name: relative_error(outs[name], refs[name]) for name in OUTPUT_NAMES}
    log.info("%s: onnxruntime vs torch %s", Path(path).name, ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    return errors
