"""TensorRT engines built from the exported step graphs, the engine cache, and `TensorRTRunner`.

Nothing here imports `tensorrt` at module import: the runtime never needs it when TensorRT is absent
(DESIGN.md §7), and every entry point that does need it raises a RuntimeError that says so.
Written against the TensorRT >= 10 Python API (explicit-batch networks, named I/O tensors,
`execute_async_v3`); no machine this project is built on has TensorRT, so this file is exercised only
by tests/build_engines/test_tensorrt.py where it is installed.

Every graph has static shapes (one file per kept-token bucket), so engines need no optimisation
profile: TensorRT asks for one only when an input has a dynamic dimension.

Out of scope: LIPAR's Triton kernels (split-KV attention, token gather, K/V recovery) reused inside
the engine through TensorRT plugin layers. An engine covers the dense per-step DiT over the kept tokens;
the mask, recovery and restoration run around it in PyTorch, as they do for the other backends.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from build_engines.export import OUTPUT_NAMES
from build_engines.runner import GraphRunner
from engine.dit import CausalDiT
from engine.kv_cache import RollingKVCache

log = logging.getLogger(__name__)

MIN_MAJOR_VERSION = 10
# builder flag for each precision (fp32: none); float I/O in that precision too, so the bf16 cache of the
# CUDA runtime is fed without a copy. cos/sin and the timestep stay fp32 (they are fp32 islands in torch).
PRECISIONS = {"bf16": "BF16", "fp16": "FP16", "fp32": None}
LOW_PRECISION_IO = ("x", "k", "v", "text_k", "text_v", *OUTPUT_NAMES)
INSTALL_HINT = (
    "install NVIDIA's wheels on a machine with a CUDA GPU (pip install 'tensorrt>=10'); "
    "the torch and cudagraph backends need nothing more"
)


def tensorrt_available() -> bool:
    """Whether a usable TensorRT (importable, new enough) is installed."""
    try:
        import_tensorrt()
    except RuntimeError:
        return False
    return True


def import_tensorrt():
    """The `tensorrt` module, or a RuntimeError that says what is missing."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError(f"TensorRT is not installed: {INSTALL_HINT} ({e})") from e
    major = int(trt.__version__.split(".")[0])
    if major < MIN_MAJOR_VERSION:
        raise RuntimeError(f"TensorRT {trt.__version__} is too old: version {MIN_MAJOR_VERSION} or newer is needed")
    return trt


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")


def weights_tag(model: str, weights: str | Path | None = None, random_weights: bool = False, seed: int = 0) -> str:
    """Names the DiT weights an engine was built from, so a retrained checkpoint never meets a stale
    engine: the seed for random weights, else the first 12 hex digits of dit.safetensors' sha256."""
    if random_weights:
        return f"random{seed}"
    from engine.checkpoint import WEIGHTS_DIR

    path = (Path(weights) if weights is not None else WEIGHTS_DIR / model) / "dit.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for. Engines are specific to the TensorRT version and the GPU model."""

    model: str
    size: tuple[int, int]  # video (height, width)
    bucket: int
    precision: str
    weights: str  # `weights_tag`
    tensorrt: str  # TensorRT version
    gpu: str  # torch.cuda.get_device_name()

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {self.bucket}")

    @property
    def filename(self) -> str:
        return f"{self.prefix}-k{self.bucket}.engine"

    @property
    def prefix(self) -> str:
        """The file name up to the bucket: every bucket of one build shares it."""
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-")
        h, w = self.size
        return f"{self.model}-{h}x{w}-{self.precision}-w{self.weights}-trt{self.tensorrt}-{gpu}"

    @classmethod
    def here(cls, model: str, size: tuple[int, int], bucket: int, precision: str, weights: str) -> EngineKey:
        """The key for this machine's TensorRT and current CUDA device."""
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT engines need a CUDA GPU, and none is available")
        return cls(model, tuple(size), bucket, precision, weights, trt.__version__, torch.cuda.get_device_name())


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str = "bf16") -> Path:
    """Parse an exported step graph and build a serialized engine at `engine_path`."""
    check_precision(precision)
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    flag = PRECISIONS[precision]
    if flag is not None:
        config.set_flag(getattr(trt.BuilderFlag, flag))
        low = trt.DataType.BF16 if precision == "bf16" else trt.DataType.HALF
        io = [network.get_input(i) for i in range(network.num_inputs)]
        io += [network.get_output(i) for i in range(network.num_outputs)]
        for tensor in io:
            if tensor.name in LOW_PRECISION_IO:
                tensor.dtype = low
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (its log above says why)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    partial = engine_path.with_suffix(".partial")  # a killed build never leaves a truncated engine behind
    partial.write_bytes(bytes(serialized))
    partial.replace(engine_path)
    log.info("built %s (%s)", engine_path, precision)
    return engine_path


