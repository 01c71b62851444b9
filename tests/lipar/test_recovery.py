import pytest
import torch

from engine.config import KVWindow
from engine.kv_cache import RollingKVCache
from engine.rope import Rope3D, apply_rope
from lipar.kernels.recovery import rope
from lipar.prune import positions
from lipar.recovery import key_padding_mask, recover_kv

B, GH, GW, H, D = 2, 3, 4, 2, 12
N = GH * GW


def test_rope_matches_the_engine_convention():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, H, D, generator=g)
    cos, sin = Rope3D(D).cos_sin(positions(5, GH, GW))
    assert torch.allclose(rope(x, cos, sin), apply_rope(x, cos, sin), atol=1e-6)


def test_recover_kv_writes_the_pruned_positions_of_the_current_slot_only():
    cache = RollingKVCache(2, B, N, H, D, KVWindow(sinks=1, m=2), "cpu", torch.float32)
    g = torch.Generator().manual_seed(1)
    for t in (cache.k, cache.v, cache.k_pre):
        t.copy_(torch.randn(t.shape, generator=g))
    for _ in range(3):
        cache.append()
        cache.commit()
    current = cache.append()
    before = [t.clone() for t in (cache.k, cache.v, cache.k_pre)]
    _, src_v, src_k_pre = cache.frame(cache.previous_slot)  # all layers at once: (layers * B, N, H, D)
    dst_k, dst_v, dst_k_pre = cache.frame(current)
    pruned = torch.tensor([0, 2, 3, 7, 11])
    cos, sin = Rope3D(D).cos_sin(positions(cache.frames, GH, GW, pruned))

    recover_kv(src_k_pre, src_v, dst_k, dst_v, dst_k_pre, pruned, cos, sin)

    assert torch.allclose(dst_k[:, pruned], apply_rope(src_k_pre[:, pruned], cos, sin), atol=1e-6)
    assert torch.equal(dst_v[:, pruned], src_v[:, pruned])
    assert torch.equal(dst_k_pre[:, pruned], src_k_pre[:, pruned])
    written = torch.zeros_like(cache.k, dtype=torch.bool)
    written[:, :, current * N + pruned] = True
    for after, old in zip((cache.k, cache.v, cache.k_pre), before, strict=True):
        assert torch.equal(after[~written], old[~written]), "nothing outside the pruned positions changes"


def test_key_padding_mask_hides_only_the_pruned_tokens_of_the_current_slot():
    pruned = torch.tensor([1, 4])
    mask = key_padding_mask(3 * N, 2 * N, pruned)
    assert mask.shape == (3 * N,) and mask.dtype == torch.bool
    assert (~mask).nonzero().flatten().tolist() == [2 * N + 1, 2 * N + 4]


def test_bad_inputs_raise_clear_errors():
    kv = [torch.zeros(B, N, H, D) for _ in range(5)]
    idx = torch.tensor([0, 1])
    cos = torch.zeros(2, D // 2)
    with pytest.raises(ValueError, match="one shape"):
        recover_kv(*kv[:4], torch.zeros(B, N, H, D + 2), idx, cos, cos)
    with pytest.raises(ValueError, match="dtype"):
        recover_kv(*kv[:4], kv[4].double(), idx, cos, cos)
    with pytest.raises(ValueError, match="int64"):
        recover_kv(*kv, idx.int(), cos, cos)
    with pytest.raises(ValueError, match=r"cos must be float32 of shape \(P, D/2\)"):
        recover_kv(*kv, idx, torch.zeros(3, D // 2), cos)
    with pytest.raises(ValueError, match="sin must be float32"):
        recover_kv(*kv, idx, cos, cos.double())
    with pytest.raises(ValueError, match="current_slot_offset"):
        key_padding_mask(N, N, idx)
    with pytest.raises(ValueError, match="int64"):
        key_padding_mask(2 * N, N, idx.int())
