"""The prompt-following measure itself, on frames whose answer is known."""

import json

import numpy as np
import pytest

from engine.config import get_config
from train.dataset import COLORS
from train.evaluate import color_names, dominant_color, object_region, v2v_source


def test_each_named_colour_maps_to_itself():
    pixels = np.array(list(COLORS.values()), np.uint8)
    assert [list(COLORS)[i] for i in color_names(pixels)] == list(COLORS)


def test_rendered_ball_is_found_and_named():
    for color in ("red", "blue", "yellow"):
        video, masks = v2v_source(color, 3, 64)
        frame = video[1]
        assert dominant_color(frame, masks[1]) == color
        region = object_region(frame, "black")
        overlap = (region & masks[1]).sum() / masks[1].sum()
        assert overlap > 0.9 and region.sum() < 1.3 * masks[1].sum()


def test_too_small_a_region_has_no_colour():
    frame = np.zeros((16, 16, 3), np.uint8)
    region = np.zeros((16, 16), bool)
    region[0, :3] = True
    assert dominant_color(frame, region) is None


def test_cli_measures_all_three_on_the_shipped_model(capsys):
    from train.evaluate import EVAL_COLORS, EVAL_PAIRS, main

    result = main(["--device", "cpu", "--frames", "1"])
    rates = json.loads(capsys.readouterr().out.splitlines()[0])
    sigmas = rates.pop("v2v_sigmas")
    assert (rates.pop("lipar"), rates.pop("dilation")) == (True, 1)  # the shipped default
    assert set(rates) == {"t2v", "v2v_procedural", "v2v_photo"}
    assert all(0.0 <= r <= 1.0 for r in rates.values())
    assert sigmas == get_config("tiny").v2v_schedule.sigmas
    assert set(result["t2v"]["per_color"]) == set(EVAL_COLORS)
    assert len(result["v2v_photo"]["per_pair"]) == len(EVAL_PAIRS)


def test_cli_tries_another_video_to_video_schedule(capsys):
    from train.evaluate import main

    main(["--device", "cpu", "--frames", "1", "--v2v-timesteps", "500", "250", "--v2v-shift", "1"])
    assert json.loads(capsys.readouterr().out.splitlines()[0])["v2v_sigmas"] == [0.5, 0.25]
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--v2v-timesteps", "200", "500"])
    assert "must decrease" in capsys.readouterr().err


def test_cli_sets_lipar_for_video_to_video(capsys):
    from train.evaluate import main

    main(["--device", "cpu", "--frames", "1", "--no-lipar"])
    assert json.loads(capsys.readouterr().out.splitlines()[0])["lipar"] is False
    main(["--device", "cpu", "--frames", "1", "--lipar-dilation", "2"])
    assert json.loads(capsys.readouterr().out.splitlines()[0])["dilation"] == 2
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--lipar-dilation", "-1"])
    assert "--lipar-dilation must be >= 0" in capsys.readouterr().err
