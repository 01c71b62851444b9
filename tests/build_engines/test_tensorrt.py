import copy

import pytest
import torch

from build_engines.tensorrt_build import (
    EngineKey,
    TensorRTRunner,
    build_engine,
    cached_engine,
    import_tensorrt,
    tensorrt_available,
    weights_tag,
)
from engine.backends import EagerRunner
from engine.kv_cache import RollingKVCache

GRID = (4, 4)  # the small model's frames (conftest)
TOKENS = GRID[0] * GRID[1]
HAVE_TENSORRT = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(
    not (HAVE_TENSORRT and torch.cuda.is_available()),
    reason="TensorRT is not installed here (its runtime comes from NVIDIA's wheels, outside this project's "
    "registries) or there is no CUDA GPU; the exported graphs are checked with onnxruntime instead",
)


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed: the missing-TensorRT error cannot happen")
def test_missing_tensorrt_is_a_clear_error(small_dit, exported, tmp_path):
    with pytest.raises(RuntimeError, match="TensorRT is not installed: install NVIDIA's wheels"):
        import_tensorrt()
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        build_engine(exported(6), tmp_path / "x.engine")
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        EngineKey.here("tiny", (128, 128), 4, "bf16", "random0")
    cfg = small_dit.cfg
    cache = RollingKVCache(cfg.layers, 1, TOKENS, cfg.heads, cfg.head_dim, cfg.window, "cpu", torch.float32)
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        TensorRTRunner(small_dit, cache, [tmp_path / "x.engine"])
    assert not list(tmp_path.iterdir())


def test_engine_key_names_everything_an_engine_depends_on():
    key = EngineKey("tiny", (128, 128), 16, "bf16", "0123456789ab", "10.9.0", "NVIDIA H100 80GB HBM3")
    name = key.filename
    for part in ("tiny", "128x128", "k16", "bf16", "0123456789ab", "trt10.9.0", "NVIDIA-H100-80GB-HBM3"):
        assert part in name
    assert name.endswith(".engine") and " " not in name
    other_bucket = EngineKey("tiny", (128, 128), 4, "bf16", "0123456789ab", "10.9.0", "NVIDIA H100 80GB HBM3")
    assert other_bucket.prefix == key.prefix and other_bucket.filename != name
    other_gpu = EngineKey("tiny", (128, 128), 16, "bf16", "0123456789ab", "10.9.0", "NVIDIA H200")
    assert other_gpu.filename != name


def test_engine_key_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        EngineKey("tiny", (128, 128), 16, "int8", "w", "10.9.0", "gpu")
    with pytest.raises(ValueError, match="bucket must be >= 1"):
        EngineKey("tiny", (128, 128), 0, "bf16", "w", "10.9.0", "gpu")


def test_weights_tag_follows_the_checkpoint(tmp_path):
    assert weights_tag("tiny", random_weights=True, seed=3) == "random3"
    (tmp_path / "dit.safetensors").write_bytes(b"first")
    first = weights_tag("tiny", tmp_path)
    assert first == weights_tag("tiny", tmp_path) and len(first) == 12
    (tmp_path / "dit.safetensors").write_bytes(b"retrained")
    assert weights_tag("tiny", tmp_path) != first
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        weights_tag("tiny", tmp_path / "missing")


def _stream(dit, runner_cache_pairs, counts=(TOKENS, TOKENS, TOKENS, 5, 8, 11)):
    """Run the same frames (kept-token counts) through each (runner, cache); return every velocity per runner.
    The first frames fill the window (eager), then buckets 8 and 16 run, padded and exact."""
    cfg = dit.cfg
    g = torch.Generator().manual_seed(0)
    device = runner_cache_pairs[0][1].k.device
    text_kv = dit.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(device))
    outs = [[] for _ in runner_cache_pairs]
    with torch.no_grad():
        for t, count in enumerate(counts):
            idx = torch.randperm(TOKENS, generator=g)[:count].to(device)
            x = torch.randn(1, count, cfg.patch_dim, generator=g).to(device)
            pos = torch.stack([torch.full_like(idx, t), idx // GRID[1], idx % GRID[1]], dim=1)
            for (runner, cache), out in zip(runner_cache_pairs, outs):
                cache.append()
                write_idx = cache.token_index(cache.current_slot, idx)
                for timestep, store_pre in ((700.0, False), (0.0, True)):
                    ts = torch.full((1, 1), timestep, device=device)
                    out.append(runner(x.to(cache.k.dtype), pos, ts, text_kv, write_idx, store_pre).float().clone())
                cache.commit()
    return outs


@needs_tensorrt
@pytest.mark.parametrize(("precision", "dtype", "tol"), [("fp32", torch.float32, 2e-2), ("bf16", torch.bfloat16, 8e-2)])
def test_tensorrt_runner_matches_the_eager_runner(small_dit, exported, tmp_path, precision, dtype, tol):
    engines = [build_engine(exported(b), tmp_path / f"k{b}.engine", precision) for b in (8, TOKENS)]
    dit = copy.deepcopy(small_dit).to("cuda", dtype)
    cfg = dit.cfg

    def new_cache():
        return RollingKVCache(cfg.layers, 1, TOKENS, cfg.heads, cfg.head_dim, cfg.window, "cuda", dtype)

    ref_cache, cache = new_cache(), new_cache()
    want, got = _stream(dit, [(EagerRunner(dit, ref_cache), ref_cache), (TensorRTRunner(dit, cache, engines), cache)])
    for w, o in zip(want, got):
        assert (o - w).norm() / w.norm() < tol
    assert (cache.k.float() - ref_cache.k.float()).norm() / ref_cache.k.float().norm() < tol


@needs_tensorrt
def test_engines_are_cached_and_found_by_key(small_dit, exported, tmp_path):
    key = EngineKey.here("small", (64, 64), 8, "fp32", "random1")
    path, built = cached_engine(exported(8), tmp_path, key)
    assert built and path.name == key.filename
    again, built_again = cached_engine(exported(8), tmp_path, key)
    assert again == path and not built_again
    cfg = small_dit.cfg
    cache = RollingKVCache(cfg.layers, 1, TOKENS, cfg.heads, cfg.head_dim, cfg.window, "cuda", torch.float32)
    runner = TensorRTRunner.from_folder(small_dit, cache, tmp_path, "small", (64, 64), "random1", "fp32")
    assert runner.sizes == [8]
    with pytest.raises(RuntimeError, match="no TensorRT engines"):
        TensorRTRunner.from_folder(small_dit, cache, tmp_path, "small", (64, 64), "random2", "fp32")
    bf16_cache = RollingKVCache(cfg.layers, 1, TOKENS, cfg.heads, cfg.head_dim, cfg.window, "cuda", torch.bfloat16)
    with pytest.raises(ValueError, match="build engines in the runtime's precision"):
        TensorRTRunner(small_dit, bf16_cache, [path])
