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


def test_a_stage_range_on_the_device_timeline_is_not_counted_as_a_kernel():
    from types import SimpleNamespace

    import torch

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(name, start, end, device, annotation=False):
        span = SimpleNamespace(start=start, end=end)
        return SimpleNamespace(name=name, time_range=span, device_type=device, is_user_annotation=annotation)

    events = [
        event("stage:dit", 0, 100, cpu, annotation=True),
        event("stage:dit", 0, 100, cuda, annotation=True),  # the same range, mirrored on the GPU
        event("gemm", 0, 30, cuda),
        event("attn", 70, 100, cuda),
        event("cudaStreamSynchronize", 50, 51, cpu),
    ]
    kernels, stages, device_stages, syncs = profile_frame.split_events(events)
    assert [k[2] for k in kernels] == ["gemm", "attn"]
    assert stages == device_stages == [(0, 100, "dit")]
    assert syncs == {"cudaStreamSynchronize": 1}
    assert profile_frame.idle_gaps(kernels, stages, min_gap=20.0, top=5)["idle_ms_by_stage"] == {"dit": 0.04}


def test_each_kernel_goes_to_the_innermost_stage_that_launched_it():
    kernels = [(0, 5, "enc"), (20, 30, "gemm"), (25, 45, "dec"), (40, 42, "gemm"), (90, 95, "copy")]
    stages = [(0, 15, "encode"), (18, 60, "dit"), (24, 50, "decode")]  # decode inside dit
    out = profile_frame.kernels_by_stage(kernels, stages, top=1)
    assert list(out) == ["decode", "dit", "encode", "none"]  # by time, most first
    assert out["decode"]["calls"] == 2 and out["decode"]["ms"] == (20 + 2) / 1000.0
    assert out["decode"]["top"] == [{"kernel": "dec", "calls": 1, "ms": 0.02}]
    assert out["dit"]["ms"] == 0.01 and out["none"]["top"][0]["kernel"] == "copy"
