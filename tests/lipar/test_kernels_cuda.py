"""The compiled Triton kernels on a GPU at the real model's shapes (skipped without CUDA)."""

import pytest
import torch

from lipar.kernels import attention as attn
from lipar.kernels import gather, recovery

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
N, H, D = 1560, 12, 128  # Wan2.1-1.3B at 480x832


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 1e-2), (torch.float16, 2e-3), (torch.float32, 1e-5)])
@pytest.mark.parametrize("kept", [0.25, 1.0])
def test_attention_matches_sdpa(dtype, tol, kept):
    g = torch.Generator("cuda").manual_seed(0)
    lq, lk = int(kept * N), 8 * N
    cache = torch.randn(2, 1, 9 * N, H, D, device="cuda", generator=g).to(dtype)
    k, v = cache[0, :, :lk], cache[1, :, :lk]  # strided views of a cache
    q = torch.randn(1, lq, H, D, device="cuda", generator=g).to(dtype)
    out = torch.full_like(q, float("nan"))
    attn.split_kv_attention(q, k, v, out=out)
    assert not out.isnan().any()
    assert rel_err(out, attn.attention_reference(q.double(), k.double(), v.double())) < tol
    key_mask = torch.rand(lk, device="cuda", generator=g) > 0.2
    masked = attn.attention(q, k, v, key_mask)
    assert rel_err(masked, attn.attention_reference(q.double(), k.double(), v.double(), key_mask)) < tol


def test_recovery_and_gather_match_their_references():
    g = torch.Generator("cuda").manual_seed(1)
    pruned = torch.randperm(N, device="cuda", generator=g)[: N // 2].sort().values
    cos, sin = torch.randn(2, pruned.numel(), D // 2, device="cuda", generator=g).unbind(0)
    src = torch.randn(2, 2, 3 * N, H, D, device="cuda", generator=g).bfloat16()  # (k_pre/v, layers*B, L, H, D)
    got = [torch.full((2, 3 * N, H, D), 7.0, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    want = [t.clone() for t in got]
    src_k_pre, src_v = src[0, :, N : 2 * N], src[1, :, N : 2 * N]
    recovery.recover_kv_triton(src_k_pre, src_v, *[t[:, 2 * N :] for t in got], pruned, cos, sin)
    recovery.recover_kv_reference(src_k_pre, src_v, *[t[:, 2 * N :] for t in want], pruned, cos, sin)
    assert rel_err(got[0], want[0]) < 1e-2
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    assert (got[0][:, : 2 * N] == 7.0).all()

    tokens = torch.randn(2, N, 1536, device="cuda", generator=g).bfloat16()
    kept = gather.gather_triton(tokens, pruned)
    assert torch.equal(kept, gather.gather_reference(tokens, pruned))
    previous = torch.randn_like(tokens)
    assert torch.equal(gather.restore_triton(kept, pruned, previous), gather.restore_reference(kept, pruned, previous))
