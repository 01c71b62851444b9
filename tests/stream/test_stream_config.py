import pytest

from stream.config import ServerConfig, video_bitrate


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"port": 70000}, "port must be in"),
        ({"prompt": " "}, "prompt (the initial prompt) must not be empty"),
        ({"size": (0, 128)}, "size must be (height, width)"),
        ({"max_viewers": 0}, "max_viewers must be >= 1"),
        ({"max_body_bytes": 10}, "max_body_bytes must be >= 1024"),
        ({"target_fps": 0}, "target_fps must be > 0"),
        ({"bitrate": 1000}, "bitrate must be >= 100000"),
        ({"prefer_codec": "av1"}, "prefer_codec must be one of"),
        ({"viewer_queue_frames": 0}, "viewer_queue_frames must be >= 1"),
        ({"stats_hz": 0}, "stats_hz must be > 0"),
        ({"max_prompt_chars": 0}, "max_prompt_chars must be >= 1"),
        ({"max_prompt_chars": 5000, "max_message_bytes": 4000}, "so a valid prompt fits"),
        ({"connect_timeout_s": 0}, "connect_timeout_s must be > 0"),
        ({"consent_failures": 0}, "consent_failures >= 1"),
        ({"host": "0.0.0.0"}, "binding to 0.0.0.0 exposes the stream beyond this machine: pass --token"),
        ({"host": "192.168.1.5"}, "pass --token (or set LIPAR_STREAM_TOKEN)"),
        ({"token": "short"}, "token must be at least 16 printable ASCII"),
        ({"token": "é" * 20}, "token must be at least 16 printable ASCII"),
        ({"watch_token": "w" * 16}, "a watch token needs a token too"),
        ({"token": "t" * 16, "watch_token": "t" * 16}, "must differ"),
        ({"allowed_origins": ("example.com",)}, "allowed origins look like http://host:port"),
        ({"messages_per_s": 0}, "messages_per_s must be > 0"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict, error: str) -> None:
    with pytest.raises(ValueError) as info:
        ServerConfig(**kwargs)
    assert error in str(info.value)


def test_prompt_limit_matches_the_generators() -> None:
    # a longer limit here would let prompts through that the generator then refuses
    from engine.text import MAX_PROMPT_CHARS

    assert ServerConfig().max_prompt_chars == MAX_PROMPT_CHARS


def test_bitrate_grows_with_resolution_within_bounds() -> None:
    small, wan, huge = video_bitrate(128, 128, 30), video_bitrate(480, 832, 16), video_bitrate(2160, 3840, 60)
    assert small == 500_000  # floor: tiny frames still need a usable picture
    assert small < wan < huge
    assert wan > 1_500_000  # above aiortc's VP8 ceiling, the reason this exists
    assert huge == 8_000_000


def test_loopback_binds_need_no_token_and_other_binds_take_one() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServerConfig(host=host)
    assert ServerConfig(host="0.0.0.0", token="t" * 16).host == "0.0.0.0"


def test_host_names_are_loopback_plus_the_bind_address_or_any_on_a_wildcard_bind() -> None:
    assert ServerConfig().host_names == {"localhost", "127.0.0.1", "[::1]"}
    assert "10.0.0.7" in ServerConfig(host="10.0.0.7", token="t" * 16).host_names
    assert ServerConfig(host="0.0.0.0", token="t" * 16).host_names == frozenset()  # the token protects
    named = ServerConfig(host="0.0.0.0", token="t" * 16, allowed_hosts=("Stream.Lan",)).host_names
    assert "stream.lan" in named and "127.0.0.1" in named


def test_serve_refuses_an_open_bind_and_a_short_token_with_one_line(capsys, monkeypatch) -> None:
    import app

    monkeypatch.delenv("LIPAR_STREAM_TOKEN", raising=False)
    assert app.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "error: binding to 0.0.0.0 exposes the stream" in capsys.readouterr().err
    assert app.main(["serve", "--token", "short"]) == 2
    assert "error: token must be at least 16" in capsys.readouterr().err
    monkeypatch.setenv("LIPAR_STREAM_TOKEN", "short-from-env")  # the environment is read too
    assert app.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "error: token must be at least 16" in capsys.readouterr().err
