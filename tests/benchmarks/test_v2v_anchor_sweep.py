"""benchmarks/v2v_anchor_sweep.py: its second clip set is held out and static, its tolerances parse."""

import argparse
import importlib.util
from pathlib import Path

import pytest

from train.dataset import HELDOUT_SEEDS_START
from train.evaluate import fidelity_clips

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "v2v_anchor_sweep.py"
_spec = importlib.util.spec_from_file_location("v2v_anchor_sweep", _PATH)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def test_other_clips_are_held_out_static_and_not_the_evaluation_clips():
    clips = sweep.other_clips(6, 8)
    assert len(clips) == 6 and len({c.seed for c in clips}) == 6
    assert all(c.seed >= HELDOUT_SEEDS_START and c.static_camera and len(c.scenes) == 1 for c in clips)
    assert not {c.seed for c in clips} & {c.seed for c in fidelity_clips(8)}


def test_tolerances_parse_and_bad_ones_are_refused():
    assert sweep.parse_tolerances("off, 0.2,1") == [None, 0.2, 1.0]
    for bad in ("0", "-0.1", "loose", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="numbers > 0 or 'off'"):
            sweep.parse_tolerances(bad)
