"""benchmarks/lipar_sweep.py: the LiparConfig override, mode names, and one small sweep end to end."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from engine.video_io import write_video
from lipar.config import RECOVERY_MODES, LiparConfig

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "lipar_sweep.py"
_spec = importlib.util.spec_from_file_location("lipar_sweep", _PATH)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def test_lipar_override_parses_each_value_type_into_the_config():
    cfg = sweep.lipar_override(["dilation=2", "trim=0.1", "enabled=false", "tau_short=null", "scene_cut=1"])
    assert cfg == LiparConfig(dilation=2, trim=0.1, enabled=False, tau_short=None, scene_cut=1)
    assert sweep.parse_value("inf") == math.inf and sweep.parse_value(RECOVERY_MODES[0]) == RECOVERY_MODES[0]


@pytest.mark.parametrize(
    "pairs, message",
    [(["no_such_field=1"], "KEY one of"), (["dilation"], "KEY=VALUE"), (["trim=0.9"], "LiparConfig.trim")],
)
def test_bad_lipar_overrides_are_one_line_errors(pairs, message):
    with pytest.raises(ValueError, match=message):
        sweep.lipar_override(pairs)


def test_modes_come_from_the_config():
    base = LiparConfig()
    assert sweep.parse_modes(None, base) == [base.recovery]
    assert sweep.parse_modes(["all"], base) == list(RECOVERY_MODES)
    with pytest.raises(ValueError, match="unknown recovery mode 'bogus'"):
        sweep.parse_modes(["bogus"], base)


def test_a_small_sweep_writes_one_point_per_threshold_pair_and_a_plot(tmp_path):
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    frames = []
    for t in range(4):  # a still background and a square moving over it
        f = background.copy()
        f[20:36, 4 + 6 * t : 20 + 6 * t] = (220, 40, 40)
        frames.append(f)
    clip = tmp_path / "clip.mp4"
    write_video(frames, clip, fps=8)
    out = tmp_path / "sweep"
    argv = ["--clips", str(clip), "--taus", "0.005,0.01", "0.02", "--size", "64", "--warmup", "1", "--frames", "2"]
    sweep.main([*argv, "--lipar", "dilation=0", "--out", str(out)])
    result = json.loads((out / "sweep.json").read_text())
    assert "--lipar dilation=0" in result["meta"]["command"] and result["meta"]["lipar"]["dilation"] == 0
    points = result["clips"]["clip"]["points"]
    assert [p["tau_short"] for p in points] == [0.005, 0.02]
    assert points[0]["tau_long"] == 0.01 and points[1]["tau_long"] > 0  # LONG left out: the model's own
    for p in points:
        assert 0 < p["kept_ratio"] <= 1 and len(p["psnr_vs_baseline_frames"]) == 2 and p["warp_error"] >= 0
    assert result["clips"]["clip"]["unpruned"]["warp_error"] >= 0
    assert (out / "sweep.png").stat().st_size > 0


def test_a_clip_too_short_is_a_one_line_error(tmp_path, capsys):
    clip = tmp_path / "short.mp4"
    write_video([np.zeros((64, 64, 3), np.uint8)] * 2, clip, fps=8)
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--clips", str(clip), "--taus", "0.01", "--size", "64", "--warmup", "1", "--frames", "2"])
    assert exit_info.value.code == 2
    assert "has 2 frames; --warmup + --frames need 3" in capsys.readouterr().err.strip().splitlines()[-1]
