"""`app.py bench` on the CPU: the result file's shape, the sweep, and clear errors on bad input."""

import json

import numpy as np
import pytest

import app
from engine.bench import BenchConfig, run_bench, run_variants, synthetic_clip
from engine.config import get_config
from engine.generator import StreamingGenerator
from engine.quality import PSNR_CAP
from engine.video_io import write_video
from lipar.config import LiparConfig

RUN_FIELDS = {
    "fps",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p99",
    "ttff_ms",
    "kept_ratio_mean",
    "peak_mem_gb",
    "psnr_vs_baseline",
    "psnr_vs_baseline_frames",
    "drift",
    "warp_error",
    "psnr_vs_source",
    "psnr_vs_source_frames",
    "drift_vs_source",
    "stages_ms",
    "deadline_miss_rate",
}


def test_bench_writes_both_runs_the_sweep_and_a_plot(tmp_path):
    cfg = BenchConfig(
        device="cpu", size=(64, 64), random_weights=True, frames=3, warmup=1, sweep_keep=True, target_fps=1e6,
        out=tmp_path, command="test",
    )  # fmt: skip
    run_bench(cfg)
    result = json.loads((tmp_path / "bench.json").read_text(), parse_constant=_refuse)  # strict JSON: no inf
    assert {"model", "size", "card", "torch", "command", "runs", "sweep"} <= set(result)
    assert result["size"] == "64x64" and result["command"] == "test"
    assert result["v2v_anchor"] == get_config("tiny").v2v_anchor
    assert result["side_stream"] is False  # the CPU has one stream
    for name in ("baseline", "lipar"):
        run = result["runs"][name]
        assert RUN_FIELDS <= set(run)
        assert set(run["stages_ms"]) == {"encode", "mask", "dit", "decode"}
        assert run["timed_passes"] == 2 and len(run["latency_ms"]) == 2 * 3  # both passes' frames pooled
        assert run["latency_ms_p50"] <= run["latency_ms_p99"]
        assert run["deadline_miss_rate"] == 1.0  # a million fps is a deadline nothing meets
        assert len(run["psnr_vs_baseline_frames"]) == 3 and run["drift"]["frames"] == 1
        assert run["warp_error"] >= 0 and 0 < run["psnr_vs_source"] < PSNR_CAP  # every run, video-to-video
        assert len(run["psnr_vs_source_frames"]) == 3 and run["drift_vs_source"]["frames"] == 1
    baseline = result["runs"]["baseline"]
    assert baseline["psnr_vs_baseline"] == PSNR_CAP and baseline["drift"]["change_db"] == 0  # itself: the cap
    assert result["runs"]["baseline"]["kept_ratio_mean"] == 1.0
    assert [s["kept"] for s in result["sweep"]] == [1.0, 0.75, 0.5, 0.25]
    assert all(s["ms"] > 0 and s["ideal"] == pytest.approx(1 / s["kept"]) for s in result["sweep"])
    assert "random weights" in result["notes"]  # the lipar run's kept ratio means nothing then
    assert (tmp_path / "bench.png").stat().st_size > 0 and (tmp_path / "frames.png").stat().st_size > 0


def test_variants_are_timed_in_abba_order_after_one_capture_each():
    gen = StreamingGenerator.from_pretrained("tiny", device="cpu", random_weights=True, size=(64, 64))
    order = []
    set_lipar = gen.set_lipar
    gen.set_lipar = lambda config: (order.append(config.enabled), set_lipar(config))
    chunks = [[f] for f in synthetic_clip(64, 64, 3)]
    variants = {"off": LiparConfig(enabled=False), "on": LiparConfig()}
    runs = run_variants(gen, chunks, variants, warmup=1, budget_ms=None, timed_passes=3)
    assert order == [False, True, False, True, True, False, False, True]  # captures, then AB BA AB
    assert runs["off"][0]["timed_passes"] == 3 and len(runs["off"][0]["latency_ms"]) == 3 * 2
    assert len(runs["on"][1]) == 2  # the frames of one timed pass (after the warm-up frame)


def _refuse(constant: str):
    raise AssertionError(f"bench.json holds {constant}")


def test_synthetic_clip_has_a_static_background_and_a_moving_disc():
    a, b = synthetic_clip(64, 96, 2)
    changed = np.any(a != b, axis=-1)
    assert a.shape == (64, 96, 3) and 0 < changed.mean() < 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frames": 1}, "--frames"),
        ({"warmup": -1}, "--warmup"),
        ({"target_fps": 0}, "--target-fps"),
        ({"timed_passes": 0}, "--timed-passes"),
        ({"graph_buckets": 0}, "--graph-buckets"),
    ],
)
def test_bad_bench_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)


def test_too_short_a_source_is_a_one_line_error(tmp_path, capsys):
    short = tmp_path / "short.mp4"
    write_video([np.zeros((64, 64, 3), np.uint8)] * 4, short, fps=8)
    args = ["bench", "--device", "cpu", "--size", "64x64", "--random-weights", "--source", str(short)]
    code = app.main([*args, "--frames", "8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--warmup + --frames need" in err[0]


def test_graph_buckets_without_cuda_graphs_is_a_one_line_error(tmp_path, capsys):
    args = ["bench", "--device", "cpu", "--size", "64x64", "--random-weights", "--frames", "2", "--warmup", "0"]
    code = app.main([*args, "--graph-buckets", "32", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--graph-buckets needs the cudagraph backend" in err[0]
    assert not (tmp_path / "o").exists()  # refused before anything ran