def cached_engine(onnx_path: str | Path, folder: str | Path, key: EngineKey) -> tuple[Path, bool]:
    """The engine for `key` in `folder`, built from `onnx_path` unless it is there already.
    Returns (path, built now)."""
    path = Path(folder) / key.filename
    if path.is_file():
        return path, False
    return build_engine(onnx_path, path, key.precision), True


class TensorRTRunner(GraphRunner):
    """Serialized per-bucket engines executed on the current CUDA stream.

    Same call as engine/backends.py's runners (documented in build_engines/runner.py):
    `runner(x, pos, timestep, text_kv, write_idx, store_pre, key_mask=None) -> velocity (1, K, patch_dim)`,
    writing the tokens' K/V into the cache. The returned velocity is a view of a buffer that the next
    call reuses (as with `CudaGraphRunner`). The cache is fed to the engine as is, so its dtype must be
    the engines' float I/O dtype (bf16 engines for the bf16 CUDA runtime).
    """

    def __init__(self, dit: CausalDiT, cache: RollingKVCache, engine_files: Sequence[str | Path]) -> None:
        trt = import_tensorrt()
        if not cache.k.is_cuda:
            raise ValueError("TensorRTRunner needs the KV cache on a CUDA device")
        to_torch = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.BF16: torch.bfloat16,
            trt.DataType.INT64: torch.int64,
            trt.DataType.INT32: torch.int32,
        }
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self._engines: dict[int, _Engine] = {}
        shapes = {}
        for path in engine_files:
            engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not load {path} (built by another TensorRT version or GPU?)")
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            io = {n: tuple(engine.get_tensor_shape(n)) for n in names}
            dtypes = {n: to_torch[engine.get_tensor_dtype(n)] for n in names}
            if dtypes.get("k") != cache.k.dtype:
                raise ValueError(
                    f"{path} takes the cache as {dtypes.get('k')}, the cache is {cache.k.dtype}: "
                    "build engines in the runtime's precision (bf16 on CUDA)"
                )
            context = engine.create_execution_context()
            outputs = {n: torch.empty(io[n], dtype=dtypes[n], device=cache.k.device) for n in OUTPUT_NAMES}
            for n, t in outputs.items():
                context.set_tensor_address(n, t.data_ptr())
            bucket = io["x"][1]
            self._engines[bucket] = _Engine(engine, context, dtypes, outputs)
            shapes[bucket] = io
        super().__init__(dit, cache, shapes)

    @classmethod
    def from_folder(
        cls,
        dit: CausalDiT,
        cache: RollingKVCache,
        folder: str | Path,
        model: str,
        size: tuple[int, int],
        weights: str,
        precision: str = "bf16",
    ) -> TensorRTRunner:
        """All buckets' engines built by `build_engines` for this model, size, weights (`weights_tag`),
        precision, TensorRT version and GPU."""
        prefix = EngineKey.here(model, size, 1, precision, weights).prefix
        files = sorted(Path(folder).glob(f"{prefix}-k*.engine"))
        if not files:
            raise RuntimeError(
                f"no TensorRT engines {prefix}-k*.engine in {folder}: build them with "
                f"`python app.py build-engines --model {model} --size {size[0]}x{size[1]}`"
            )
        return cls(dit, cache, files)

    def _run(self, bucket: int, feed: dict[str, Tensor]) -> dict[str, Tensor]:
        e = self._engines[bucket]
        # converted inputs must stay alive until the engine is enqueued; the caching allocator keeps
        # their memory stream-ordered after that
        inputs = {n: t.to(e.dtypes[n]).contiguous() for n, t in feed.items()}
        for n, t in inputs.items():
            e.context.set_tensor_address(n, t.data_ptr())
        if not e.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError(f"TensorRT failed to run the engine for bucket {bucket}")
        return e.outputs


@dataclass
class _Engine:
    engine: object  # trt.ICudaEngine, kept alive as long as its context
    context: object  # trt.IExecutionContext
    dtypes: dict[str, torch.dtype]
    outputs: dict[str, Tensor]  # persistent output buffers, addresses bound once
