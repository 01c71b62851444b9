"""benchmarks/profile_frame.py: the GPU busy time it reports is the union of kernel intervals."""

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_frame.py"
_spec = importlib.util.spec_from_file_location("profile_frame", _PATH)
profile_frame = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_frame)


def test_busy_time_counts_overlapping_kernels_once_and_gaps_not_at_all():
    spans = [(10.0, 20.0), (0.0, 4.0), (15.0, 30.0), (40.0, 41.0), (16.0, 18.0)]
    assert profile_frame.union_length(spans) == 4.0 + 20.0 + 1.0


def test_busy_time_of_no_kernels_is_zero():
    assert profile_frame.union_length([]) == 0.0


def test_idle_gaps_name_the_kernels_around_them_and_the_innermost_host_stage():
    kernels = [(0, 10, "a"), (5, 12, "b"), (35, 40, "c"), (45, 50, "d"), (100, 110, "e"), (200, 210, "f")]
    stages = [(0, 25, "encode"), (25, 60, "mask"), (60, 120, "dit"), (80, 90, "decode")]  # decode inside dit
    out = profile_frame.idle_gaps(kernels, stages, min_gap=20.0, top=10)
    # 40-45 is shorter than min_gap; 12-35, 50-100 and 110-200 are gaps, longest first
    assert [(g["start"], g["end"], g["before"], g["after"]) for g in out["gaps"]] == [
        (110, 200, "e", "f"),
        (50, 100, "d", "e"),
        (12, 35, "b", "c"),
    ]
    assert out["gaps"][1]["stages"] == ["decode", "dit", "mask"]
    by_stage = {k: round(v * 1000) for k, v in out["idle_ms_by_stage"].items()}  # us
    assert by_stage == {"none": 80, "dit": 40, "mask": 20, "encode": 13, "decode": 10}
    assert round(out["idle_ms"] * 1000) == 23 + 50 + 90
