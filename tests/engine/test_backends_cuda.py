"""The CUDA-graph backend against eager execution on a GPU (skipped without CUDA). Where the MiniLM
package is not installed, MINILM_DIR names a folder of it (train/export_minilm.py)."""

import os

import numpy as np
import pytest
import torch

from engine.backends import GraphedCall, pad_to_bucket
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
