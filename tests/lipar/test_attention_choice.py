"""Which attention kernel runs for which call (the choice logic; the kernels are tested elsewhere)."""

import pytest
import torch

from lipar.kernels import attention as attn
from lipar.kernels import set_triton

BF16 = torch.bfloat16


@pytest.fixture(autouse=True)
def measured(monkeypatch):
    monkeypatch.setattr(attn, "MEASURED_CHOICE", ((400, "split_kv"), (1000, "cudnn"), (1560, "flash")))
    yield
    attn.set_attention_backend(None)
    set_triton("attention", False)


@pytest.mark.parametrize(("lq", "want"), [(1, "split_kv"), (400, "split_kv"), (401, "cudnn"), (1560, "flash")])
def test_measured_choice_by_query_count(lq, want):
    assert attn.choose_backend(lq, 128, BF16, on_cuda=True, masked=False) == want


def test_counts_past_the_last_bound_take_its_backend():
    assert attn.choose_backend(5000, 128, torch.float16, on_cuda=True, masked=False) == "flash"


@pytest.mark.parametrize(
    ("head_dim", "dtype", "on_cuda", "masked"),
    [(128, BF16, False, False), (128, BF16, True, True), (64, BF16, True, False), (128, torch.float32, True, False)],
)
def test_outside_the_measured_regime_sdpa_runs(head_dim, dtype, on_cuda, masked):
    assert attn.choose_backend(300, head_dim, dtype, on_cuda, masked) == "sdpa"


def test_forcing_and_the_triton_switch():
    attn.set_attention_backend("efficient")
    assert attn.choose_backend(300, 128, BF16, on_cuda=True, masked=False) == "efficient"
    assert attn.choose_backend(300, 128, BF16, on_cuda=False, masked=False) == "sdpa"  # no CUDA kernel on a CPU
    set_triton("attention", True)
    assert attn.choose_backend(1560, 64, torch.float32, on_cuda=True, masked=True) == "split_kv"


def test_cpu_calls_compute_the_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, 2, 128, generator=g) for n in (5, 9, 9))
    attn.set_attention_backend("cudnn")  # forced backends apply to CUDA calls only
    torch.testing.assert_close(attn.attention(q, k, v), attn.attention_reference(q, k, v))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown attention backend 'fa3'; choose one of: sdpa, flash"):
        attn.set_attention_backend("fa3")
