import dataclasses
import math

import numpy as np
import pytest
import torch

from lipar.config import LiparConfig
from lipar.mask import StreamingMask, compute_mask, frame_shift, median3x3, token_distance

C, GH, GW = 4, 12, 12
# the source test alone (no warm-up beyond the first frame, no age bound): the drift rules have their own tests
CFG = LiparConfig(tau_short=0.15, tau_long=0.3, warmup_frames=1, max_age=0)


def static_background(seed: int = 0) -> torch.Tensor:
    return torch.randn(C, 2 * GH, 2 * GW, generator=torch.Generator().manual_seed(seed))


def with_square(background: torch.Tensor, texture: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """Paste a textured square whose top-left token is (row, col)."""
    out = background.clone()
    size = texture.shape[-1]
    out[:, 2 * row : 2 * row + size, 2 * col : 2 * col + size] = texture
    return out


def run(mask: StreamingMask, frames):
    return [mask.update(f) for f in frames]


def test_token_distance_is_the_trimmed_mean_of_each_tokens_values():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    got = token_distance(a, b, trim=0.2)
    diff = (a - b).abs().numpy()
    for r in range(2):
        for c in range(3):
            values = np.sort(diff[:, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].ravel())  # 12 values
            cut = int(0.2 * 12)
            assert got[r, c].item() == pytest.approx(values[cut : 12 - cut].mean(), rel=1e-6)
    assert torch.allclose(token_distance(a, b, trim=0.0), torch.from_numpy(diff).view(3, 2, 2, 3, 2).mean((0, 2, 4)))


def test_median3x3_matches_a_replicate_padded_median():
    d = torch.rand(5, 7, generator=torch.Generator().manual_seed(2))
    padded = np.pad(d.numpy(), 1, mode="edge")
    expected = np.array([[np.median(padded[r : r + 3, c : c + 3]) for c in range(7)] for r in range(5)])
    assert np.allclose(median3x3(d).numpy(), expected)


def test_first_frame_and_frame_after_reset_keep_everything():
    mask = StreamingMask(CFG, (GH, GW))
    bg = static_background()
    first, second = run(mask, [bg, bg])
    assert first.reason == "first" and first.kept_ratio == 1.0 and bool(first.keep.all())
    assert second.kept_ratio == 0.0
    mask.reset()
    after = mask.update(bg)
    assert after.reason == "first" and after.kept_ratio == 1.0


def test_static_clip_is_pruned_entirely_after_the_first_frame():
    bg = static_background()
    g = torch.Generator().manual_seed(3)
    frames = [bg + 0.01 * torch.randn(bg.shape, generator=g) for _ in range(6)]  # sensor-like noise
    results = run(StreamingMask(CFG, (GH, GW)), frames)
    for r in results[1:]:
        assert r.reason == "pruned" and r.kept_ratio == 0.0
        assert r.keep_idx.numel() == 0 and r.pruned_idx.tolist() == list(range(GH * GW))


def _moving_square(config: LiparConfig):
    bg = static_background()
    texture = torch.randn(C, 8, 8, generator=torch.Generator().manual_seed(4))  # 4x4 tokens
    frames = [with_square(bg, texture, 3, 2), with_square(bg, texture, 3, 2), with_square(bg, texture, 3, 4)]
    return run(StreamingMask(config, (GH, GW)), frames)[-1]


def test_moving_square_keeps_its_region_and_no_margin_by_default():
    result = _moving_square(CFG)
    assert CFG.dilation == 0 and result.reason == "pruned"
    changed = torch.zeros(GH, GW, dtype=torch.bool)
    changed[3:7, 2:8] = True  # old and new square positions
    # exactly the changed tokens, but the four corners the 3x3 median rounds off
    corners = torch.zeros(GH, GW, dtype=torch.bool)
    corners[[3, 3, 6, 6], [2, 7, 2, 7]] = True
    assert bool(result.keep[changed & ~corners].all()) and not bool(result.keep[~changed].any())


def test_moving_square_keeps_its_region_plus_a_one_token_margin():
    result = _moving_square(dataclasses.replace(CFG, dilation=1))
    assert result.reason == "pruned"
    changed = torch.zeros(GH, GW, dtype=torch.bool)
    changed[3:7, 2:8] = True  # old and new square positions
    margin = torch.zeros(GH, GW, dtype=torch.bool)
    margin[2:8, 1:9] = True
    keep = result.keep
    assert bool(keep[changed].all()), "every changed token is recomputed"
    assert not bool(keep[~margin].any()), "nothing beyond a one-token margin is recomputed"
    # the margin along the sides is kept (the 3x3 median rounds only the four outer corners)
    assert bool(keep[2, 2:8].all() and keep[7, 2:8].all() and keep[3:7, 1].all() and keep[3:7, 8].all())
    assert result.kept_ratio == keep.sum().item() / (GH * GW)


def test_scene_cut_keeps_everything_and_resets_the_references():
    a, b = static_background(0), static_background(1)
    results = run(StreamingMask(CFG, (GH, GW)), [a, a, b, b])
    assert results[2].reason == "scene_cut" and results[2].kept_ratio == 1.0
    assert results[3].kept_ratio == 0.0, "after the cut the new frame is the reference"


def test_scene_cut_threshold_of_one_never_cuts():
    a, b = static_background(0), static_background(1)
    results = run(
        StreamingMask(dataclasses.replace(CFG, tau_short=0.15, tau_long=0.3, scene_cut=1.0), (GH, GW)), [a, a, b]
    )
    assert results[2].reason == "pruned" and results[2].kept_ratio == 1.0


def test_a_shift_of_the_whole_frame_is_not_local_change():
    # the tiny VAE's GroupNorm moves every latent when content anywhere changes: a per-channel offset
    # over the whole frame, larger than tau_short but smaller than a scene cut's change
    bg = static_background()
    square = torch.randn(C, 8, 8, generator=torch.Generator().manual_seed(5))
    shift = torch.tensor([0.4, -0.3, 0.5, 0.35]).view(C, 1, 1)
    frames = [with_square(bg, square, 2, 2), with_square(bg + shift, square + 3.0, 2, 2)]
    moved = torch.zeros(GH, GW, dtype=torch.bool)
    moved[3:5, 3:5] = True  # the inside of the 4x4-token square (the 3x3 median rounds its corners)
    removed = run(StreamingMask(CFG, (GH, GW)), frames)[1]
    assert removed.reason == "pruned"
    assert bool(removed.keep[moved].all()), "the square that changed is recomputed"
    assert removed.kept_ratio < 0.2, "the rest of the frame only shifted: it is pruned"
    kept_all = run(StreamingMask(dataclasses.replace(CFG, remove_global_shift=False), (GH, GW)), frames)[1]
    assert kept_all.kept_ratio == 1.0 and kept_all.reason == "pruned", "without the removal every token changed"


def test_frame_shift_is_the_per_channel_median_and_token_distance_removes_it():
    a, b = torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    shift = frame_shift(a, b)
    assert torch.equal(shift, (a - b).flatten(1).median(dim=1).values)
    offset = torch.tensor([1.0, -2.0, 0.5])
    moved = b + offset.view(3, 1, 1)
    assert torch.allclose(token_distance(moved, b, 0.2, frame_shift(moved, b)), torch.zeros(3, 4), atol=1e-6)


def test_a_large_shift_of_the_whole_frame_is_a_scene_cut():
    # lights switched on: no token changed more than its neighbours, but the whole frame moved by more
    # than the scene-cut scale
    bg = static_background()
    results = run(StreamingMask(CFG, (GH, GW)), [bg, bg + 0.8, bg + 0.8])
    assert results[1].reason == "scene_cut" and results[1].kept_ratio == 1.0
    assert results[2].kept_ratio == 0.0


def test_a_change_everywhere_below_the_scene_cut_scale_is_not_a_cut():
    # an exposure step or a codec keyframe: every token changes by more than tau_short, but far less
    # than a new scene; those tokens are recomputed this frame, without a cut's whole warm-up
    bg = static_background()
    noise = torch.randn(bg.shape, generator=torch.Generator().manual_seed(9))
    results = run(StreamingMask(CFG, (GH, GW)), [bg, bg + 0.3 * noise, bg + 0.3 * noise])
    assert results[1].reason == "pruned" and results[1].kept_ratio == 1.0
    assert results[2].kept_ratio == 0.0
    cut = run(StreamingMask(dataclasses.replace(CFG, scene_cut_scale=1.0), (GH, GW)), [bg, bg + 0.3 * noise])
    assert cut[1].reason == "scene_cut", "at scale 1 the same change is a cut"


def drifting(steps: int, rate: float = 0.05):
    bg = static_background()
    for t in range(steps):
        frame = bg.clone()
        frame[:, 4:12, 4:12] += rate * t  # 4x4 tokens creep below tau_short every frame
        yield frame


def test_slow_drift_is_eventually_kept_thanks_to_d_long():
    results = run(StreamingMask(CFG, (GH, GW)), drifting(16))
    region = torch.zeros(GH, GW, dtype=torch.bool)
    region[2:6, 2:6] = True
    kept_frames = [t for t, r in enumerate(results[1:], start=1) if bool(r.keep[region].any())]
    assert kept_frames, "drift accumulating past tau_long must be recomputed"
    first = kept_frames[0]
    assert first >= 6, "the drift is below tau_short, so it is pruned at first"
    # all but the corners, which the 3x3 median rounds off (no margin by default; the age bound refreshes them)
    corners = torch.zeros(GH, GW, dtype=torch.bool)
    corners[[2, 2, 5, 5], [2, 5, 2, 5]] = True
    assert bool(results[first].keep[region & ~corners].all()) and not bool(results[first].keep[corners].any())
    # the reference moved: the next frames are pruned again until the drift accumulates anew
    assert not bool(results[first + 2].keep.any())

    never = run(StreamingMask(dataclasses.replace(CFG, tau_short=0.15, tau_long=math.inf), (GH, GW)), drifting(16))
    assert all(r.kept_ratio == 0.0 for r in never[1:]), "without d_long the drift is pruned forever"


def test_min_keep_floor_adds_the_tokens_closest_to_being_kept():
    bg = static_background()
    moved = bg.clone()
    moved[:, 8:16, 8:16] += 0.1  # 4x4 tokens change, below tau_short: pruned without a floor
    region = torch.zeros(GH, GW, dtype=torch.bool)
    region[4:8, 4:8] = True
    floor = dataclasses.replace(CFG, tau_short=0.15, tau_long=0.3, min_keep=0.05)
    result = run(StreamingMask(floor, (GH, GW)), [bg, moved])[-1]
    assert result.keep_idx.numel() == math.ceil(0.05 * GH * GW)
    assert bool(region[result.keep].all())
    assert run(StreamingMask(CFG, (GH, GW)), [bg, moved])[-1].kept_ratio == 0.0
    full = run(StreamingMask(dataclasses.replace(CFG, tau_short=0.15, tau_long=0.3, min_keep=1.0), (GH, GW)), [bg, bg])[
        -1
    ]
    assert full.kept_ratio == 1.0


def test_tau_zero_keeps_everything():
    bg = static_background()
    results = run(StreamingMask(dataclasses.replace(CFG, tau_short=0.0, tau_long=0.0), (GH, GW)), [bg, bg, bg])
    assert all(r.kept_ratio == 1.0 for r in results)


def test_disabled_keeps_everything_without_thresholds():
    mask = StreamingMask(LiparConfig(enabled=False), (GH, GW))
    bg = static_background()
    results = run(mask, [bg, bg])
    assert all(r.reason == "disabled" and r.kept_ratio == 1.0 for r in results)


def test_temporal_smoothing_damps_a_one_frame_flicker():
    bg = static_background()
    flicker = bg.clone()
    flicker[:, 4:12, 4:12] += 0.2  # between tau_short and tau_short / (1 - temporal)
    frames = [bg, bg, flicker]
    smoothed = run(StreamingMask(CFG, (GH, GW)), frames)[-1]
    raw = run(StreamingMask(dataclasses.replace(CFG, tau_short=0.15, tau_long=0.3, temporal=0.0), (GH, GW)), frames)[-1]
    assert smoothed.kept_ratio == 0.0
    assert raw.kept_ratio > 0.0


def test_mask_is_causal():
    g = torch.Generator().manual_seed(5)
    bg = static_background()
    frames = [bg + 0.3 * (torch.rand(bg.shape, generator=g) > 0.9) for _ in range(5)]
    other_future = [*frames[:3], static_background(7), static_background(8)]
    a = run(StreamingMask(CFG, (GH, GW)), frames)
    b = run(StreamingMask(CFG, (GH, GW)), other_future)
    for t in range(3):
        assert torch.equal(a[t].keep, b[t].keep)
    assert not torch.equal(a[3].keep, b[3].keep)


def test_indices_partition_the_grid_in_row_major_order():
    bg = static_background()
    texture = torch.randn(C, 8, 8, generator=torch.Generator().manual_seed(6))
    r = run(StreamingMask(CFG, (GH, GW)), [bg, with_square(bg, texture, 5, 5)])[-1]
    flat = r.keep.flatten()
    assert r.keep_idx.dtype == r.pruned_idx.dtype == torch.int64
    assert torch.equal(r.keep_idx, flat.nonzero().flatten())
    assert torch.equal(r.pruned_idx, (~flat).nonzero().flatten())
    assert 0 < r.keep_idx.numel() < GH * GW


def test_compute_mask_close_removes_holes_and_open_removes_specks():
    cfg = LiparConfig(tau_short=0.5, tau_long=0.5, dilation=0)
    d = torch.zeros(10, 10)
    d[2:7, 2:7] = 1.0
    d[4, 4] = 0.0  # hole in a moving region
    d[9, 0] = 1.0  # isolated speck
    keep = compute_mask(d, d, cfg)
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[2:7, 2:7] = True
    expected[[2, 2, 6, 6], [2, 6, 2, 6]] = False  # the cross-shaped opening rounds the corners
    assert torch.equal(keep, expected)
    wide = compute_mask(d, d, LiparConfig(tau_short=0.5, tau_long=0.5, dilation=2))
    assert bool(wide[1:8, 1:8].all()) and not bool(wide[9].any()) and not bool(wide[:, 9].any())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="resolved"):
        StreamingMask(LiparConfig(), (GH, GW))
    with pytest.raises(ValueError, match="resolved"):
        compute_mask(torch.zeros(2, 2), torch.zeros(2, 2), LiparConfig())
    with pytest.raises(ValueError, match="grid"):
        StreamingMask(CFG, (0, 4))
    mask = StreamingMask(CFG, (GH, GW))
    with pytest.raises(ValueError, match="token grid"):
        mask.update(torch.zeros(C, 2 * GH, 2 * GW + 2))
    with pytest.raises(ValueError, match="floating"):
        mask.update(torch.zeros(C, 2 * GH, 2 * GW, dtype=torch.uint8))
    with pytest.raises(ValueError, match="floating"):
        mask.update(torch.zeros(1, C, 2 * GH, 2 * GW))
    mask.update(torch.zeros(C, 2 * GH, 2 * GW))
    with pytest.raises(ValueError, match="reset"):
        mask.update(torch.zeros(C + 1, 2 * GH, 2 * GW))
