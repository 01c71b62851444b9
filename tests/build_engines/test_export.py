import numpy as np
import onnx
import pytest
import torch

from build_engines.cli import build_engines
from build_engines.export import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    bucket_sizes,
    export_onnx,
    export_step,
    graph_shapes,
    random_step,
)
from build_engines.runner import OnnxRuntimeRunner
from build_engines.verify import TOLERANCE, verify_onnx
from engine.backends import EagerRunner
from engine.config import KVWindow
from engine.dit import CausalDiT
from engine.kv_cache import RollingKVCache

GRID = (4, 4)  # the small model's frames (conftest)
TOKENS = GRID[0] * GRID[1]


@pytest.mark.parametrize("bucket", [1, 6, TOKENS])
def test_onnxruntime_matches_torch(small_dit, exported, bucket):
    errors = verify_onnx(exported(bucket), small_dit, GRID)
    assert set(errors) == set(OUTPUT_NAMES)
    assert max(errors.values()) < TOLERANCE, errors


def test_verify_catches_a_graph_of_other_weights(small_dit, exported):
    other = CausalDiT(small_dit.cfg).eval()  # default init, not the exported weights
    assert max(verify_onnx(exported(6), other, GRID).values()) > 1e-2


def test_graph_inputs_and_outputs_have_the_documented_names_and_shapes(small_dit, exported):
    graph = onnx.load(str(exported(6))).graph
    shapes = graph_shapes(small_dit.cfg, TOKENS, 6)

    def described(values):
        return {
            v.name: (tuple(d.dim_value for d in v.type.tensor_type.shape.dim), v.type.tensor_type.elem_type)
            for v in values
        }

    inputs, outputs = described(graph.input), described(graph.output)
    assert [v.name for v in graph.input] == list(INPUT_NAMES)
    assert [v.name for v in graph.output] == list(OUTPUT_NAMES)
    for name, (shape, dtype) in {**inputs, **outputs}.items():
        assert shape == shapes[name], name
        want = onnx.TensorProto.INT64 if name == "write_idx" else onnx.TensorProto.FLOAT
        assert dtype == want, name
    cfg = small_dit.cfg
    assert shapes["k"] == (cfg.layers, 1, cfg.window.slots * TOKENS, cfg.heads, cfg.head_dim)
    assert shapes["cos"] == (6, cfg.head_dim // 2)


def test_random_step_writes_into_the_open_slot_of_a_full_window(small_dit):
    inputs = random_step(small_dit, GRID, 6)
    cache = inputs.cache
    assert cache.valid_tokens == cache.k.shape[2]  # the steady state the graph is exported for
    slot = inputs.graph["write_idx"] // TOKENS
    assert torch.all(slot == cache.current_slot)
    assert len(set(inputs.graph["write_idx"].tolist())) == 6
    assert torch.all(inputs.pos[:, 0] == inputs.time_index)


def test_bucket_sizes_cover_the_frame():
    assert bucket_sizes(64) == [4 * i for i in range(1, 17)]
    assert bucket_sizes(10)[-1] == 10 and bucket_sizes(10)[0] == 1


def _pos(t, idx):
    return torch.stack([torch.full_like(idx, t), idx // GRID[1], idx % GRID[1]], dim=1)


def test_onnxruntime_runner_matches_the_eager_runner(small_dit, exported):
    """A stream of frames through both runners: eager while the window fills, then graphs of buckets
    8 and 16 (5 tokens are padded to 8), denoising steps and cache passes, and a key mask (eager)."""
    cfg = small_dit.cfg

    def new_cache():
        return RollingKVCache(cfg.layers, 1, TOKENS, cfg.heads, cfg.head_dim, cfg.window, "cpu", torch.float32)

    ref_cache, cache = new_cache(), new_cache()
    eager = EagerRunner(small_dit, ref_cache)
    runner = OnnxRuntimeRunner(small_dit, cache, [exported(8), exported(TOKENS)])
    g = torch.Generator().manual_seed(0)
    text_kv = small_dit.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, generator=g))
    kept = [TOKENS, TOKENS, TOKENS, TOKENS, 5, 8, TOKENS, 11, 3]
    with torch.no_grad():
        for t, count in enumerate(kept):
            for c in (ref_cache, cache):
                c.append()
            idx = torch.randperm(TOKENS, generator=g)[:count].sort().values
            write_idx = cache.token_index(cache.current_slot, idx)
            x = torch.randn(1, count, cfg.patch_dim, generator=g)
            key_mask = torch.rand(cache.valid_tokens, generator=g) > 0.2 if t == len(kept) - 1 else None
            for timestep, store_pre in ((700.0, False), (0.0, True)):  # a denoising step, then the cache pass
                ts = torch.full((1, 1), timestep)
                want = eager(x, _pos(t, idx), ts, text_kv, write_idx, store_pre, key_mask)
                got = runner(x, _pos(t, idx), ts, text_kv, write_idx, store_pre, key_mask)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            for c in (ref_cache, cache):
                c.commit()
            for ours, ref in ((cache.k, ref_cache.k), (cache.v, ref_cache.v), (cache.k_pre, ref_cache.k_pre)):
                torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_runner_rejects_graphs_of_another_model_or_cache(small_dit, exported):
    cfg = small_dit.cfg
    cache = RollingKVCache(cfg.layers, 1, TOKENS, cfg.heads, cfg.head_dim, KVWindow(1, 3), "cpu", torch.float32)
    with pytest.raises(ValueError, match="not exported for this model, size and window"):
        OnnxRuntimeRunner(small_dit, cache, [exported(6)])
    bf16 = RollingKVCache(cfg.layers, 1, TOKENS, cfg.heads, cfg.head_dim, cfg.window, "cpu", torch.bfloat16)
    with pytest.raises(ValueError, match="float32 CPU cache"):
        OnnxRuntimeRunner(small_dit, bf16, [exported(6)])


def test_export_rejects_bad_buckets_and_models(small_dit, tmp_path):
    for bucket in (0, TOKENS + 1):
        with pytest.raises(ValueError, match=r"kept-token count in \[1, 16\]"):
            export_step(small_dit, GRID, bucket, tmp_path / "x.onnx")
    half = CausalDiT(small_dit.cfg).to(torch.bfloat16)
    with pytest.raises(ValueError, match="fp32 CPU DiT"):
        export_step(half, GRID, 4, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="unknown model"):
        export_onnx("no-such-model", tmp_path, random_weights=True)
    with pytest.raises(ValueError, match="not supported by tiny"):
        export_onnx("tiny", tmp_path, size=(100, 128), random_weights=True)
    with pytest.raises(ValueError, match=r"buckets \[65\] are outside \[1, 64\]"):
        export_onnx("tiny", tmp_path, buckets=[4, 65], random_weights=True)
    with pytest.raises(FileNotFoundError, match="--random-weights"):
        export_onnx("tiny", tmp_path, weights=tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


def test_build_engines_exports_verifies_and_reports(tmp_path, capsys):
    rows = build_engines("tiny", tmp_path, device="cpu", buckets=[16], random_weights=True)
    assert len(rows) == 1
    row = rows[0]
    assert row.size == (128, 128) and row.bucket == 16
    assert row.onnx == tmp_path / "tiny-128x128-k16.onnx" and row.onnx.stat().st_size == row.onnx_bytes
    assert row.ort_error < TOLERANCE
    # no CUDA device asked for here, and TensorRT is usually absent: never a silent "built"
    assert row.tensorrt in ("skipped: not installed", "skipped: needs a CUDA device")
    table = capsys.readouterr().out
    assert "onnxruntime rel. err" in table and "128x128" in table and row.tensorrt in table


def test_build_engines_rejects_bad_arguments_before_exporting(tmp_path):
    with pytest.raises(ValueError, match="unknown precision"):
        build_engines("tiny", tmp_path, device="cpu", random_weights=True, precision="int8")
    with pytest.raises(ValueError, match="not supported by tiny"):
        build_engines("tiny", tmp_path, device="cpu", sizes=[(128, 128), (120, 128)], random_weights=True)
    with pytest.raises(ValueError, match="unknown device"):
        build_engines("tiny", tmp_path, device="tpu", random_weights=True)
    assert not list(tmp_path.iterdir())


def test_relative_error_is_scale_free():
    from build_engines.verify import relative_error

    ref = np.arange(1.0, 5.0)
    assert relative_error(ref * 1.001, ref) == pytest.approx(1e-3)
    assert relative_error(ref * 1000 * 1.001, ref * 1000) == pytest.approx(1e-3)
