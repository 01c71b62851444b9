"""The drift rules of the keep mask (DESIGN.md 4.6a): warm-up, settled output, bounded age."""

import dataclasses

import pytest
import torch

from lipar.config import LiparConfig
from lipar.mask import StreamingMask, refresh_phase

C, GH, GW = 4, 8, 8
SOURCE_ONLY = LiparConfig(tau_short=0.15, tau_long=0.3, warmup_frames=1, max_age=0)


def still(seed: int = 0) -> torch.Tensor:
    return torch.randn(C, 2 * GH, 2 * GW, generator=torch.Generator().manual_seed(seed))


def step(mask: StreamingMask, source: torch.Tensor, output: torch.Tensor | None = None):
    result = mask.update(source)
    mask.observe_output(source if output is None else output, result.keep)
    return result


@pytest.mark.parametrize("warmup", [1, 2, 3, 5])
def test_warmup_frames_are_kept_whole_after_a_reset(warmup):
    mask = StreamingMask(dataclasses.replace(SOURCE_ONLY, warmup_frames=warmup), (GH, GW))
    bg = still()
    for _ in range(2):  # and again after reset()
        results = [step(mask, bg) for _ in range(warmup + 2)]
        assert [r.kept_ratio for r in results] == [1.0] * warmup + [0.0, 0.0]
        assert [r.reason for r in results[:warmup]] == ["first"] + ["warmup"] * (warmup - 1)
        mask.reset()


def test_warmup_frames_are_kept_whole_after_a_scene_cut():
    mask = StreamingMask(dataclasses.replace(SOURCE_ONLY, warmup_frames=3), (GH, GW))
    a, b = still(0), still(1)
    results = [step(mask, f) for f in [a, a, a, a, b, b, b, b, b]]
    assert [r.kept_ratio for r in results] == [1, 1, 1, 0, 1, 1, 1, 0, 0]
    assert results[4].reason == "scene_cut" and results[5].reason == "warmup"


def test_hold_keeps_the_next_frames_whole_without_forgetting_the_stream():
    mask = StreamingMask(SOURCE_ONLY, (GH, GW))
    bg = still()
    assert [step(mask, bg).kept_ratio for _ in range(2)] == [1.0, 0.0]
    mask.hold(3)  # what the generator does on a prompt change
    assert [step(mask, bg).kept_ratio for _ in range(4)] == [1.0, 1.0, 1.0, 0.0]


def test_a_token_whose_output_still_changes_is_recomputed_though_its_source_is_still():
    """The source never changes; the output at one token keeps moving for a while (the model is still
    drawing there). The settled-output rule must recompute that token (and its margin) until it stops."""
    cfg = dataclasses.replace(SOURCE_ONLY, tau_output=0.05, output_margin=1)
    mask = StreamingMask(cfg, (GH, GW))
    bg = still()
    kept_at = []
    for t in range(9):
        out = bg.clone()
        if t < 5:  # token (3, 4) keeps changing its output for 5 frames, then settles
            out[:, 6:8, 8:10] += 0.5 * (t + 1)
        result = step(mask, bg, out)
        kept_at.append(bool(result.keep[3, 4]))
        if t >= 2:
            assert bool(result.keep[2:5, 3:6].all()) == kept_at[-1]  # its 3x3 margin goes with it
    # frame 0 whole; 1 kept (its output was never measured); 2-6 kept (it moved, the last time back to
    # the background); pruned once one computed frame showed no change
    assert kept_at == [True] * 7 + [False, False]
    without_rule = StreamingMask(SOURCE_ONLY, (GH, GW))
    step(without_rule, bg)
    assert not any(bool(step(without_rule, bg, bg + t).keep[3, 4]) for t in range(1, 8))


def test_settled_rule_is_off_without_a_threshold():
    mask = StreamingMask(SOURCE_ONLY, (GH, GW))  # tau_output None
    bg = still()
    step(mask, bg)
    assert step(mask, bg, bg + 10.0).kept_ratio == 0.0


@pytest.mark.parametrize("period", [2, 3, 4, 8])
def test_bounded_age_refreshes_every_token_once_per_period_with_a_flat_cost(period):
    mask = StreamingMask(dataclasses.replace(SOURCE_ONLY, max_age=period), (GH, GW))
    bg = still()
    step(mask, bg)
    keeps = torch.stack([step(mask, bg).keep for _ in range(3 * period)])
    counts = keeps.flatten(1).sum(1)
    assert counts.max() - counts.min() <= 1  # flat: the same share of the grid every frame
    assert abs(counts.float().mean() - GH * GW / period) <= 1
    for start in range(2 * period):  # every window of `period` frames refreshes every token exactly once
        assert bool((keeps[start : start + period].sum(0) == 1).all())


def test_refresh_phase_spreads_each_frames_share_over_the_grid():
    phase = refresh_phase((8, 8), 4)
    for f in range(4):
        rows, cols = (phase == f).nonzero(as_tuple=True)
        assert rows.unique().numel() == 8 and cols.unique().numel() == 8  # no band: every row and column


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("warmup_frames", -1),
        ("warmup_frames", 1.5),
        ("max_age", 1),
        ("max_age", -2),
        ("output_margin", -1),
        ("tau_output", 0.0),
        ("tau_output", "0.1"),
    ],
)
def test_bad_drift_settings_raise_clear_errors(field, value):
    with pytest.raises(ValueError, match=field):
        LiparConfig(**{field: value})


@pytest.mark.parametrize(("old", "new"), [("m-degree", "noisy-copy"), ("none", "exclude")])
def test_old_recovery_mode_names_are_refused_with_the_new_name(old, new):
    with pytest.raises(ValueError, match=f"renamed '{new}'"):
        LiparConfig(recovery=old)


@pytest.mark.parametrize("tau_output", [None, float("inf")])
def test_with_the_settled_output_rule_off_outputs_are_not_measured(tau_output):
    """Nothing reads the measurement then, and it costs a sort and ~20 kernels per frame at 480x832."""
    mask = StreamingMask(dataclasses.replace(SOURCE_ONLY, tau_output=tau_output), (GH, GW))
    bg = still()
    for t in range(4):
        assert step(mask, bg, output=still(t + 1)).kept_ratio == (1.0 if t == 0 else 0.0)
    assert mask._last_output is None


def test_with_the_settled_output_rule_on_outputs_are_measured():
    mask = StreamingMask(dataclasses.replace(SOURCE_ONLY, tau_output=0.05), (GH, GW))
    step(mask, still())
    assert mask._last_output is not None
