"""Fused attention-recovery kernel against its reference in Triton's interpreter (../test_kernels.py)."""

import os

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

from lipar.kernels import recovery as mod

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")


def test_kernel_runs_in_the_interpreter():
    assert isinstance(mod._recover_kernel, InterpretedFunction)


# bf16: the interpreter's own float32 -> bf16 rounding is approximate, so the rotated K may differ by
# one bf16 ulp; copies stay exact
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 0.0), (torch.float16, 0.0), (torch.bfloat16, 1e-2)])
def test_matches_the_reference_on_strided_cache_slots(dtype, tol):
    g = torch.Generator().manual_seed(0)
    layers, b, n, h, d, slots = 2, 1, 20, 3, 12, 3
    pruned = torch.tensor([0, 3, 4, 5, 11, 19])
    cos, sin = torch.randn(2, pruned.numel(), d // 2, generator=g).unbind(0)

    def cache():  # (layers, B, slots * N, H, D) of poison; the current frame is slot 2 of layer 1
        return [torch.full((layers, b, slots * n, h, d), 7.0, dtype=dtype) for _ in range(3)]

    src = torch.randn(2, layers, b, slots * n, h, d, generator=g).to(dtype)
    src_k_pre, src_v = src[0, 0, :, n : 2 * n], src[1, 0, :, n : 2 * n]  # a clean frame's slot
    got, want = cache(), cache()
    for buffers, fn in ((got, mod.recover_kv_triton), (want, mod.recover_kv_reference)):
        dst = [t[1, :, 2 * n : 3 * n] for t in buffers]
        fn(src_k_pre, src_v, *dst, pruned, cos, sin)

    written = torch.zeros(layers, b, slots * n, h, d, dtype=torch.bool)
    written[1, :, 2 * n + pruned] = True
    for name, a, r in zip(("k", "v", "k_pre"), got, want, strict=True):
        assert (a[~written] == 7.0).all(), f"{name}: nothing outside the pruned positions is written"
        err = ((a.double() - r.double()).norm() / r.double().norm()).item()
        assert err <= (tol if name == "k" else 0.0), f"{name}: relative error {err}"
