"""The command line: end-to-end generation and a clear one-line error for each bad input."""

import numpy as np
import pytest

import app
from engine.video_io import read_frames, write_video


def test_generate_writes_exactly_n_frames(tmp_path, cli):
    out = tmp_path / "clip.mp4"
    code, err = cli(
        "generate",
        "--prompt",
        "a red ball over a gray wall",
        "--frames",
        "5",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--size",
        "64x64",
        "--random-weights",
    )
    assert code == 0, err
    frames = list(read_frames(out))
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3)


def test_generate_video_to_video(tmp_path, cli):
    src = tmp_path / "src.mp4"
    write_video([np.full((48, 64, 3), 40 * i, np.uint8) for i in range(6)], src, fps=8)
    out = tmp_path / "out.mp4"
    code, err = cli(
        "generate",
        "--prompt",
        "a blue square",
        "--frames",
        "4",
        "--out",
        str(out),
        "--source",
        str(src),
        "--device",
        "cpu",
        "--size",
        "64x64",
        "--random-weights",
    )
    assert code == 0, err
    assert len(list(read_frames(out))) == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "huge"], "unknown model"),
        (["--size", "100x64"], "multiples of 16"),
        (["--source", "/nonexistent.mp4"], "not found"),
        (["--source", "BADFILE"], "cannot read"),
        (["--frames", "10000", "--source", "SHORT"], "fewer than"),
        (["--prompt", "x" * 600], "500"),
        (["--text-encoder", "/nonexistent_text_encoder"], "does not exist"),
    ],
)
def test_generate_bad_input_gives_one_line_error(tmp_path, cli, extra, message):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    short = tmp_path / "short.mp4"
    write_video([np.zeros((32, 32, 3), np.uint8)] * 3, short, fps=8)
    extra = [str(bad) if e == "BADFILE" else str(short) if e == "SHORT" else e for e in extra]
    args = [
        "generate",
        "--prompt",
        "a red ball",
        "--frames",
        "3",
        "--out",
        str(tmp_path / "o.mp4"),
        "--device",
        "cpu",
        "--size",
        "64x64",
        "--random-weights",
        *extra,
    ]
    code, err = cli(*args)
    assert code == 2
    cli.assert_one_line_error(err, message)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--frames", "0"], "positive integer"),
        (["--frames", "ten"], "positive integer"),
        (["--size", "big"], "HEIGHTxWIDTH"),
    ],
)
def test_argument_errors_exit_nonzero(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        app.main(["generate", "--prompt", "p", "--out", str(tmp_path / "o.mp4"), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
