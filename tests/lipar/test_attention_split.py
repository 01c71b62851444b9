"""Stock flash attention over KV chunks (lipar/kernels/attention.py): exact merge, and when it splits."""

import pytest
import torch

from lipar.kernels.attention import attention_reference, sdpa_split_kv, sdpa_splits


@pytest.mark.parametrize("splits", [1, 2, 3, 8])
def test_sdpa_split_kv_matches_reference_on_cache_views(splits):
    g = torch.Generator().manual_seed(splits)
    cache = torch.randn(2, 2, 48 * 4, 3, 16, generator=g)  # (k|v, B, slots * N, H, D)
    k, v = cache[0, :, : 48 * 3], cache[1, :, : 48 * 3]  # strided views, 144 keys
    q = torch.randn(2, 20, 3, 16, generator=g)
    out = sdpa_split_kv(q, k, v, splits)
    torch.testing.assert_close(out, attention_reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_sdpa_split_kv_rejects_uneven_chunks():
    q, kv = torch.randn(1, 4, 2, 8), torch.randn(1, 10, 2, 8)
    with pytest.raises(ValueError, match="equal chunks"):
        sdpa_split_kv(q, kv, kv, 3)


def test_sdpa_splits_fills_idle_multiprocessors_only():
    # wan2.1-1.3b at 480x832: 1,560 tokens per frame, 8 frames of keys, 12 heads, 132 SMs (H200)
    lk = 8 * 1560
    assert sdpa_splits(780, lk, 12, 132) == 3  # 84 programs: one two-thirds-empty wave -> 252 in 2 waves
    assert sdpa_splits(1170, lk, 12, 132) == 1  # 120 programs already fill one wave
    assert sdpa_splits(1560, lk, 12, 132) == 5  # 156 programs: a second wave of 24 -> 780 in 6
    assert sdpa_splits(256, 2048, 3, 132) == 1  # short KV: launches dominate, never split
    for lq in range(64, 1600, 97):
        assert lk % sdpa_splits(lq, lk, 12, 132) == 0
