"""Which attention kernel runs for which call: the choice logic and the tuner's pick (CPU-checkable;
the kernels themselves are checked against SDPA in test_kernels*.py and tests/engine/test_backends_cuda.py)."""

import pytest
import torch

from lipar.kernels import attention as attn
from lipar.kernels import set_triton

BF16 = torch.bfloat16


@pytest.fixture(autouse=True)
def defaults():
    yield
    attn.set_attention_backend(None)
    set_triton("attention", False)


def test_unmasked_16_bit_cuda_calls_are_tuned():
    assert attn.choose_backend(780, 128, BF16, on_cuda=True, masked=False) == "auto"
    assert attn.choose_backend(98, 64, torch.float16, on_cuda=True, masked=False) == "auto"


@pytest.mark.parametrize(
    ("dtype", "on_cuda", "masked"), [(BF16, False, False), (BF16, True, True), (torch.float32, True, False)]
)
def test_cpu_masked_and_float32_calls_go_to_sdpa(dtype, on_cuda, masked):
    assert attn.choose_backend(300, 128, dtype, on_cuda, masked) == "sdpa"


def test_forcing_and_the_triton_switch():
    attn.set_attention_backend("flash")
    assert attn.choose_backend(300, 128, BF16, on_cuda=True, masked=False) == "flash"
    assert attn.choose_backend(300, 128, BF16, on_cuda=False, masked=False) == "sdpa"  # no CUDA kernel on a CPU
    set_triton("attention", True)
    assert attn.choose_backend(1560, 64, torch.float32, on_cuda=True, masked=True) == "split_kv"


def test_candidates_split_the_window_into_whole_chunks():
    lk = 8 * 1560  # Wan's window: 12,480 keys
    auto = attn.candidates("auto", lk, 128)
    assert auto[:3] == [("sdpa", 1), ("flash", 1), ("split_kv", 0)]
    assert [n for _, n in auto[3:]] == [2, 3, 4, 5, 6, 8, 10]
    assert attn.candidates("cudnn_split", lk, 128) == auto[3:]
    assert attn.candidates("auto", 600, 128)[3:] == [("cudnn_split", 2)]  # chunks of >= 256 keys only
    assert attn.candidates("cudnn_split", lk, 96) == []  # the merge kernel needs a power-of-two head dim


def test_the_tuner_keeps_the_fastest_correct_candidate():
    results = {
        ("sdpa", 1): (0.34, 0.0),
        ("flash", 1): None,  # failed on these operands
        ("cudnn_split", 4): (0.10, 0.5),  # fast but wrong
        ("cudnn_split", 5): (0.21, 3e-3),
    }
    assert attn.pick_fastest(results) == ("cudnn_split", 5)
    with pytest.raises(RuntimeError, match="no attention candidate ran correctly"):
        attn.pick_fastest({("sdpa", 1): None})


def test_cpu_calls_compute_the_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, 2, 128, generator=g) for n in (5, 9, 9))
    attn.set_attention_backend("cudnn")  # forced backends apply to CUDA calls only
    torch.testing.assert_close(attn.attention(q, k, v), attn.attention_reference(q, k, v))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown attention backend 'fa3'; choose one of: auto, sdpa, flash"):
        attn.set_attention_backend("fa3")


def test_merge_reference_recombines_chunked_attention():
    """Chunk outputs weighted by their log-sum-exp (log2 or natural log) give attention over all keys."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, n, 3, 8, generator=g, dtype=torch.float64) for n in (5, 12, 12))
    parts, lses = [], []
    for kc, vc in zip(k.chunk(3, dim=1), v.chunk(3, dim=1)):
        scores = torch.einsum("blhd,bkhd->bhlk", q, kc) / 8**0.5
        parts.append(torch.einsum("bhlk,bkhd->bhld", scores.softmax(-1), vc).flatten(0, 1))
        lses.append(scores.logsumexp(-1).flatten(0, 1))
    o_part, lse = torch.stack(parts), torch.stack(lses)
    full = attn.attention_reference(q, k, v)
    assert torch.allclose(attn.merge_reference(o_part, lse, attn._LOG2E, heads=3), full, atol=1e-12)
    assert torch.allclose(attn.merge_reference(o_part, lse * attn._LOG2E, 1.0, heads=3), full, atol=1e-12)
