"""Global camera motion for LIPAR (DESIGN.md §4.6b): estimate it between consecutive source frames, and
warp latents, the mask's state and a frame's K/V by it.

A camera that pans, tilts or zooms moves every token of a static scene, so plain LIPAR keeps them all.
With the motion known, the previous frame's latent and K/V can be moved to where their content is now:
a token whose content only moved with the camera is then prunable, and a pruned token takes the
previous clean latent and the pre-RoPE K/V from where its content was (K is rotated at its *new*
position afterwards, by `lipar.recovery.recover_kv`, as for any pruned token). Tokens whose content
entered the frame at its border were not in the previous frame: `entering` marks them, always computed.

Coordinates: a motion is the 2x3 affine map `theta` from the *current* frame's normalised coordinates to
the previous frame's (x right, y down, [-1, 1] over the frame, pixel centres as in
`F.affine_grid(..., align_corners=False)`). Normalised coordinates do not depend on the resolution, so
one motion warps source pixels, latents (8x smaller) and tokens (16x smaller) alike.

The estimator runs on the source pixels, on their device: phase correlation (torch FFT) of overlapping
tiles of a small grey copy, then a robust fit of a translation or a similarity (pan, tilt, zoom, roll)
to the tiles' shifts; the peak heights and the share of tiles that agree give the confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lipar.config import LiparConfig

MotionModel = Literal["translation", "similarity"]
MOTION_MODELS: tuple[str, ...] = get_args(MotionModel)
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


@dataclass(frozen=True)
class GlobalMotion:
    """The camera's motion from the previous frame to this one (see the module docstring for `theta`)."""

    theta: tuple[tuple[float, float, float], tuple[float, float, float]] = IDENTITY
    confidence: float = 1.0  # in [0, 1]: phase-correlation peak height (1 = one clean peak)

    def __post_init__(self) -> None:
        if len(self.theta) != 2 or any(len(row) != 3 for row in self.theta):
            raise ValueError(f"GlobalMotion.theta must be 2x3, got {self.theta!r}")
        if not all(math.isfinite(v) for row in self.theta for v in row):
            raise ValueError(f"GlobalMotion.theta must be finite, got {self.theta!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"GlobalMotion.confidence must lie in [0, 1], got {self.confidence}")

    @classmethod
    def translation(cls, dx: float, dy: float, confidence: float = 1.0) -> GlobalMotion:
        """Content moved right by dx and down by dy, in frame fractions (1.0 = the frame's width/height)."""
        return cls(((1.0, 0.0, -2.0 * dx), (0.0, 1.0, -2.0 * dy)), confidence)

    @classmethod
    def zoom(cls, scale: float, dx: float = 0.0, dy: float = 0.0, confidence: float = 1.0) -> GlobalMotion:
        """Content scaled by `scale` about the frame centre (> 1: zoom in), then moved by (dx, dy)."""
        if scale <= 0:
            raise ValueError(f"zoom scale must be > 0, got {scale}")
        s = 1.0 / scale
        return cls(((s, 0.0, -2.0 * dx * s), (0.0, s, -2.0 * dy * s)), confidence)

    @property
    def is_still(self) -> bool:
        """Exactly the identity: every warp returns its input unchanged (plain LIPAR, bit for bit)."""
        return self.theta == IDENTITY

    @property
    def shift(self) -> tuple[float, float]:
        """Displacement of the frame centre's content, frame fractions (x right, y down)."""
        (a, b, c), (d, e, f) = self.theta
        det = a * e - b * d
        # the current point u with theta(u) = 0 is where the previous centre went: u = -A^-1 t
        return (-(e * c - b * f) / det / 2.0, -(-d * c + a * f) / det / 2.0)

    @property
    def scale(self) -> float:
        """Zoom factor of the content (> 1: zoom in), the inverse square root of theta's determinant."""
        (a, b, _), (d, e, _) = self.theta
        return 1.0 / math.sqrt(abs(a * e - b * d))

    def displacement(self, size: tuple[int, int]) -> float:
        """Largest displacement of any point of a (h, w) grid, in that grid's cells (pixels, tokens)."""
        h, w = size
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
        theta = torch.tensor(self.theta, dtype=torch.float64)
        moved = corners @ theta[:, :2].T + theta[:, 2]
        return float(((moved - corners) * torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)).abs().max())


