"""Streaming, causal keep mask over latent tokens (DESIGN.md §4.1).

A token is a 1x2x2 latent patch: 4C values. Its distance to another latent is the trimmed mean of the
absolute differences of those values. A token is pruned when it changed little since the previous
frame (d_short < tau_short) and since the frame at which it was last recomputed (d_long < tau_long);
the second test stops slow drift from being pruned forever. Both measure the change after removing
the frame's per-channel median change (`remove_global_shift`): a shift shared by every token (the tiny
VAE's GroupNorm, an exposure step) is not local motion. A scene cut is a change of most tokens by
`scene_cut_scale` x tau_short, or a shift of the whole frame by as much.

Three drift rules (DESIGN.md 4.6a) sit on top of the source test, because a restored token is a copy of
the model's *output*, and the output does not only follow the source: (1) warm-up: `warmup_frames`
whole frames after a reset, a scene cut, a mode switch or a prompt change (`hold`); (2) settled
output: a token is pruned only if its clean latent changed less than `tau_output` the last time it was
computed (`observe_output` measures it), with an `output_margin` around unsettled tokens; (3) bounded
age: every token is recomputed at least every `max_age` frames, on a fixed staggered pattern so that
each frame refreshes the same share of the grid.

Beyond the paper (DESIGN.md 4.6b, lipar/motion.py): `update(latent, motion)` with the camera's motion
first moves the mask's state (previous latent, references, smoothed distances, output history) to where
its content is now, tests with thresholds scaled by `motion_tau_scale` and `motion_output_scale`, and
keeps the tokens that entered the frame at its border. `update(None)` is text-to-video: with
`LiparConfig.t2v` only the output rules decide (no source to test), else everything is kept.

Everything runs as tensor ops on the latent's device; the only host sync per frame reads the kept
count and the scene-cut flag, which the result's indices need anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from lipar.config import LiparConfig
from lipar.motion import GlobalMotion, entering, warp_grid


@dataclass(frozen=True)
class MaskResult:
    keep: Tensor  # (gh, gw) bool, True = recompute this token
    keep_idx: Tensor  # (K,) int64, row-major flat indices of kept tokens, ascending
    pruned_idx: Tensor  # (N - K,) int64, the other tokens, ascending
    kept_ratio: float
    reason: str  # "first" | "scene_cut" | "pruned" | "disabled"


def frame_shift(a: Tensor, b: Tensor) -> Tensor:
    """a, b (C, h, w) -> (C,) float32: the median of a - b over the frame, per channel (torch.median's
    lower middle; kthvalue, because torch.median took twice as long on the CPU at 60x104)."""
    diff = (a.float() - b.float()).flatten(1)
    return diff.kthvalue((diff.shape[1] + 1) // 2, dim=1).values


def token_distance(a: Tensor, b: Tensor, trim: float, shift: Tensor | None = None) -> Tensor:
    """a, b (C, h, w) -> (h/2, w/2) float32: per-token trimmed mean of |a - b - shift| over its 4C values;
    `shift` (C,) is a change shared by the whole frame (`frame_shift`), None: none."""
    c, h, w = a.shape
    diff = a.float() - b.float()
    if shift is not None:
        diff -= shift.view(c, 1, 1)
    diff = diff.abs()
    # (C, gh, 2, gw, 2) -> (gh, gw, C*2*2): the token layout (C, 2, 2) flattened
    values = diff.view(c, h // 2, 2, w // 2, 2).permute(1, 3, 0, 2, 4).reshape(h // 2, w // 2, 4 * c)
    cut = int(trim * values.shape[-1])
    if cut:
        values = values.sort(dim=-1).values[..., cut : values.shape[-1] - cut]
    return values.mean(dim=-1)


def refresh_phase(grid: tuple[int, int], period: int) -> Tensor:
    """(gh, gw) int64 in [0, period): frame f refreshes the tokens whose phase is f mod period. Tokens
    are dealt out along anti-diagonals with a stride coprime to the period, so each frame's share is
    spread over the whole grid (no band of refreshed tokens sweeping the frame)."""
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    stride = next(s for s in range(period // 2 + 1, 2 * period + 2) if math.gcd(s, period) == 1)
    return (rows * stride + cols) % period


def median3x3(d: Tensor) -> Tensor:
    """(gh, gw) -> (gh, gw): 3x3 median with replicate padding, so borders are not biased to zero."""
    padded = F.pad(d[None, None], (1, 1, 1, 1), mode="replicate")
    windows = F.unfold(padded, kernel_size=3)  # (1, 9, gh*gw)
    return windows.median(dim=1).values.view_as(d)


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """(gh, gw) float {0, 1}: square dilation; max-pool padding ignores out-of-frame tokens."""
    return F.max_pool2d(mask[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]


def _dilate_cross(mask: Tensor) -> Tensor:
    """(gh, gw) float {0, 1}: dilation by the 3x3 cross (a token and its 4 neighbours)."""
    m = mask[None, None]
    rows = F.max_pool2d(m, (3, 1), stride=1, padding=(1, 0))
    cols = F.max_pool2d(m, (1, 3), stride=1, padding=(0, 1))
    return torch.maximum(rows, cols)[0, 0]


def _erode_cross(mask: Tensor) -> Tensor:
    # out-of-frame tokens are ignored, so the frame edge does not erode a region touching it
    return 1.0 - _dilate_cross(1.0 - mask)


def compute_mask(d_short: Tensor, d_long: Tensor, config: LiparConfig) -> Tensor:
    """Smoothed distances (gh, gw) -> keep (gh, gw) bool.

    Threshold, morphological close then open to remove holes and specks, dilation by
    `config.dilation` tokens (square), then the `min_keep` floor filled with the tokens closest to
    being kept. Close and open use the 3x3 cross, not the square: the 3x3 median has already rounded
    the corners of changed regions, and a square opening would then erase regions up to 4x4 tokens.
    """
    if not config.is_resolved:
        raise ValueError("compute_mask needs a resolved LiparConfig (tau_short and tau_long set)")
    tau_short, tau_long = float(config.tau_short), float(config.tau_long)
    keep = ~((d_short < tau_short) & (d_long < tau_long))
    m = keep.float()
    m = _erode_cross(_dilate_cross(m))  # close
    m = _dilate_cross(_erode_cross(m))  # open
    if config.dilation:
        m = _dilate(m, config.dilation)
    keep = m > 0.5
    floor = math.ceil(config.min_keep * keep.numel() - 1e-9)
    if floor:
        # top-`floor` scores with kept tokens at +inf: adds nothing when the floor is already met
        score = torch.maximum(d_short / max(tau_short, 1e-12), d_long / max(tau_long, 1e-12))
        score = score.masked_fill(keep, math.inf).flatten()
        keep = keep.flatten().index_fill(0, score.topk(floor).indices, True).view_as(d_short)
    return keep


class StreamingMask:
    """Keep mask for one stream of source latents, one `update` per latent frame, causal."""

    def __init__(self, config: LiparConfig, grid: tuple[int, int], device: torch.device | str = "cpu") -> None:
        if config.enabled and not config.is_resolved:
            raise ValueError("StreamingMask needs resolved thresholds: use config.resolved(tau_short, tau_long)")
        if len(grid) != 2 or any(not isinstance(g, int) or g < 1 for g in grid):
            raise ValueError(f"grid must be two positive ints (gh, gw), got {grid!r}")
        self.config = config
        self._moving = _scaled(config, config.motion_tau_scale, config.motion_output_scale)  # under camera motion
        self.grid = (grid[0], grid[1])
        # the settled-output rule (on or off alike for the still and the moving thresholds: inf x scale is inf)
        self._measures_output = config.tau_output is not None and not math.isinf(config.tau_output)
        self.device = torch.device(device)  # of the text-to-video masks (a source path follows its latents)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next `warmup_frames` frames are kept whole; the first is the reference."""
        self._frame = 0
        self._warm = 0  # frames still to keep whole after the current one (warm-up)
        self._out_change: Tensor | None = None  # (gh, gw) output change at each token's last computation
        self._last_output: Tensor | None = None  # (C, h, w) the previous frame's clean latent
        self._phase = refresh_phase(self.grid, self.config.max_age) if self.config.max_age else None
        self._previous: Tensor | None = None  # (C, h, w) s_{t-1}
        self._reference: Tensor | None = None  # (C, h, w) source latent when each position was last kept
        self._ema_short: Tensor | None = None  # (gh, gw) smoothed d_short of the previous frame
        self._ema_long: Tensor | None = None  # (gh, gw) smoothed d_long of the previous frame
        self._fresh_short: Tensor | None = None  # (gh, gw) bool: no d_short history (after a scene cut)
        self._fresh_long: Tensor | None = None  # (gh, gw) bool: reference just replaced, d_long restarts

    def hold(self, frames: int) -> None:
        """Keep the next `frames` frames whole (a prompt change: the output changes everywhere while the
        source may not), without forgetting the stream."""
        self._warm = max(self._warm, frames)

    def update(self, latent: Tensor | None, motion: GlobalMotion | None = None) -> MaskResult:
        """latent (C, h, w) source latent s_t with (h, w) = 2 * grid, or None (text-to-video); motion: the
        camera's since the previous frame (None: still) -> the keep mask for this frame."""
        if latent is None:
            return self._update_from_outputs()
        self._check(latent)
        gh, gw = self.grid
        if not self.config.enabled:
            return _result(torch.ones(gh, gw, dtype=torch.bool, device=latent.device), False, "disabled")
        cfg = self.config
        self._frame += 1
        moved = motion is not None and not motion.is_still and self._previous is not None
        if moved:
            self._follow(motion)
            cfg = self._moving
        if self._previous is None:
            keep = torch.ones(gh, gw, dtype=torch.bool, device=latent.device)
            self._previous, self._reference = latent.clone(), latent.clone()
            self._fresh_short = torch.ones_like(keep)
            self._fresh_long = torch.ones_like(keep)
            self._ema_short = self._ema_long = torch.zeros(gh, gw, device=latent.device)
            self._start(latent.device)
            return _result(keep, False, "first")

        shift_short = shift_long = None
        if cfg.remove_global_shift:
            shift_short, shift_long = frame_shift(latent, self._previous), frame_shift(latent, self._reference)
        d_short = median3x3(token_distance(latent, self._previous, cfg.trim, shift_short))
        d_long = median3x3(token_distance(latent, self._reference, cfg.trim, shift_long))
        # a new scene: most tokens changed by far more than tau_short, or the whole frame did (lights on)
        big = cfg.scene_cut_scale * cfg.tau_short
        cut = (d_short > big).float().mean() > cfg.scene_cut  # 0-d bool, stays on device
        if shift_short is not None:
            cut = cut | (shift_short.abs().mean() > big)
        # causal EMA; where there is no usable history the blend starts from the current distance
        a = cfg.temporal
        d_short = (1 - a) * d_short + a * torch.where(self._fresh_short, d_short, self._ema_short)
        d_long = (1 - a) * d_long + a * torch.where(self._fresh_long, d_long, self._ema_long)
        warming = self._warm > 0
        if warming:
            self._warm -= 1
            keep = torch.ones(gh, gw, dtype=torch.bool, device=latent.device)
        else:
            keep = compute_mask(d_short, d_long, cfg) | self._unsettled(cfg) | self._due() | cut
        # content that was outside the previous frame has nothing to be restored from, nor a history
        new = entering(self.grid, motion, latent.device) if moved else None
        if new is not None:
            keep = keep | new

        self._previous = latent.clone()
        keep_px = keep.repeat_interleave(2, 0).repeat_interleave(2, 1)  # (h, w)
        self._reference = torch.where(keep_px, latent, self._reference)
        self._ema_short, self._ema_long = d_short, d_long
        self._fresh_short = cut.expand(gh, gw) if new is None else new | cut
        self._fresh_long = keep
        result = _result(keep, cut, "warmup" if warming else "pruned")
        if result.reason == "scene_cut":  # a new scene: its first frames are as unsettled as a start's
            self._warm = cfg.warmup_frames - 1
            self._out_change.fill_(math.inf)
        return result

    def observe_output(self, clean: Tensor, keep: Tensor) -> None:
        """After the frame: clean (C, h, w) is its clean latent, keep (gh, gw) the tokens computed for it.
        Measures how much each computed token's output moved since the previous frame; restored tokens
        keep their last measurement (their output did not move, because it was not recomputed)."""
        if self._out_change is None:  # nothing updated the mask yet (disabled, or text-to-video)
            return
        if not self._measures_output:  # the rule is off: nothing reads it (at 480x832, ~20 kernels and a sort)
            return
        if self._last_output is not None and self._last_output.shape == clean.shape:
            change = token_distance(clean, self._last_output, self.config.trim)
            self._out_change = torch.where(keep, change, self._out_change)
        self._last_output = clean.float().clone()

    def _start(self, device: torch.device) -> None:
        """A stream's first frame: no output measured yet, the age pattern on its device, warm-up begun
        (the first frame is one of the `warmup_frames`)."""
        self._out_change = torch.full(self.grid, math.inf, device=device)  # inf: never measured
        self._phase = None if self._phase is None else self._phase.to(device)
        self._warm = max(self._warm, self.config.warmup_frames - 1)

    def _follow(self, motion: GlobalMotion) -> None:
        """Move the state to the current frame's coordinates: latents and distances by interpolation,
        the output-change record and the flags to the nearest token (inf there means never measured)."""
        self._previous = warp_grid(self._previous[None], motion)[0]
        self._reference = warp_grid(self._reference[None], motion)[0]
        if self._last_output is not None:
            self._last_output = warp_grid(self._last_output[None], motion)[0]
        self._ema_short = warp_grid(self._ema_short[None, None], motion)[0, 0]
        self._ema_long = warp_grid(self._ema_long[None, None], motion)[0, 0]
        self._out_change = warp_grid(self._out_change[None, None], motion, "nearest")[0, 0]
        for name in ("_fresh_short", "_fresh_long"):
            flags = getattr(self, name)[None, None].float()
            setattr(self, name, warp_grid(flags, motion, "nearest")[0, 0] > 0.5)

    def _update_from_outputs(self) -> MaskResult:
        """Text-to-video: tokens whose clean output settled (`observe_output`) are pruned, under the
        warm-up and age rules; without `LiparConfig.t2v` (or LIPAR off) everything is kept."""
        gh, gw = self.grid
        device = self.device
        if not (self.config.enabled and self.config.t2v):
            return _result(torch.ones(gh, gw, dtype=torch.bool, device=device), False, "disabled")
        self._frame += 1
        keep = torch.ones(gh, gw, dtype=torch.bool, device=device)
        if self._out_change is None:  # the first frame: nothing measured yet
            self._start(device)
            return _result(keep, False, "first")
        if self._warm > 0:
            self._warm -= 1
            return _result(keep, False, "warmup")
        return _result(self._unsettled(self.config) | self._due(), False, "pruned")

    def _unsettled(self, cfg: LiparConfig) -> Tensor:
        """(gh, gw) bool: tokens whose output had not settled when last computed, plus a margin."""
        if not self._measures_output:
            return torch.zeros(self.grid, dtype=torch.bool, device=self._out_change.device)
        unsettled = (self._out_change >= cfg.tau_output).float()  # inf (never measured) is unsettled
        if self.config.output_margin:
            unsettled = _dilate(unsettled, self.config.output_margin)
        return unsettled > 0.5

    def _due(self) -> Tensor:
        """(gh, gw) bool: the tokens whose turn it is to be refreshed (bounded age)."""
        if self._phase is None:
            return torch.zeros(self.grid, dtype=torch.bool, device=self._out_change.device)
        return self._phase == self._frame % self.config.max_age

    def _check(self, latent: Tensor) -> None:
        gh, gw = self.grid
        if not isinstance(latent, Tensor) or latent.dim() != 3 or not latent.is_floating_point():
            raise ValueError("latent must be a floating tensor of shape (C, h, w)")
        if latent.shape[1:] != (2 * gh, 2 * gw):
            raise ValueError(
                f"latent (C, h, w) = {tuple(latent.shape)} does not match the token grid {self.grid}: "
                f"expected (h, w) = ({2 * gh}, {2 * gw})"
            )
        prev = self._previous
        if prev is not None and (prev.shape != latent.shape or prev.device != latent.device):
            raise ValueError(
                f"latent {tuple(latent.shape)} on {latent.device} differs from the stream's "
                f"{tuple(prev.shape)} on {prev.device}; call reset() first"
            )


def _scaled(config: LiparConfig, source: float, output: float) -> LiparConfig:
    """config with its source thresholds multiplied by `source` and tau_output by `output` (those set)."""
    factors = {"tau_short": source, "tau_long": source, "tau_output": output}
    taus = {name: getattr(config, name) for name in factors}
    return replace(config, **{name: tau * factors[name] for name, tau in taus.items() if tau is not None})


def _result(keep: Tensor, cut: Tensor | bool, reason: str) -> MaskResult:
    n = keep.numel()
    kept, is_cut = torch.stack([keep.sum(), torch.as_tensor(cut, device=keep.device).long()]).tolist()
    # one stable sort yields both index lists, ascending, without another host sync
    order = torch.argsort((~keep).flatten().to(torch.uint8), stable=True)
    return MaskResult(
        keep=keep,
        keep_idx=order[:kept],
        pruned_idx=order[kept:],
        kept_ratio=kept / n,
        reason="scene_cut" if is_cut else reason,
    )
