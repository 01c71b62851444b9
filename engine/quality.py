"""Quality of a generated sequence: PSNR against a reference, drift, temporal warp error, fidelity.

One definition of each figure, shared by `app.py bench`, benchmarks/lipar_quality.py and
benchmarks/lipar_sweep.py. Frames are uint8 (H, W, 3), index-aligned sequences of one size.

- A sequence's PSNR comes from its total MSE over all frames, never from a mean of per-frame PSNRs:
  one identical frame makes a per-frame PSNR infinite and the mean with it.
- PSNR is capped at `PSNR_CAP` dB, the figure identical frames (MSE 0) get, so JSON stays finite and
  an identical run reads as "at the cap" rather than as infinity.
- Drift against the source (video-to-video): the same first-vs-last figure of each run's PSNR against its
  source. PSNR against the unpruned run cannot tell which of the two moved: on bench's own clip the unpruned
  run's background left the source for ~8 frames (its MSE there went from ~225 to ~300) while LIPAR's,
  restored from the frames before, stayed (~100), and that read as a 17 dB "drift" of LIPAR (session 18).
- Warp error (temporal consistency, as benchmarks/lipar_quality.py has measured it since session 8):
  Farneback optical flow between consecutive *source* frames warps output t-1 onto t; per frame pair,
  the mean absolute difference (0-255, channel mean) over pixels where the flow also explains the
  source (warped source within `WARP_VALID` of the source: not occluded); the figure is the mean over
  frame pairs. Lower is more consistent. It needs the source's motion, so it is a video-to-video figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PSNR_CAP = 100.0  # dB for identical frames; one level off in one pixel of a 128x128 RGB frame is 95.0 dB
WARP_VALID = 20.0  # 0-255: a pixel whose warped source is off by more than this is treated as occluded
DRIFT_FRAMES = 8  # the drift figure compares the first and the last this many frames

Frames = Sequence[np.ndarray]


def _stack(frames: Frames, what: str) -> np.ndarray:
    if len(frames) == 0:
        raise ValueError(f"{what} has no frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{what} mixes frame shapes {sorted(shapes)}")
    return np.stack(frames).astype(np.float64)


def _pair(a: Frames, b: Frames) -> tuple[np.ndarray, np.ndarray]:
    x, y = _stack(a, "the output"), _stack(b, "the reference")
    if x.shape != y.shape:
        raise ValueError(f"cannot compare {len(a)} frames of {x.shape[1:]} with {len(b)} frames of {y.shape[1:]}")
    return x, y


def psnr_from_mse(mse: float) -> float:
    """8-bit PSNR in dB, `PSNR_CAP` when the MSE is 0 (or so small that the cap is lower)."""
    if mse <= 0:
        return PSNR_CAP
    return float(min(10.0 * np.log10(255.0**2 / mse), PSNR_CAP))


def sequence_psnr(a: Frames, b: Frames) -> float:
    """PSNR of sequence a against b from the MSE over all their frames together."""
    x, y = _pair(a, b)
    return psnr_from_mse(float(np.mean((x - y) ** 2)))


def frame_psnr(a: Frames, b: Frames) -> list[float]:
    """PSNR of each frame (capped): the curve on which drift shows as a slope."""
    x, y = _pair(a, b)
    return [psnr_from_mse(float(m)) for m in np.mean((x - y) ** 2, axis=(1, 2, 3))]


def drift(a: Frames, b: Frames, frames: int = DRIFT_FRAMES) -> dict[str, float]:
    """How the PSNR of a against b changes over the sequence: the sequence PSNR of the first and of the
    last `frames` frames (halves when the sequence is shorter than twice that), their difference
    (negative: quality falls), and the least-squares slope of the per-frame PSNR curve in dB/frame."""
    if len(a) < 2:
        raise ValueError(f"drift needs at least 2 frames, got {len(a)}")
    n = min(frames, len(a) // 2)
    first, last = sequence_psnr(a[:n], b[:n]), sequence_psnr(a[-n:], b[-n:])
    curve = frame_psnr(a, b)
    flat = min(curve) == max(curve)  # identical runs: exactly 0 rather than a fit's rounding noise
    slope = 0.0 if flat else float(np.polyfit(np.arange(len(curve)), curve, 1)[0])
    return {"frames": n, "first_db": first, "last_db": last, "change_db": last - first, "slope_db_per_frame": slope}


def fit_frames(frames: Frames, height: int, width: int) -> list[np.ndarray]:
    """Frames resized to (height, width) as the generator resizes its source (area filter)."""
    import cv2

    size = (width, height)
    return [f if f.shape[:2] == (height, width) else cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


def warp_error(out: Frames, source: Frames) -> float:
    """Temporal warp error of `out` along the optical flow of `source` (module docstring)."""
    import cv2

    _pair(out, source)
    if len(out) < 2:
        raise ValueError(f"warp error needs at least 2 frames, got {len(out)}")
    h, w = source[0].shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    errors = []
    for t in range(1, len(out)):
        g0 = cv2.cvtColor(source[t - 1], cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(source[t], cv2.COLOR_RGB2GRAY)
        flow = cv2.calcOpticalFlowFarneback(g1, g0, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # t -> t-1
        mx, my = grid[..., 0] + flow[..., 0], grid[..., 1] + flow[..., 1]
        warp_src = cv2.remap(source[t - 1], mx, my, cv2.INTER_LINEAR)
        valid = np.abs(warp_src.astype(np.float32) - source[t].astype(np.float32)).mean(-1) < WARP_VALID
        warp_out = cv2.remap(out[t - 1], mx, my, cv2.INTER_LINEAR)
        diff = np.abs(warp_out.astype(np.float32) - out[t].astype(np.float32)).mean(-1)
        if valid.any():
            errors.append(float(diff[valid].mean()))
    if not errors:
        raise ValueError("warp error: the source's flow explains no pixel of any frame pair")
    return float(np.mean(errors))


def sequence_metrics(out: Frames, reference: Frames, source: Frames | None) -> dict:
    """Every figure of one run against a reference run (the unpruned baseline) and, for
    video-to-video, against its source: the fields bench.json and the sweep record per run."""
    metrics = {
        "psnr_vs_baseline": sequence_psnr(out, reference),
        "psnr_vs_baseline_frames": frame_psnr(out, reference),
        "drift": drift(out, reference),
        "warp_error": None,
        "psnr_vs_source": None,
        "psnr_vs_source_frames": None,
        "drift_vs_source": None,
    }
    if source is not None:
        src = fit_frames(source, *out[0].shape[:2])
        metrics["warp_error"] = warp_error(out, src)
        metrics["psnr_vs_source"] = sequence_psnr(out, src)
        metrics["psnr_vs_source_frames"] = frame_psnr(out, src)
        metrics["drift_vs_source"] = drift(out, src)
    return metrics