def _grey(frame: Tensor, max_side: int) -> Tensor:
    """uint8 (H, W, 3) on any device -> float32 (h, w) grey, area-downscaled to at most max_side."""
    if not isinstance(frame, Tensor) or frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != 3:
        raise ValueError("a source frame must be a uint8 tensor of shape (H, W, 3)")
    rgb = frame.permute(2, 0, 1).float()
    grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None, None]
    h, w = frame.shape[:2]
    factor = max(h, w) / max_side
    if factor > 1:
        grey = F.interpolate(grey, size=(max(8, round(h / factor)), max(8, round(w / factor))), mode="area")
    return grey[0, 0]


def _pixels_to_theta(warp: np.ndarray, size: tuple[int, int]) -> tuple:
    """A 2x3 map from current to previous pixel indices (pixel centres at integers) -> theta."""
    h, w = size
    # normalised u -> index i = (u + 1) * w / 2 - 0.5
    to_px = np.array([[w / 2.0, 0.0, w / 2.0 - 0.5], [0.0, h / 2.0, h / 2.0 - 0.5], [0.0, 0.0, 1.0]])
    full = np.vstack([warp, [0.0, 0.0, 1.0]])
    theta = np.linalg.inv(to_px) @ full @ to_px
    return tuple(tuple(float(v) for v in row) for row in theta[:2])


