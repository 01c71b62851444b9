"""LIPAR settings: one frozen dataclass, validated on construction (DESIGN.md §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

RecoveryMode = Literal["none", "m-degree", "noise-aware"]
RECOVERY_MODES: tuple[str, ...] = get_args(RecoveryMode)


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
    dilation: int = 1  # keep-mask margin in tokens, so moving objects keep their edges
    min_keep: float = 0.0  # floor on the kept ratio
    # A scene cut (keep everything, reset the references) is declared when more than this fraction of
    # the tokens changed by more than tau_short since the previous frame; 1.0 never declares one.
    scene_cut: float = 0.5
    recovery: RecoveryMode = "noise-aware"

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
        if self.recovery not in RECOVERY_MODES:
            raise ValueError(f"LiparConfig.recovery must be one of {', '.join(RECOVERY_MODES)}, got {self.recovery!r}")

    @property
    def is_resolved(self) -> bool:
        return self.tau_short is not None and self.tau_long is not None

    def resolved(self, default_short: float, default_long: float) -> LiparConfig:
        """This config with unset thresholds replaced by a model's calibrated defaults."""
        return replace(
            self,
            tau_short=default_short if self.tau_short is None else self.tau_short,
            tau_long=default_long if self.tau_long is None else self.tau_long,
        )
