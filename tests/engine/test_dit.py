import torch

from engine.attention import CacheAttention, SequenceAttention, frame_causal_mask
from engine.dit import patchify, unpatchify
from engine.kv_cache import RollingKVCache


def grid_positions(t, gh, gw):
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return torch.stack([torch.full((gh * gw,), t), rows.flatten(), cols.flatten()], dim=1)


def test_patchify_round_trip_and_layout():
    x = torch.randn(2, 4, 6, 8)
    tokens = patchify(x)
    assert tokens.shape == (2, 12, 16)
    torch.testing.assert_close(unpatchify(tokens, 6, 8), x)
    # token 1 is the patch at row 0, columns 2..3, laid out (C, 2, 2)
    torch.testing.assert_close(tokens[0, 1].reshape(4, 2, 2), x[0, :, 0:2, 2:4])


def make_cache(model, n):
    cfg = model.cfg
    return RollingKVCache(cfg.layers, 1, n, cfg.heads, cfg.head_dim, cfg.window, "cpu", torch.float64)


def test_cached_generation_equals_full_causal_recompute(small_model):
    """Frame-by-frame with the rolling cache (eviction included) == one pass over all frames with the
    windowed block-causal mask. float64, tolerance 1e-10."""
    model, cfg = small_model, small_model.cfg
    frames, gh, gw = 6, 2, 3  # window 1 sink + 2 frames: frames 4 and 5 run after evictions
    n = gh * gw
    torch.manual_seed(0)
    x = torch.randn(1, frames * n, cfg.patch_dim, dtype=torch.float64)
    text_kv = model.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, dtype=torch.float64))
    pos = torch.cat([grid_positions(f, gh, gw) for f in range(frames)])
    t = torch.rand(1, frames * n, dtype=torch.float64) * 1000
    mask = frame_causal_mask(frames, n, cfg.window.sinks, cfg.window.m)
    full = model(x, pos, t, text_kv, SequenceAttention(mask))

    cache = make_cache(model, n)
    idx = torch.arange(n)
    for f in range(frames):
        cache.append()
        s = slice(f * n, (f + 1) * n)
        out = model(
            x[:, s],
            pos[s],
            t[:, s],
            text_kv,
            CacheAttention(cache, cache.token_index(cache.current_slot, idx), store_pre=True),
        )
        torch.testing.assert_close(out, full[:, s], atol=1e-10, rtol=1e-10)
        cache.commit()


def test_window_matters():
    """The windowed mask differs from full causal attention once frames are evicted (the test above
    would be vacuous otherwise)."""
    m = frame_causal_mask(5, 1, sinks=1, m=2)
    assert m[4, 0] and m[4, 3] and m[4, 2] and not m[4, 1]
    assert not m[1, 2]  # causal


def test_subset_forward_equals_full_forward_when_kv_complete(small_model):
    model, cfg = small_model, small_model.cfg
    gh, gw = 3, 3
    n = gh * gw
    torch.manual_seed(2)
    text_kv = model.text_kv(torch.randn(1, cfg.text_len, cfg.text_dim, dtype=torch.float64))
    cache = make_cache(model, n)
    idx = torch.arange(n)
    for f in range(2):  # some clean context
        cache.append()
        model(
            torch.randn(1, n, cfg.patch_dim, dtype=torch.float64),
            grid_positions(f, gh, gw),
            torch.zeros(1, 1, dtype=torch.float64),
            text_kv,
            CacheAttention(cache, cache.token_index(cache.current_slot, idx), True),
        )
        cache.commit()
    cache.append()
    x = torch.randn(1, n, cfg.patch_dim, dtype=torch.float64)
    pos = grid_positions(2, gh, gw)
    ts = torch.full((1, 1), 700.0, dtype=torch.float64)
    full = model(
        x, pos, ts, text_kv, CacheAttention(cache, cache.token_index(cache.current_slot, idx), False)
    )  # leaves the frame's K/V in its slot
    subset = torch.tensor([0, 4, 5, 8])
    part = model(
        x[:, subset],
        pos[subset],
        ts,
        text_kv,
        CacheAttention(cache, cache.token_index(cache.current_slot, subset), False),
    )
    torch.testing.assert_close(part, full[:, subset], atol=1e-10, rtol=1e-10)


def test_wan_parameter_names_and_shapes():
    """The wan2.1-1.3b preset has the checkpoint's key names and shapes (meta device: no memory)."""
    from engine.config import CONFIGS
    from engine.dit import CausalDiT

    with torch.device("meta"):
        model = CausalDiT(CONFIGS["wan2.1-1.3b"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expect = {
        "patch_embedding.weight": (1536, 16, 1, 2, 2),
        "text_embedding.0.weight": (1536, 4096),
        "text_embedding.2.weight": (1536, 1536),
        "time_embedding.0.weight": (1536, 256),
        "time_projection.1.weight": (9216, 1536),
        "blocks.0.modulation": (1, 6, 1536),
        "blocks.0.self_attn.q.weight": (1536, 1536),
        "blocks.0.self_attn.norm_q.weight": (1536,),
        "blocks.0.norm3.weight": (1536,),
        "blocks.0.cross_attn.norm_k.weight": (1536,),
        "blocks.0.ffn.0.weight": (8960, 1536),
        "blocks.29.ffn.2.weight": (1536, 8960),
        "head.modulation": (1, 2, 1536),
        "head.head.weight": (64, 1536),
    }
    for k, shape in expect.items():
        assert shapes[k] == shape, k
    assert "blocks.0.norm1.weight" not in shapes and "blocks.30.modulation" not in shapes
    n_params = sum(v.numel() for v in model.state_dict().values())
    assert abs(n_params - 1.419e9) < 0.01e9
