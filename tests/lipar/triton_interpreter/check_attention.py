"""Split-KV attention kernel against SDPA in Triton's interpreter (started by ../test_kernels.py).

bf16 is checked on CUDA only (../test_kernels_cuda.py): the interpreter multiplies bf16 operands of
tl.dot as raw 16-bit integers. fp16 runs the same code path.
"""

import os

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

from lipar.kernels import attention as mod

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def qkv(b, lq, lk, h, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, h, d, generator=g).to(dtype) for n in (lq, lk, lk)]


def reference(q, k, v, key_mask=None):
    return mod.attention_reference(q.double(), k.double(), v.double(), key_mask)


def test_kernels_run_in_the_interpreter():
    assert isinstance(mod._split_kv_kernel, InterpretedFunction)
    assert isinstance(mod._combine_kernel, InterpretedFunction)


@pytest.mark.parametrize(
    ("dtype", "splits", "tol"),
    [(torch.float32, 1, 1e-5), (torch.float32, 3, 1e-5), (torch.float16, 4, 2e-3)],
)
def test_matches_sdpa(dtype, splits, tol):
    q, k, v = qkv(2, 20, 70, 1, 16, dtype, seed=splits)  # Lq, Lk not multiples of the blocks
    out = torch.full_like(q, float("nan"))
    mod.split_kv_attention(q, k, v, num_splits=splits, block_m=16, block_n=16, out=out)
    assert not out.isnan().any(), "every output element is written"
    assert rel_err(out, reference(q, k, v)) < tol


def test_key_mask_and_strided_cache_views():
    g = torch.Generator().manual_seed(7)
    b, lq, h, d, slots, n = 1, 18, 3, 24, 3, 16  # head dim 24 is padded to a block of 32
    cache = torch.randn(2, 2, b, slots * n + 5, h, d, generator=g)  # (k/v, layers, B, L, H, D)
    k, v = cache[0, 1, :, : slots * n], cache[1, 1, :, : slots * n]
    q = torch.randn(b, lq, 3, h, d, generator=g)[:, :, 0]  # q out of a packed qkv projection
    key_mask = torch.rand(slots * n, generator=g) > 0.3
    out = torch.full((b, h, lq, d), float("nan")).transpose(1, 2)  # a strided output too
    mod.split_kv_attention(q, k, v, key_mask, num_splits=2, block_m=16, block_n=16, out=out)
    assert not out.isnan().any()
    assert rel_err(out, reference(q, k, v, key_mask)) < 1e-5


def test_default_tiling_and_split_choice():
    q, k, v = qkv(1, 70, 200, 2, 16, torch.float32, seed=10)
    assert rel_err(mod.split_kv_attention(q, k, v), reference(q, k, v)) < 1e-5


def test_fully_masked_queries_get_zero():
    q, k, v = qkv(1, 5, 32, 1, 16, torch.float32, seed=8)
    out = mod.split_kv_attention(q, k, v, torch.zeros(32, dtype=torch.bool), num_splits=2, block_m=16, block_n=16)
    assert torch.equal(out, torch.zeros_like(out))


def chunk_partials(q, k, v, splits):
    """Each KV chunk's attention output and natural-log LSE, (S, B*H, Lq, D) and (S, B*H, Lq)."""
    outs, lses = [], []
    for kc, vc in zip(k.chunk(splits, dim=1), v.chunk(splits, dim=1)):
        scores = torch.einsum("blhd,bkhd->bhlk", q.double(), kc.double()) / q.shape[-1] ** 0.5
        outs.append(torch.einsum("bhlk,bkhd->bhld", scores.softmax(-1), vc.double()).flatten(0, 1))
        lses.append(scores.logsumexp(-1).flatten(0, 1))
    return torch.stack(outs), torch.stack(lses)


def test_merge_reads_strided_partials_as_cudnn_lays_them_out():
    """cuDNN writes its chunk outputs after the queries' strides (stride-0 chunks: not contiguous)."""
    q, k, v = qkv(1, 21, 96, 3, 16, torch.float32, seed=11)
    o_part, lse = chunk_partials(q, k, v, splits=4)
    strided_o = o_part.float().permute(2, 1, 0, 3).contiguous().permute(2, 1, 0, 3)  # (Lq, H, S, D) in memory
    strided_lse = lse.float().permute(2, 0, 1).contiguous().permute(1, 2, 0)
    assert not strided_o.is_contiguous() and not strided_lse.is_contiguous()
    out = torch.full((1, 3, 21, 16), float("nan")).transpose(1, 2)
    mod.merge_partials(strided_o, strided_lse, out, lse_to_log2=mod._LOG2E)
    assert rel_err(out, mod.merge_reference(o_part, lse, mod._LOG2E, heads=3)) < 1e-5
    assert rel_err(out, reference(q, k, v)) < 1e-5
