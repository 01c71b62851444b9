"""The CUDA-graph backend against eager execution on a GPU (skipped without CUDA). Where the MiniLM
package is not installed, MINILM_DIR names a folder of it (train/export_minilm.py)."""

import os

import numpy as np
import pytest
import torch

from engine.backends import CudaGraphRunner, GraphedCall, pad_to_bucket
from engine.generator import StreamingGenerator
from lipar.config import LiparConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_full_bucket_is_not_copied():
    x, pos, idx = torch.randn(1, 4, 8), torch.zeros(4, 3, dtype=torch.long), torch.arange(4)
    assert all(a is b for a, b in zip(pad_to_bucket(4, x, pos, idx), (x, pos, idx)))


@cuda
def test_graphed_call_replays_the_function_on_new_inputs():
    call = GraphedCall(lambda x: torch.nn.functional.silu(x) * 2 + 1)
    for _ in range(3):
        x = torch.randn(2, 5, device="cuda")
        out = call(x)
        torch.testing.assert_close(out, torch.nn.functional.silu(x) * 2 + 1)
    assert len(call.graphs) == 1
    kept = call(x)
    call(torch.zeros_like(x))
    torch.testing.assert_close(kept, torch.nn.functional.silu(x) * 2 + 1)  # not overwritten by a replay


@cuda
@pytest.mark.parametrize("lipar", [False, True])
def test_cuda_graphs_match_eager_on_a_stream(lipar):
    rng = np.random.default_rng(0)
    source = [np.clip(rng.integers(0, 255, (128, 128, 3)) + i, 0, 255).astype(np.uint8) for i in range(12)]
    outs = {}
    for backend in ("torch", "cudagraph"):
        gen = StreamingGenerator.from_pretrained(
            "tiny",
            device="cuda",
            backend=backend,
            lipar=LiparConfig(enabled=lipar),
            text_encoder_path=os.environ.get("MINILM_DIR"),
        )
        gen.set_prompt("a red ball moving right over a plain black background")
        outs[backend] = np.stack([gen.step(f).frames[-1] for f in source]).astype(np.float32)
    # bf16 both ways; the graphs replay the same kernels, so frames differ by rounding only
    assert np.abs(outs["torch"] - outs["cudagraph"]).mean() < 1.0


@cuda
@pytest.mark.parametrize("scaling", ["tensor", "row"])
def test_fp8_scaled_mm_computes_the_reference(scaling):
    from engine.fp8 import Float8Linear, fp8_matmul_reference, quantize

    torch.manual_seed(0)
    linear = torch.nn.Linear(1536, 8960).cuda().bfloat16()
    x = torch.randn(1, 1170, 1536, device="cuda", dtype=torch.bfloat16)  # a kept count, not a multiple of 16
    layer = Float8Linear(linear, scaling)
    out = layer(x)
    x_q, x_scale = quantize(x[0], scaling)
    want = fp8_matmul_reference(x_q, x_scale, layer.weight, layer.weight_scale, layer.bias)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 1170, 8960)
    assert ((out[0].float() - want).norm() / want.norm()).item() < 1e-2


@cuda
@pytest.mark.parametrize("backend", ["sdpa", "flash", "efficient", "cudnn", "split_kv"])
def test_every_attention_backend_matches_the_reference_on_cache_views(backend):
    from lipar.kernels import attention as attn

    g = torch.Generator("cuda").manual_seed(0)
    n, h, d = 1560, 12, 128
    cache = torch.randn(2, 1, 9 * n, h, d, device="cuda", generator=g).bfloat16()
    k, v = cache[0, :, : 8 * n], cache[1, :, : 8 * n]
    q = torch.randn(1, 780, h, d, device="cuda", generator=g).bfloat16()
    attn.set_attention_backend(backend)
    try:
        out = attn.attention(q, k, v)
    finally:
        attn.set_attention_backend(None)
    ref = attn.attention_reference(q.double(), k.double(), v.double())
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2


@cuda
def test_compiled_blocks_in_cuda_graphs_match_eager():
    outs = {}
    for compiled in (False, True):
        gen = StreamingGenerator.from_pretrained(
            "tiny", device="cuda", lipar=LiparConfig(), text_encoder_path=os.environ.get("MINILM_DIR")
        )
        gen.runner = CudaGraphRunner(gen.dit, gen.cache, compiled=compiled)
        gen.set_prompt("a red ball moving right over a plain black background")
        rng = np.random.default_rng(1)
        source = [np.clip(rng.integers(0, 255, (128, 128, 3)) + i, 0, 255).astype(np.uint8) for i in range(12)]
        outs[compiled] = np.stack([gen.step(f).frames[-1] for f in source]).astype(np.float32)
        assert gen.dit.compiled == compiled
    assert np.abs(outs[False] - outs[True]).mean() < 1.0  # bf16 rounding of fused vs unfused kernels
