"""Sequence quality figures on arrays whose answer is known."""

import math

import numpy as np
import pytest

from engine.quality import (
    PSNR_CAP,
    drift,
    fit_frames,
    frame_psnr,
    sequence_metrics,
    sequence_psnr,
    warp_error,
)


def _const(value: int, count: int = 1, size: int = 16) -> list[np.ndarray]:
    return [np.full((size, size, 3), value, np.uint8) for _ in range(count)]


def test_sequence_psnr_comes_from_the_total_mse_so_an_identical_frame_stays_finite():
    ref = _const(100, 2)
    out = [ref[0].copy(), ref[1] + 10]  # frame 0 identical, frame 1 off by 10 everywhere
    expected = 10 * math.log10(255.0**2 / 50.0)  # MSE (0 + 100) / 2
    assert sequence_psnr(out, ref) == pytest.approx(expected)
    assert frame_psnr(out, ref) == pytest.approx([PSNR_CAP, 10 * math.log10(255.0**2 / 100.0)])
    assert sequence_psnr(ref, ref) == PSNR_CAP  # identical: the cap, not infinity


def test_sequence_psnr_refuses_sequences_that_do_not_line_up():
    with pytest.raises(ValueError, match="cannot compare 2 frames"):
        sequence_psnr(_const(0, 2), _const(0, 3))
    with pytest.raises(ValueError, match="no frames"):
        sequence_psnr([], [])


def test_drift_compares_the_first_and_last_frames_and_fits_a_slope():
    ref = _const(100, 20)
    out = [f + min(i, 9) for i, f in enumerate(ref)]  # error grows over the first frames, then holds
    d = drift(out, ref, frames=8)
    assert d["frames"] == 8
    assert d["first_db"] > d["last_db"] and d["change_db"] == pytest.approx(d["last_db"] - d["first_db"])
    assert d["slope_db_per_frame"] < 0
    steady = drift(ref, ref)
    assert steady["change_db"] == 0 and steady["slope_db_per_frame"] == 0
    assert drift(out[:6], ref[:6])["frames"] == 3  # short sequences compare halves


def _texture(size: int = 64, seed: int = 0) -> np.ndarray:
    import cv2

    coarse = np.random.default_rng(seed).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def test_warp_error_of_a_shifting_scene_is_near_zero_for_a_consistent_output_and_large_for_flicker():
    base = _texture()
    source = [np.roll(base, 2 * t, axis=1) for t in range(5)]  # a pure shift, 2 px a frame
    consistent = [255 - f for f in source]  # any per-pixel function of the source moves with it
    flicker = [np.random.default_rng(t).integers(0, 256, base.shape, dtype=np.uint8) for t in range(5)]
    assert warp_error(consistent, source) < 1.0
    assert warp_error(flicker, source) > 40.0
    assert warp_error([base] * 5, source) > 5.0  # an output frozen while its source moves is not consistent


def test_sequence_metrics_fits_the_source_to_the_output_and_fills_every_field():
    out = [_texture(32, seed=1)] * 3
    source = [np.kron(f, np.ones((2, 2, 1), np.uint8)) for f in out]  # twice the size
    m = sequence_metrics(out, out, source)
    assert m["psnr_vs_baseline"] == PSNR_CAP and m["psnr_vs_baseline_frames"] == [PSNR_CAP] * 3
    assert m["warp_error"] < 0.5  # a still output of a still source (Farneback leaves sub-pixel flow)
    assert m["psnr_vs_source"] > 30  # the area-downsized source is the output again, up to rounding
    assert sequence_metrics(out, out, None)["warp_error"] is None  # text-to-video: no source motion
    assert fit_frames(source, 32, 32)[0].shape == (32, 32, 3)


def test_drift_against_the_source_tells_which_run_left_it():
    """Two runs that part: against each other both "drift"; against the source only the one that moved does."""
    source = [_texture(32, seed=t) for t in range(8)]
    stays = [f.copy() for f in source]
    leaves = [f if t < 4 else (255 - f) for t, f in enumerate(source)]  # the last four frames leave the source
    m_stays, m_leaves = sequence_metrics(stays, leaves, source), sequence_metrics(leaves, leaves, source)
    assert m_stays["drift"]["change_db"] < -20  # against the other run the steady one looks like it drifted
    assert m_stays["drift_vs_source"]["change_db"] == 0 and m_stays["psnr_vs_source_frames"] == [PSNR_CAP] * 8
    assert m_leaves["drift_vs_source"]["change_db"] < -20 and len(m_leaves["psnr_vs_source_frames"]) == 8
    assert sequence_metrics(stays, stays, None)["drift_vs_source"] is None
