import json

import pytest
import torch

from train.common import load_checkpoint
from train.train_vae import FramePool, VaeTrainConfig, main, reconstruction_loss, to_model_frames, training_frames

SMOKE = ["--sizes", "16", "32", "--frames-per-step", "2", "1", "--eval-clips", "2", "--eval-frames", "2",
         "--stats-frames", "4", "--log-every", "1", "--device", "cpu"]  # fmt: skip


def test_smoke_run_resumes_and_exports(tmp_path):
    from engine.checkpoint import load_state
    from engine.vae import FrameVAE

    ckpt, export = tmp_path / "ckpt", tmp_path / "vae.safetensors"
    first = main(["--ckpt", str(ckpt), "--export", str(export), "--steps", "2", *SMOKE])
    assert (first["start_step"], first["step"]) == (0, 2)
    assert load_checkpoint(ckpt)["step"] == 2
    assert (ckpt / "loss.png").stat().st_size > 1000

    second = main(["--ckpt", str(ckpt), "--export", str(export), "--steps", "3", *SMOKE])
    assert (second["start_step"], second["step"]) == (2, 3)
    state = load_checkpoint(ckpt)
    assert state["step"] == 3
    assert [s for s, _ in state["history"]["loss"]] == [1, 2, 3]  # the loss curve continues
    assert [s for s, _ in state["history"]["held-out PSNR 16 (dB)"]] == [2, 3]
    assert json.loads((ckpt / "summary.json").read_text())["step"] == 3
    assert set(second["psnr_db"]) == {"16", "32"}

    vae = FrameVAE()
    load_state(vae, export)
    assert torch.allclose(vae.shift, torch.tensor(second["latent_mean"]), atol=1e-3)
    assert torch.allclose(1 / vae.scale, torch.tensor(second["latent_std"]), rtol=1e-2, atol=1e-3)


def test_max_minutes_stops_before_training(tmp_path):
    summary = main(["--ckpt", str(tmp_path), "--steps", "5", "--max-minutes", "0", *SMOKE])
    assert summary["step"] == 0
    assert load_checkpoint(tmp_path)["step"] == 0


def test_training_frames_are_deterministic_and_vary_by_step():
    cfg = VaeTrainConfig(sizes=(16,), frames_per_step=(3,), clip_frames=2)
    a = training_frames(cfg, 5, 0, torch.device("cpu"), 3)
    assert a.shape == (3, 16, 16, 3) and a.dtype == torch.uint8
    assert torch.equal(a, training_frames(cfg, 5, 0, torch.device("cpu"), 3))
    assert not torch.equal(a, training_frames(cfg, 6, 0, torch.device("cpu"), 3))


def test_frame_pool_refreshes_and_draws_batches():
    cfg = VaeTrainConfig(sizes=(16,), frames_per_step=(4,), clip_frames=1, reuse=2)
    pool = FramePool(cfg, 0, torch.device("cpu"), start_step=0)
    assert len(pool.frames) == 8 and pool.fresh == 2
    before = pool.frames.clone()
    batch = pool.draw(step=0)
    assert batch.shape == (4, 3, 16, 16) and batch.min() >= -1 and batch.max() <= 1
    changed = (pool.frames != before).flatten(1).any(1)
    assert changed.tolist() == [True, True] + [False] * 6  # the two oldest frames were replaced
    assert torch.equal(pool.frames[:2], training_frames(cfg, 0, 0, torch.device("cpu"), 2))
    pool.draw(step=1)
    assert (pool.frames != before).flatten(1).any(1)[:4].all()


def test_frame_pool_without_reuse_trains_on_fresh_frames_only():
    cfg = VaeTrainConfig(sizes=(16,), frames_per_step=(3,), clip_frames=1, reuse=1)
    pool = FramePool(cfg, 0, torch.device("cpu"), start_step=0)
    batch = pool.draw(step=7)
    fresh = to_model_frames(training_frames(cfg, 7, 0, torch.device("cpu"), 3))
    for frame in batch:  # each is one of the fresh frames, maybe mirrored
        assert any(torch.equal(frame, f) or torch.equal(frame, f.flip(-1)) for f in fresh)


def test_reconstruction_loss_is_zero_only_for_a_perfect_reconstruction():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert reconstruction_loss(x, x, 0.5).item() == 0
    assert reconstruction_loss(x + 0.1, x, 0.5).item() == pytest.approx(0.1 + 0.01, rel=1e-4)  # no edge change
    assert reconstruction_loss(-x, x, 0.5).item() > 0.5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sizes": (100,), "frames_per_step": (4,)}, "multiples of 8"),
        ({"sizes": (32, 64), "frames_per_step": (4,)}, "one positive count per size"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"max_minutes": -1.0}, "max_minutes must be >= 0"),
        ({"reuse": 0}, "reuse must be >= 1"),
        ({"frames_per_step": (4096, 4)}, "frames_per_step \\* reuse may be at most"),
        ({"decoder_only": True}, "decoder_only needs init"),
    ],
)
def test_bad_config_is_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        VaeTrainConfig(**change)


def test_cli_reports_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--ckpt", str(tmp_path), "--sizes", "100"])
    assert "multiples of 8" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from train.common import save_checkpoint

    save_checkpoint({"step": 1, "model": {"nope": torch.zeros(1)}, "optimizer": {}, "history": {}}, tmp_path)
    with pytest.raises(ValueError, match="does not fit the current FrameVAE"):
        main(["--ckpt", str(tmp_path), "--steps", "2", *SMOKE])


def test_widths_and_blocks_shape_the_trained_vae(tmp_path):
    main(["--ckpt", str(tmp_path), "--steps", "1", "--widths", "8", "12", "16", "--blocks", "0", "1", "0", *SMOKE])
    state = load_checkpoint(tmp_path)["model"]
    assert state["encoder.0.weight"].shape[0] == 8
    assert state["encoder.1.weight"].shape == (12, 8, 3, 3)  # no ResBlock at 1/2 size
    assert state["encoder.2.conv1.weight"].shape[0] == 12  # the one ResBlock, at 1/4 size


def test_decoder_only_keeps_the_encoder_and_its_latent_statistics(tmp_path):
    from engine.checkpoint import load_state
    from engine.vae import FrameVAE

    init = tmp_path / "init.safetensors"
    main(["--ckpt", str(tmp_path / "a"), "--export", str(init), "--steps", "1", *SMOKE])
    out = tmp_path / "tuned.safetensors"
    main(["--ckpt", str(tmp_path / "b"), "--export", str(out), "--steps", "2", "--lr", "0.01", "--init", str(init),
          "--decoder-only", *SMOKE])  # fmt: skip
    before, after = FrameVAE(), FrameVAE()
    load_state(before, init)
    load_state(after, out)
    changed = {name for name, value in before.state_dict().items() if not torch.equal(value, after.state_dict()[name])}
    assert changed and all(name.startswith("decoder.") for name in changed)  # encoder, shift, scale: as init