def _tiles(size: tuple[int, int], per_side: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Tile size and top-left corners: a per_side x per_side grid of tiles 2/(per_side + 1) of the frame
    on a side, each overlapping its neighbours by half."""
    h, w = size
    th, tw = 2 * h // (per_side + 1), 2 * w // (per_side + 1)
    ys = [round(i * (h - th) / (per_side - 1)) for i in range(per_side)]
    xs = [round(i * (w - tw) / (per_side - 1)) for i in range(per_side)]
    return (th, tw), [(y, x) for y in ys for x in xs]


def phase_correlation(previous: Tensor, current: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
    """previous, current (T, h, w) tiles -> shift (T, 2) as (dx, dy) of current's content relative to
    previous's, sub-pixel, and the peak height (T,) in [0, 1]. The sub-pixel step is the centroid of the
    3x3 around the integer peak (positive part): measured 0.02 px mean error on a shifted photograph,
    where OpenCV's 5x5 centroid (cv2.phaseCorrelate) gave 0.37 px, as it mixes in the side lobes."""
    t, h, w = current.shape
    spectrum = torch.fft.rfft2(current * window) * torch.fft.rfft2(previous * window).conj()
    surface = torch.fft.irfft2(spectrum / (spectrum.abs() + 1e-9), s=(h, w))  # (T, h, w)
    peak, flat = surface.flatten(1).max(dim=1)
    iy, ix = flat // w, flat % w
    offsets = torch.arange(-1, 2, device=surface.device)
    rows = (iy[:, None] + offsets) % h  # (T, 3)
    cols = (ix[:, None] + offsets) % w
    around = surface[torch.arange(t, device=surface.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    around = around.clamp(min=0)  # (T, 3, 3)
    total = around.sum((1, 2)).clamp(min=1e-12)
    dx = ix + (around.sum(1) * offsets).sum(1) / total
    dy = iy + (around.sum(2) * offsets).sum(1) / total
    dx = torch.where(dx > w / 2, dx - w, dx)  # the surface wraps: large shifts are negative ones
    dy = torch.where(dy > h / 2, dy - h, dy)
    return torch.stack([dx, dy], dim=1), peak.clamp(0, 1)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def fit_motion(
    centres: np.ndarray, shifts: np.ndarray, weights: np.ndarray, model: str, inlier_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Tile centres (T, 2) and their content shifts (T, 2), pixels -> (the 2x3 map from current to
    previous pixel coordinates, the inlier flags (T,)). Starts from the weighted median shift, then fits
    a translation or a similarity (x' = a x - b y + tx, y' = b x + a y + ty) by weighted least squares
    to the tiles within `inlier_px` of the current fit, then within half that: an object moving on its
    own in a few tiles does not drag the camera's motion along (a still camera with a ball moving in
    some tiles measured 0.03 px with a plain least-squares fit), while a 1 %-per-frame zoom, whose tiles
    differ by ~0.3 px from any translation, is still fitted from all of them."""
    moved = centres + shifts  # where each tile's content is now
    usable = weights > 0
    if not usable.any():
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), usable
    median = [_weighted_median(shifts[usable, i], weights[usable]) for i in range(2)]
    forward = np.array([[1.0, 0.0, median[0]], [0.0, 1.0, median[1]]])
    inliers = usable
    for limit in (inlier_px, inlier_px / 2, inlier_px / 2):
        residual = np.linalg.norm(centres @ forward[:, :2].T + forward[:, 2] - moved, axis=1)
        inliers = usable & (residual <= limit)
        w = np.where(inliers, weights, 0.0)
        if w.sum() <= 0:
            break
        if model == "translation":
            t = (w[:, None] * shifts).sum(0) / w.sum()
            forward = np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])
        else:
            x, y, one, zero = centres[:, 0], centres[:, 1], np.ones(len(w)), np.zeros(len(w))
            design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
            root = np.sqrt(np.concatenate([w, w]))
            rhs = np.concatenate([moved[:, 0], moved[:, 1]])
            (sa, sb, tx, ty), *_ = np.linalg.lstsq(design * root[:, None], rhs * root, rcond=None)
            forward = np.array([[sa, -sb, tx], [sb, sa, ty]])
    full = np.vstack([forward, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2], inliers  # current -> previous


class MotionEstimator:
    """Global motion between consecutive source frames, one `update(frame)` per latent frame.

    Phase correlation (torch FFT, on the frame's device) of a grid of overlapping half-size tiles of a
    grey copy at most `max_side` pixels on its long side, then a robust fit of a translation or a
    similarity (`model`) to the tiles' shifts. Confidence: the inlier tiles' mean peak height times the
    inlier share. When tiles holding most of the peak weight moved less than `still_px` pixels (of the
    grey copy), or the fitted motion moves no point that far, the exact identity is returned: a still
    camera with a ball moving over some tiles otherwise measured 0.03 px (4 x 4 tiles: no frame of the
    benchmark's static clip moved; 3 x 3: 4 of 23 did). One host
    sync per frame reads the tiles' shifts. The first frame after a reset has no predecessor and gets
    the identity with confidence 0.
    """

    def __init__(
        self,
        model: MotionModel = "translation",
        max_side: int = 128,
        tiles: int = 4,
        inlier_px: float = 0.5,
        still_px: float = 0.05,
    ) -> None:
        if model not in MOTION_MODELS:
            raise ValueError(f"motion model must be one of {', '.join(MOTION_MODELS)}, got {model!r}")
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32 pixels, got {max_side}")
        if tiles < 2:
            raise ValueError(f"tiles must be >= 2 per side, got {tiles}")
        self.model = model
        self.max_side = max_side
        self.tiles = tiles
        self.inlier_px = inlier_px
        self.still_px = still_px
        self._previous: Tensor | None = None
        self._layout: tuple | None = None  # (key, tile size, corners, window, centres)

    def reset(self) -> None:
        self._previous = None

    def update(self, frame: Tensor) -> GlobalMotion:
        """frame uint8 (H, W, 3) tensor, the newest source frame -> its motion from the previous one."""
        grey = _grey(frame, self.max_side)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape or previous.device != grey.device:
            return GlobalMotion(confidence=0.0)
        (th, tw), corners, window, centres = self._tile_layout(grey)
        cur = torch.stack([grey[y : y + th, x : x + tw] for y, x in corners])
        prev = torch.stack([previous[y : y + th, x : x + tw] for y, x in corners])
        shifts, peaks = phase_correlation(prev, cur, window)
        both = torch.cat([shifts, peaks[:, None]], dim=1).double().cpu().numpy()  # the one host sync
        shifts, peaks = both[:, :2], both[:, 2]
        if peaks[np.abs(shifts).max(1) < self.still_px].sum() >= peaks.sum() / 2:
            # most of the frame did not move: a still camera (an object moving over the other tiles
            # would otherwise tilt the fit by a few hundredths of a pixel)
            return GlobalMotion(confidence=float(min(max(peaks.mean(), 0.0), 1.0)))
        warp, inliers = fit_motion(centres, shifts, peaks, self.model, self.inlier_px)
        confidence = min(max(float(both[inliers, 2].mean() * inliers.mean()) if inliers.any() else 0.0, 0.0), 1.0)
        motion = GlobalMotion(_pixels_to_theta(warp, tuple(grey.shape)), confidence)
        if motion.displacement(tuple(grey.shape)) < self.still_px:
            return GlobalMotion(confidence=confidence)  # exactly still: LIPAR then runs as without motion
        return motion

    def _tile_layout(self, grey: Tensor) -> tuple:
        key = (tuple(grey.shape), grey.device)
        if self._layout is None or self._layout[0] != key:
            size, corners = _tiles(tuple(grey.shape), self.tiles)
            hy = torch.hann_window(size[0], periodic=False, device=grey.device)
            hx = torch.hann_window(size[1], periodic=False, device=grey.device)
            # tile centres in pixel indices (pixel centres at integers)
            centres = np.array([[x + (size[1] - 1) / 2, y + (size[0] - 1) / 2] for y, x in corners])
            self._layout = (key, size, corners, hy[:, None] * hx[None, :], centres)
        return self._layout[1:]


def _theta(motion: GlobalMotion, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(motion.theta, dtype=dtype, device=device).expand(batch, 2, 3)


def warp_grid(x: Tensor, motion: GlobalMotion, mode: str = "bilinear") -> Tensor:
    """x (B, F, h, w) -> the same, content moved by `motion`: out(u) = x(theta(u)). Outside the previous
    frame the nearest border value is taken (`entering` marks the tokens that read there). A still motion
    returns x itself."""
    if motion.is_still:
        return x
    work = torch.float64 if x.dtype == torch.float64 else torch.float32  # interpolate half types in fp32
    grid = F.affine_grid(_theta(motion, x.shape[0], work, x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x.to(work), grid, mode=mode, padding_mode="border", align_corners=False)
    return out.to(x.dtype)


def _bilinear_taps(grid: tuple[int, int], motion: GlobalMotion) -> tuple[Tensor, Tensor]:
    """Where each token of a (gh, gw) grid reads from after `motion`: its 4 bilinear neighbours' flat
    indices (N, 4) int64 and weights (N, 4) float32, coordinates clamped at the border as grid_sample's
    padding_mode="border" does. Integer shifts give one weight 1 and three 0."""
    gh, gw = grid
    theta = torch.tensor(motion.theta, dtype=torch.float64)
    ys = (torch.arange(gh, dtype=torch.float64) + 0.5) / gh * 2 - 1
    xs = (torch.arange(gw, dtype=torch.float64) + 0.5) / gw * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    px = ((theta[0, 0] * x + theta[0, 1] * y + theta[0, 2]) + 1) * gw / 2 - 0.5  # source column, in tokens
    py = ((theta[1, 0] * x + theta[1, 1] * y + theta[1, 2]) + 1) * gh / 2 - 0.5
    px, py = px.clamp(0, gw - 1).flatten(), py.clamp(0, gh - 1).flatten()
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=gw - 1), (y0 + 1).clamp(max=gh - 1)
    idx = torch.stack([y0 * gw + x0, y0 * gw + x1, y1 * gw + x0, y1 * gw + x1], dim=1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    return idx, weights.float()


def warp_tokens(tokens: Tensor, grid: tuple[int, int], motion: GlobalMotion) -> Tensor:
    """tokens (B, N, ...) on a row-major (gh, gw) grid -> the same shape, moved by `motion` on the grid
    (bilinear, border clamped). For a frame's K/V (B, N, H, D): a token-sized shift is an exact copy, a
    fraction of a token blends the neighbours' pre-RoPE keys and values. Four gathers along N and a
    weighted sum in the tokens' dtype: no layout change, so the 30 layers of a 480x832 frame's K or V
    cost about four reads of it. A still motion returns `tokens` itself."""
    if motion.is_still:
        return tokens
    n = tokens.shape[1]
    if n != grid[0] * grid[1]:
        raise ValueError(f"tokens have {n} positions, the grid {grid} has {grid[0] * grid[1]}")
    idx, weights = _bilinear_taps(grid, motion)
    idx, weights = idx.to(tokens.device), weights.to(tokens.device, tokens.dtype)
    shape = (1, n) + (1,) * (tokens.dim() - 2)
    out = tokens.index_select(1, idx[:, 0]) * weights[:, 0].view(shape)
    for j in range(1, 4):
        out += tokens.index_select(1, idx[:, j]) * weights[:, j].view(shape)
    return out


def entering(
    grid: tuple[int, int], motion: GlobalMotion, device: torch.device | str = "cpu", slack: float = 0.25
) -> Tensor:
    """(gh, gw) bool: tokens whose content was outside the previous frame, so nothing there can be
    restored or compared: a corner of the token (at +-0.5 token) maps more than `slack` tokens outside.
    The slack keeps a whole border row from being flagged for the 0.01-pixel shifts a still camera's
    estimate may carry (border values are replicated that far)."""
    gh, gw = grid
    theta = torch.tensor(motion.theta, dtype=torch.float64)
    ys = (torch.arange(gh, dtype=torch.float64) + 0.5) / gh * 2 - 1
    xs = (torch.arange(gw, dtype=torch.float64) + 0.5) / gw * 2 - 1
    limit_x, limit_y = 1 + 2 * slack / gw, 1 + 2 * slack / gh
    inside = torch.ones(gh, gw, dtype=torch.bool)
    for oy in (-1.0 / gh, 1.0 / gh):
        for ox in (-1.0 / gw, 1.0 / gw):
            y, x = torch.meshgrid(ys + oy, xs + ox, indexing="ij")
            px = theta[0, 0] * x + theta[0, 1] * y + theta[0, 2]
            py = theta[1, 0] * x + theta[1, 1] * y + theta[1, 2]
            inside &= (px.abs() <= limit_x) & (py.abs() <= limit_y)
    return (~inside).to(device)


def warp_latent_tokens(tokens: Tensor, latent_size: tuple[int, int], motion: GlobalMotion) -> Tensor:
    """tokens (B, N, 4C) of a (h, w) latent, token layout (C, 2, 2) row-major (engine.dit.patchify) ->
    the same, moved by `motion` at latent-pixel resolution (bilinear): finer than moving whole tokens,
    as a slow pan moves content by a fraction of a latent pixel per frame."""
    if motion.is_still:
        return tokens
    b, n, d = tokens.shape
    h, w = latent_size
    c = d // 4
    latent = tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    moved = warp_grid(latent, motion)
    return moved.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, n, d)


class MotionCompensator:
    """Camera motion for one stream: the one object the generator asks about it (DESIGN.md §4.6b).

    Per latent frame the generator calls `observe(frame)` with the newest source frame (None for
    text-to-video), hands `current` to the mask, and passes the previous frame's clean tokens and K/V
    through `tokens` and `kv` before restoring and recovering from them. With `LiparConfig.motion` off, a
    confidence below `motion_confidence`, or a still camera, `current` is None and both return their
    input unchanged: the loop is then plain LIPAR, bit for bit.
    """

    def __init__(self, config: LiparConfig, latent_size: tuple[int, int]) -> None:
        on = config.enabled and config.motion != "off"
        self.estimator = MotionEstimator(config.motion) if on else None
        self.min_confidence = config.motion_confidence
        self.latent_size = latent_size
        self.reset()

    def reset(self) -> None:
        if self.estimator is not None:
            self.estimator.reset()
        self.current: GlobalMotion | None = None  # the motion this frame is compensated for
        self.measured: GlobalMotion | None = None  # what the estimator said, used or not
        self._warped: dict[int, tuple[Tensor, Tensor]] = {}

    def observe(self, frame: Tensor | None) -> GlobalMotion | None:
        """frame uint8 (H, W, 3) on any device, the newest source frame (None: no source) -> `current`."""
        self._warped = {}
        if self.estimator is None or frame is None:
            self.current = self.measured = None
            if self.estimator is not None:
                self.estimator.reset()  # text-to-video frames break the chain of source frames
            return None
        self.measured = self.estimator.update(frame)
        usable = self.measured.confidence >= self.min_confidence and not self.measured.is_still
        self.current = self.measured if usable else None
        return self.current

    def tokens(self, tokens: Tensor) -> Tensor:
        """The previous frame's clean tokens (B, N, 4C) -> moved to where their content is now."""
        return tokens if self.current is None else warp_latent_tokens(tokens, self.latent_size, self.current)

    def kv(self, k_pre: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """A previous frame's pre-RoPE K and V (B, N, H, D) -> moved on the token grid (recovery then
        rotates K at the new positions). Warped once per frame and source, however often it is asked."""
        if self.current is None:
            return k_pre, v
        key = k_pre.data_ptr()
        if key not in self._warped:
            grid = (self.latent_size[0] // 2, self.latent_size[1] // 2)
            self._warped[key] = (warp_tokens(k_pre, grid, self.current), warp_tokens(v, grid, self.current))
        return self._warped[key]

    def stats(self) -> dict | None:
        """The measured motion for `stats` (None without an estimate): shift in frame fractions."""
        m = self.measured
        if m is None:
            return None
        dx, dy = m.shift
        return {"dx": dx, "dy": dy, "scale": m.scale, "confidence": m.confidence, "used": self.current is not None}
