"""`app.py` with checkpoint files, --window, --sampler and --vae: good runs and one-line errors."""

import pytest
import torch

from engine.config import get_config
from engine.dit import CausalDiT, init_weights
from engine.video_io import read_frames

BASE = ["--prompt", "a red ball", "--frames", "3", "--device", "cpu", "--size", "64x64"]


def test_generate_with_a_self_forcing_style_pt_window_and_sampler(tmp_path, cli):
    dit = CausalDiT(get_config("tiny"))
    init_weights(dit, seed=4)
    sd = {f"model.{k}": v for k, v in dit.state_dict().items()}
    torch.save({"generator": sd, "generator_ema": sd}, tmp_path / "ckpt.pt")
    out = tmp_path / "o.mp4"
    code, err = cli(
        "generate", *BASE, "--out", str(out), "--weights", str(tmp_path / "ckpt.pt"),
        "--window", "global:4", "--sampler", "renoise",
    )  # fmt: skip
    assert code == 0, err
    assert len(list(read_frames(out))) == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--window", "1,6,2"], "--window takes SINKS,M"),
        (["--window", "global:0"], "global:N needs"),
        (["--sampler", "ddim"], "unknown sampler 'ddim'"),
        (["--weights", "WRONG"], "does not fit CausalDiT: 1 missing ['head.head.weight']"),
        (["--weights", "/no/such/ckpt.pt"], "weights not found"),
        (["--vae", "WRONG", "--random-weights"], "does not fit FrameVAE"),
        (["--vae", "/no/such/taew2_1.pth", "--random-weights"], "weights file not found"),
    ],
)
def test_bad_checkpoint_options_give_one_line_errors(tmp_path, cli, extra, message):
    dit = CausalDiT(get_config("tiny"))
    state = {k: v for k, v in dit.state_dict().items() if k != "head.head.weight"}
    torch.save({"generator_ema": state}, tmp_path / "wrong.pt")
    extra = [str(tmp_path / "wrong.pt") if e == "WRONG" else e for e in extra]
    random = [] if "--random-weights" in extra or "--weights" in extra else ["--random-weights"]
    code, err = cli("generate", *BASE, "--out", str(tmp_path / "o.mp4"), *random, *extra)
    assert code == 2
    cli.assert_one_line_error(err, message)
