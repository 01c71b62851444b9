"""`python app.py build-engines`: export the step graphs, check them with onnxruntime, build TensorRT
engines where TensorRT is installed, and print one table row per (size, bucket)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from build_engines.export import export_step, load_dit, onnx_name, resolve_buckets, token_grid
from build_engines.tensorrt_build import EngineKey, cached_engine, check_precision, import_tensorrt, weights_tag
from build_engines.verify import TOLERANCE, verify_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineRow:
    size: tuple[int, int]
    bucket: int
    onnx: Path
    onnx_bytes: int
    ort_error: float  # worst ||out - ref|| / ||ref|| over the graph's outputs
    tensorrt: str  # "built" | "cached" | "skipped: <why>"


def build_engines(
    model: str = "tiny",
    out: str | Path = "engines",
    device: str = "auto",
    sizes: Sequence[tuple[int, int]] | None = None,
    buckets: Sequence[int] | None = None,
    random_weights: bool = False,
    weights: str | Path | None = None,
    precision: str = "bf16",
    seed: int = 0,
) -> list[EngineRow]:
    """Export every (size, bucket) step graph of `model` to `out`, verify each with onnxruntime against
    the torch forward, and build a TensorRT engine from it on `device` when TensorRT is installed and
    the device is a CUDA GPU (engines cached in `out`, keyed by model, size, bucket, precision, weights,
    TensorRT version and GPU). Sizes default to the model's; buckets to the 16 of `bucket_sizes`.
    Prints the table and returns its rows. A graph that fails the check stops the build (RuntimeError)."""
    from engine.generator import resolve_device

    check_precision(precision)
    dev = resolve_device(device)
    dit = load_dit(model, weights, random_weights, seed)
    sizes = [tuple(s) for s in sizes] if sizes else [(dit.cfg.height, dit.cfg.width)]
    grids = [token_grid(dit.cfg, size) for size in sizes]  # every size and bucket is checked before any export
    plans = [(size, grid, resolve_buckets(grid[0] * grid[1], buckets)) for size, grid in zip(sizes, grids)]
    skip = _tensorrt_skip_reason(dev.type)
    tag = None if skip else weights_tag(model, weights, random_weights, seed)
    out = Path(out)
    rows = []
    for size, grid, bucket_list in plans:
        for bucket in bucket_list:
            path = export_step(dit, grid, bucket, out / onnx_name(model, size, bucket))
            error = max(verify_onnx(path, dit, grid).values())
            if error > TOLERANCE:
                raise RuntimeError(
                    f"{path}: onnxruntime differs from torch by {error:.1e} (> {TOLERANCE:.0e}); "
                    "no engine is built from a graph that does not compute the model"
                )
            status = f"skipped: {skip}" if skip else _engine_status(path, out, model, size, bucket, precision, tag)
            rows.append(EngineRow(size, bucket, path, path.stat().st_size, error, status))
    print(format_table(rows))
    return rows


def _tensorrt_skip_reason(device_type: str) -> str | None:
    try:
        import_tensorrt()
    except RuntimeError as e:
        return "not installed" if isinstance(e.__cause__, ImportError) else str(e)
    if device_type != "cuda":
        return "needs a CUDA device"
    return None


def _engine_status(
    onnx: Path, out: Path, model: str, size: tuple[int, int], bucket: int, precision: str, tag: str
) -> str:
    _, built = cached_engine(onnx, out, EngineKey.here(model, size, bucket, precision, tag))
    return "built" if built else "cached"


def format_table(rows: Sequence[EngineRow]) -> str:
    lines = [f"{'size':>9}  {'bucket':>6}  {'ONNX':>9}  {'onnxruntime rel. err':>20}  TensorRT"]
    for r in rows:
        size = f"{r.size[0]}x{r.size[1]}"
        lines.append(f"{size:>9}  {r.bucket:>6}  {_megabytes(r.onnx_bytes):>9}  {r.ort_error:>20.1e}  {r.tensorrt}")
    return "\n".join(lines)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
