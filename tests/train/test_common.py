import pytest
import torch

from train.common import load_checkpoint, pick_device, plot_curves, save_checkpoint, warmup_cosine


def test_checkpoint_round_trip_in_shards(tmp_path):
    state = {"step": 7, "w": torch.arange(300_000, dtype=torch.float32)}  # ~1.2 MB
    save_checkpoint(state, tmp_path, shard_mb=0.25)
    shards = sorted(p.name for p in tmp_path.iterdir())
    assert len(shards) >= 5 and shards[0] == "state.pt.000"
    back = load_checkpoint(tmp_path)
    assert back["step"] == 7 and torch.equal(back["w"], state["w"])


def test_checkpoint_overwrite_removes_stale_shards(tmp_path):
    save_checkpoint({"w": torch.zeros(300_000)}, tmp_path, shard_mb=0.25)
    save_checkpoint({"step": 2}, tmp_path, shard_mb=0.25)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt.000"]
    assert load_checkpoint(tmp_path) == {"step": 2}


def test_missing_or_incomplete_checkpoint(tmp_path):
    assert load_checkpoint(tmp_path) is None
    save_checkpoint({"w": torch.zeros(300_000)}, tmp_path, shard_mb=0.25)
    (tmp_path / "state.pt.001").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        load_checkpoint(tmp_path)


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] == pytest.approx(0.02, abs=1e-3)


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_plot_curves_writes_png(tmp_path):
    path = tmp_path / "loss.png"
    plot_curves(path, {"loss": [(1, 1.0), (2, 0.5)], "psnr": []}, "t", log_scale=("loss",))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_annealing_step_follows_time_when_time_runs_out_first():
    from train.common import annealing_step

    assert annealing_step(10, 1000, elapsed_s=300.0, max_minutes=None) == 10  # no time limit: steps
    assert annealing_step(10, 1000, elapsed_s=300.0, max_minutes=10.0) == 500  # half the time gone
    assert annealing_step(900, 1000, elapsed_s=60.0, max_minutes=10.0) == 900  # steps ahead of time
