import dataclasses

import pytest

from engine.config import CONFIGS, KVWindow, Schedule, get_config, parse_window


def test_wan_preset_facts():
    c = get_config("wan2.1-1.3b")
    assert (c.dim, c.layers, c.heads, c.ffn_dim, c.latent_channels, c.text_dim) == (1536, 30, 12, 8960, 16, 4096)
    assert c.tokens_per_frame(480, 832) == 1560
    assert c.frames_per_latent == 4
    assert (c.window.sinks, c.window.m) == (1, 6)


def test_shifted_schedule_matches_self_forcing():
    sig = Schedule((1000.0, 750.0, 500.0, 250.0), shift=5.0).sigmas
    assert [round(s * 1000, 1) for s in sig] == [1000.0, 937.5, 833.3, 625.0]
    assert all(a > b for a, b in zip(sig, sig[1:]))


def test_every_preset_has_both_schedules_and_lipar_defaults():
    for c in CONFIGS.values():
        assert c.t2v_schedule.sigmas[0] == 1.0
        assert c.v2v_schedule.sigmas[0] < 1.0  # SDEdit keeps some of the source
        assert c.lipar.tau_short > 0 and c.lipar.tau_long > 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: get_config("huge"), "unknown model"),
        (lambda: KVWindow(sinks=-1), "sinks"),
        (lambda: KVWindow(block=0), "block"),
        (
            lambda: dataclasses.replace(get_config("tiny"), sampler="ddim"),
            "unknown sampler 'ddim'; choose one of: euler",
        ),
        (lambda: KVWindow(m=0), "m must"),
        (lambda: Schedule(()), "at least one"),
        (lambda: Schedule((500.0, 750.0)), "decrease"),
        (lambda: Schedule((1500.0,)), "lie in"),
        (lambda: get_config("tiny").latent_size(100, 128), "multiples of 16"),
        (lambda: get_config("tiny").latent_size(0, 128), "multiples of 16"),
    ],
)
def test_bad_config_values_give_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_self_forcing_preset_runs_their_released_setup():
    sf, wan = get_config("self-forcing"), get_config("wan2.1-1.3b")
    assert (sf.frames_per_block, sf.window.sinks, sf.window.slots, sf.sampler) == (3, 0, 21, "renoise")
    assert (wan.frames_per_block, wan.sampler) == (1, "euler")  # our frame-wise preset is unchanged
    assert [round(s * 1000, 1) for s in sf.t2v_schedule.sigmas] == [1000.0, 937.5, 833.3, 625.0]
    assert (sf.dim, sf.layers, sf.text_dim) == (wan.dim, wan.layers, wan.text_dim)


@pytest.mark.parametrize(
    "text, block, window",
    [
        ("1,6", 1, KVWindow(1, 6, 1)),
        (" 0,18 ", 3, KVWindow(0, 18, 3)),
        ("global", 3, KVWindow(0, 18, 3)),  # Self-Forcing's global attention: 21 frames, the block included
        ("GLOBAL:9", 3, KVWindow(0, 6, 3)),
        ("global:2", 1, KVWindow(0, 1, 1)),
    ],
)
def test_parse_window(text, block, window):
    assert parse_window(text, block) == window
    assert parse_window(text, block).slots == window.sinks + window.m + block


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "takes SINKS,M"),
        ("6", "takes SINKS,M"),
        ("1,6,2", "takes SINKS,M"),
        ("-1,6", "takes SINKS,M"),
        ("one,six", "takes SINKS,M"),
        ("1,0", "M \\(clean frames after the sinks\\) must be >= 1"),
        ("global:3", "N > the block's 3 frame"),
        ("global:x", "whole number"),
        ("global:", "whole number"),
        ("local:4", "takes SINKS,M"),
    ],
)
def test_bad_window_strings_give_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_window(text, block=3)
