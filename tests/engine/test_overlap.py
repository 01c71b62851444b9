"""The side stream: work beside the main stream on CUDA, deferred (and timed once) on the CPU."""

import os
import time

import numpy as np
import pytest
import torch

from engine.generator import StreamingGenerator
from engine.overlap import SideStream


def test_on_the_cpu_work_runs_when_asked_for_and_once():
    calls = []
    pending = SideStream(torch.device("cpu")).run(lambda a, b: calls.append(1) or a + b, torch.ones(2), torch.ones(2))
    assert calls == []
    assert torch.equal(pending.result(), torch.full((2,), 2.0)) and torch.equal(pending.result(), torch.full((2,), 2.0))
    assert calls == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_result_waits_for_the_side_stream():
    side = SideStream(torch.device("cuda"))
    x = torch.randn(4096, 4096, device="cuda")
    pending = side.run(lambda a: (a @ a).sum(0), x)
    expected = (x @ x).sum(0)
    torch.testing.assert_close(pending.result() - expected, torch.zeros_like(expected), atol=1e-2, rtol=0)


def test_the_decode_is_timed_as_decode_only_not_inside_the_dit():
    """On the CPU the decode the step hands beside the cache pass runs after it: a slow decoder shows in
    "decode" and not in "dit", and the step's total is its wall clock."""
    gen = StreamingGenerator.from_pretrained(
        "tiny", device="cpu", random_weights=True, size=(64, 64), seed=3, text_encoder_path=os.environ.get("MINILM_DIR")
    )
    gen.set_prompt("a red ball")
    decode = gen._decode

    def slow(clean):
        time.sleep(0.3)
        return decode(clean)

    gen._decode = slow
    frame = np.full((64, 64, 3), 90, np.uint8)
    start = time.perf_counter()
    stats = gen.step(frame).stats
    wall = (time.perf_counter() - start) * 1000.0
    assert stats["stages_ms"]["decode"] >= 300 > stats["stages_ms"]["dit"]
    assert 300 <= stats["total_ms"] <= wall
