"""LIPAR settings: one frozen dataclass, validated on construction (DESIGN.md §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

# Named after what they do (lipar/recovery.py): the paper's M-degree is not a recovery mode but the
# attention window (sinks + the last m frames, engine.config.KVWindow), which every mode shares.
RecoveryMode = Literal["exclude", "noisy-copy", "noise-aware"]
RECOVERY_MODES: tuple[str, ...] = get_args(RecoveryMode)
MotionMode = Literal["off", "translation", "similarity"]
MOTION_MODES: tuple[str, ...] = get_args(MotionMode)
RENAMED_MODES = {
    "none": "exclude",  # pruned keys are left out of attention
    "m-degree": "noisy-copy",  # the previous frame's K/V of the same denoising step
}


@dataclass(frozen=True)
class LiparConfig:
    """How LIPAR decides which tokens to recompute and how pruned tokens are recovered.

    Thresholds are in latent units, so they depend on the model's latent scale: leave them None to
    take the model's calibrated defaults (`resolved`), as the paper's 0.15 / 0.3 only hold for Wan.
    """

    enabled: bool = True
    tau_short: float | None = None  # prune only if the change since the previous frame is below this
    tau_long: float | None = None  # ... and the change since the position was last kept is below this
    trim: float = 0.2  # fraction of a token's 4C values dropped at each end before averaging
    temporal: float = 0.5  # causal EMA weight of the previous smoothed distance (0 = no smoothing)
    # keep-mask margin in tokens around changed ones. 0, a deviation from DESIGN.md 4.1 ("dilate by one
    # token"), by measurement (session 11, round-6 tiny,
    # benchmarks/results/lipar_sweep_dilation/): with the drift rules below, 1 kept 0.72-0.78 of the tokens
    # of three unseen static-camera clips at 35.7-40.6 dB against unpruned, 0 keeps 0.52-0.60 at
    # 31.8-36.8 dB, warp error still below unpruned, and video-to-video colour following is unchanged
    # (91/97.5 % against 90/97.5 % unpruned). The margin predates those rules, when restored tokens next to
    # a moving object kept stale pieces of it.
    dilation: int = 0
    min_keep: float = 0.0  # floor on the kept ratio
    # A scene cut (keep everything, reset the references) is declared when more than `scene_cut` of
    # the tokens changed by more than `scene_cut_scale` x tau_short since the previous frame (or, with
    # `remove_global_shift`, the whole frame shifted by as much); scene_cut 1.0 never declares one.
    # x4, not x1: at x1 a codec's keyframe or an exposure step (OpenCV's vtest: the median token moves
    # 0.0097 -> 0.0155 at tau_short 0.012) read as cuts, and each kept 3 frames whole; a real cut moves
    # most tokens by 0.1 or more.
    scene_cut: float = 0.5
    scene_cut_scale: float = 4.0
    # The source tests measure each token's change after removing the frame's per-channel median
    # change: a shift shared by the whole frame is not local motion. The tiny VAE's GroupNorm moves
    # every latent when content anywhere changes (Chromium's fake camera: pixels still, latents moved
    # 0.012-0.027 over the whole background, so every token was kept, kept 1.00). Measured (session 13,
    # benchmarks/results/lipar_quality.md, lipar_sweep/): at the default tau real footage and the fake
    # camera now prune (vtest 0.96 -> 0.75 kept at 39.2 dB, fake camera 1.00 -> 0.82 at 51.8 dB; at 480x832
    # on the H200 the fake camera 1.00 -> 0.50); procedural clips move by <= 0.3 dB. The cost: on bench's
    # synthetic clip 40.0 -> 37.5 dB against unpruned at the same kept 0.58 (the unpruned output follows
    # the shift; closer to the source all the same, 22.6 vs 22.5 dB, and steadier, warp 2.08 vs 2.13).
    remove_global_shift: bool = True
    # "noisy-copy", not the paper's "noise-aware", by measurement (benchmarks/results/lipar_quality.md):
    # on the shipped tiny model kept tokens next to clean copies drift away from the unpruned output
    # (22-26 dB on unseen static clips) while copies at the right noise level keep 34-39 dB. DESIGN.md
    # 4.3 forbids duplicating the *current* step's noisy K/V; this copies the previous frame's.
    recovery: RecoveryMode = "noisy-copy"
    # Drift rules (DESIGN.md 4.6a), each measured on unseen clips (benchmarks/results/lipar_quality.md):
    # after a reset, a scene cut, a mode switch or a prompt change this many latent frames are computed
    # whole (the first frame included): pruning right after a context-free frame freezes tokens to an
    # unsettled output.
    warmup_frames: int = 3
    # a token is only pruned once its own *output* has settled: its clean latent changed less than this
    # (trimmed mean, latent units) the last time it was computed. None: the model's calibrated default.
    tau_output: float | None = None
    # tokens around an unsettled output recomputed too; 1 cost 0.02-0.09 kept for < 1 dB (measured with
    # noise-aware recovery on two clips)
    output_margin: int = 0
    # every token is recomputed at least every `max_age` frames, staggered over the grid so the cost
    # stays flat; 0 = no bound. Restored tokens otherwise keep K/V computed against a context long gone.
    max_age: int = 3
    # Motion compensation (DESIGN.md 4.6b, lipar/motion.py): "off", or the camera model estimated between
    # source frames ("translation": pan/tilt; "similarity": also zoom and roll). Off by default until it
    # measures better than plain LIPAR (benchmarks/results/lipar_motion/).
    motion: MotionMode = "off"
    motion_confidence: float = 0.2  # a frame whose estimate is less sure than this runs as plain LIPAR
    # under motion tau_short and tau_long are multiplied by this: a latent moved by a fraction
    # of a pixel differs from the re-encoded frame by ~0.12 on the tiny VAE (its stride-8 encoder is not
    # shift-equivariant), 25x its static tau_short
    motion_tau_scale: float = 40.0
    # ... and tau_output by this: x40 (0.03 -> 1.2) turned the settled-output rule off and cost 6-8 dB on
    # the pan, tilt and zoom clips; 0.06 kept 0.50-0.63 at 29-34 dB (benchmarks/results/lipar_motion/)
    motion_output_scale: float = 2.0
    # text-to-video pruning: with no source, tokens are pruned from the model's own outputs alone (the
    # settled-output rule with tau_output, warm-up and bounded age)
    t2v: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"LiparConfig.enabled must be a bool, got {self.enabled!r}")
        for name in ("tau_short", "tau_long"):
            tau = getattr(self, name)
            if tau is not None and not (isinstance(tau, (int, float)) and tau >= 0 and not math.isnan(tau)):
                raise ValueError(f"LiparConfig.{name} must be None or a number >= 0, got {tau!r}")
        if not 0.0 <= self.trim < 0.5:
            raise ValueError(f"LiparConfig.trim must lie in [0, 0.5) (fraction cut at each end), got {self.trim}")
        if not 0.0 <= self.temporal < 1.0:
            raise ValueError(f"LiparConfig.temporal must lie in [0, 1), got {self.temporal}")
        if isinstance(self.dilation, bool) or not isinstance(self.dilation, int) or self.dilation < 0:
            raise ValueError(f"LiparConfig.dilation must be an int >= 0 (tokens), got {self.dilation!r}")
        if not 0.0 <= self.min_keep <= 1.0:
            raise ValueError(f"LiparConfig.min_keep must lie in [0, 1], got {self.min_keep}")
        if not 0.0 < self.scene_cut <= 1.0:
            raise ValueError(f"LiparConfig.scene_cut must lie in (0, 1], got {self.scene_cut}")
        if self.recovery in RENAMED_MODES:
            raise ValueError(
                f"LiparConfig.recovery {self.recovery!r} was renamed {RENAMED_MODES[self.recovery]!r} "
                "(modes are named after what they do; the paper's M-degree is the attention window)"
            )
        if self.recovery not in RECOVERY_MODES:
            raise ValueError(f"LiparConfig.recovery must be one of {', '.join(RECOVERY_MODES)}, got {self.recovery!r}")

        for name in ("warmup_frames", "output_margin", "max_age"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"LiparConfig.{name} must be an int >= 0, got {value!r}")
        if self.max_age == 1:
            raise ValueError("LiparConfig.max_age 1 would recompute every token every frame; use 0 (no bound) or >= 2")
        tau = self.tau_output
        if tau is not None and not (isinstance(tau, (int, float)) and tau > 0 and not math.isnan(tau)):
            raise ValueError(f"LiparConfig.tau_output must be None or a number > 0 (inf: off), got {tau!r}")
        if self.motion not in MOTION_MODES:
            raise ValueError(f"LiparConfig.motion must be one of {', '.join(MOTION_MODES)}, got {self.motion!r}")
        if not 0.0 <= self.motion_confidence <= 1.0:
            raise ValueError(f"LiparConfig.motion_confidence must lie in [0, 1], got {self.motion_confidence}")
        for name in ("scene_cut_scale", "motion_tau_scale", "motion_output_scale"):
            scale = getattr(self, name)
            if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and scale > 0):
                raise ValueError(f"LiparConfig.{name} must be a number > 0, got {scale!r}")
        for name in ("remove_global_shift", "t2v"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"LiparConfig.{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def is_resolved(self) -> bool:
        return self.tau_short is not None and self.tau_long is not None

    def resolved(self, default_short: float, default_long: float, default_output: float | None = None) -> LiparConfig:
        """This config with unset thresholds replaced by a model's calibrated defaults (a model with no
        calibrated output threshold leaves the settled-output rule off: inf)."""
        return replace(
            self,
            tau_short=default_short if self.tau_short is None else self.tau_short,
            tau_long=default_long if self.tau_long is None else self.tau_long,
            tau_output=(math.inf if default_output is None else default_output)
            if self.tau_output is None
            else self.tau_output,
        )
