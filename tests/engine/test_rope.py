import math

import torch

from engine.rope import Rope3D, apply_rope


def reference_rope(x, pos, head_dim, theta=10000.0):
    """Direct complex-number RoPE, one token and axis at a time (Wan's 22/21/21 split for D=128)."""
    pairs = head_dim // 2
    split = [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3]
    out = torch.empty_like(x, dtype=torch.float64)
    for n in range(x.shape[1]):
        angles = []
        for axis, count in enumerate(split):
            for j in range(count):
                angles.append(pos[n, axis].item() * theta ** (-(2 * j) / (2 * count)))
        rot = torch.tensor([complex(math.cos(a), math.sin(a)) for a in angles], dtype=torch.complex128)
        xc = torch.view_as_complex(x[:, n].double().reshape(x.shape[0], x.shape[2], -1, 2).contiguous())
        out[:, n] = torch.view_as_real(xc * rot).reshape(x.shape[0], x.shape[2], -1)
    return out


def test_rope_matches_direct_complex_reference():
    torch.manual_seed(0)
    for head_dim in (128, 64):
        x = torch.randn(2, 7, 3, head_dim)
        pos = torch.randint(0, 50, (7, 3))
        pos[0] = torch.tensor([12345, 3, 4])  # a late frame in a long stream keeps its phase
        cos, sin = Rope3D(head_dim).cos_sin(pos)
        got = apply_rope(x, cos, sin)
        torch.testing.assert_close(got.double(), reference_rope(x, pos, head_dim), atol=2e-5, rtol=1e-5)


def test_rope_split_is_wan_22_21_21():
    rope = Rope3D(128)
    assert [f.numel() for f in rope.inv_freq] == [22, 21, 21]


def test_rope_is_relative_in_time():
    """q.k after RoPE depends only on the time difference: what lets cached keys keep their rotation."""
    torch.manual_seed(1)
    rope = Rope3D(64)
    q, k = torch.randn(1, 1, 1, 64), torch.randn(1, 1, 1, 64)

    def score(tq, tk):
        cq, sq = rope.cos_sin(torch.tensor([[tq, 2, 3]]))
        ck, sk = rope.cos_sin(torch.tensor([[tk, 2, 3]]))
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    torch.testing.assert_close(score(10, 7), score(1003, 1000), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(10, 7), score(10, 8))
