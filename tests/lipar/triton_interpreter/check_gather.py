"""Gather and restoration kernels against their references in Triton's interpreter (../test_kernels.py)."""

import os

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

from lipar.kernels import gather as mod

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")


def keep_indices(n, k, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def test_kernels_run_in_the_interpreter():
    assert isinstance(mod._gather_kernel, InterpretedFunction)
    assert isinstance(mod._restore_kernel, InterpretedFunction)


@pytest.mark.parametrize(
    ("dtype", "k"), [(torch.float32, 0), (torch.float32, 13), (torch.bfloat16, 1), (torch.bfloat16, 24)]
)
def test_gather_and_restore_match_the_reference_exactly(dtype, k):
    g = torch.Generator().manual_seed(k)
    b, n, d = 2, 24, 300  # d spans two column blocks; k = n keeps everything
    tokens = torch.randn(b, d, n, generator=g).to(dtype).transpose(1, 2)  # strided (B, N, D)
    previous = torch.randn(b, n, d, generator=g).to(dtype)
    idx = keep_indices(n, k, seed=k)

    out = torch.full((b, k, d), float("nan"), dtype=dtype)
    mod.gather_triton(tokens, idx, out=out)
    assert torch.equal(out, mod.gather_reference(tokens, idx))

    kept = torch.randn(b, k, d, generator=g).to(dtype)
    restored = torch.full((b, n, d), float("nan"), dtype=dtype)
    mod.restore_triton(kept, idx, previous, out=restored)
    assert torch.equal(restored, mod.restore_reference(kept, idx, previous))
