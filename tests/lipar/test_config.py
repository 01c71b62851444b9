import dataclasses
import math

import pytest

from lipar.config import LiparConfig


def test_defaults_are_valid_and_unresolved():
    cfg = LiparConfig()
    assert cfg.enabled and cfg.recovery == "noisy-copy"
    assert not cfg.is_resolved


def test_resolved_fills_only_unset_thresholds():
    cfg = LiparConfig(tau_long=0.5).resolved(0.15, 0.3)
    assert (cfg.tau_short, cfg.tau_long) == (0.15, 0.5)
    assert cfg.is_resolved
    assert LiparConfig(tau_short=0.0, tau_long=0.0).resolved(1.0, 1.0).tau_short == 0.0


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LiparConfig().trim = 0.1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enabled", "yes"),
        ("tau_short", -0.1),
        ("tau_short", math.nan),
        ("tau_long", -1.0),
        ("tau_long", "0.3"),
        ("trim", 0.5),
        ("trim", -0.1),
        ("temporal", 1.0),
        ("temporal", -0.5),
        ("dilation", -1),
        ("dilation", 1.5),
        ("min_keep", 1.5),
        ("min_keep", -0.1),
        ("scene_cut", 0.0),
        ("scene_cut", 1.5),
        ("scene_cut_scale", 0.0),
        ("scene_cut_scale", True),
        ("remove_global_shift", 1),
        ("recovery", "from_memory"),
    ],
)
def test_bad_values_raise_clear_errors(field, value):
    with pytest.raises(ValueError, match=f"LiparConfig.{field}"):
        LiparConfig(**{field: value})
