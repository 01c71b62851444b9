import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.protocol import (
    PROTOCOL_VERSION,
    Pause,
    ProtocolError,
    Reset,
    Resume,
    SetLipar,
    SetMode,
    SetPrompt,
    parse_command,
    parse_offer,
    server_message,
)


def parse(message: object) -> object:
    raw = message if isinstance(message, (str, bytes)) else json.dumps(message)
    return parse_command(raw, max_bytes=16 * 1024, max_prompt_chars=2000)


@pytest.mark.parametrize(
    "message, command",
    [
        ({"type": "prompt", "text": "a blue ball"}, SetPrompt("a blue ball", 0)),
        (
            {"type": "prompt", "text": "a blue ball", "transition_frames": 8, "v": 1},
            SetPrompt("a blue ball", 8),
        ),
        ({"type": "mode", "mode": "v2v"}, SetMode("v2v")),
        ({"type": "mode", "mode": "t2v"}, SetMode("t2v")),
        ({"type": "lipar", "enabled": False}, SetLipar(False)),
        (
            {"type": "lipar", "enabled": True, "thresholds": {"tau_short": 0.1, "tau_long": 1}},
            SetLipar(True, 0.1, 1.0),
        ),
        ({"type": "lipar", "enabled": True, "thresholds": {"tau_long": 0.5}}, SetLipar(True, None, 0.5)),
        ({"type": "reset"}, Reset()),
        ({"type": "pause"}, Pause()),
        ({"type": "resume"}, Resume()),
    ],
)
def test_valid_messages_become_commands(message: dict, command: object) -> None:
    assert parse(message) == command


@pytest.mark.parametrize(
    "message, error",
    [
        (b'{"type": "reset"}', "binary messages are not supported"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", 'JSON object with a string "type"'),
        ({"text": "no type"}, 'JSON object with a string "type"'),
        ({"type": 3}, 'JSON object with a string "type"'),
        ({"type": "explode"}, "unknown message type 'explode'; expected one of prompt, mode"),
        ({"type": "reset", "v": 2}, "unsupported protocol version 2"),
        ({"type": "prompt"}, "'prompt' message is missing text"),
        ({"type": "prompt", "text": "x", "transition": 3}, "unexpected field(s) transition"),
        ({"type": "prompt", "text": 42}, "prompt text has the wrong type"),
        ({"type": "prompt", "text": "   "}, "prompt text has no letters or digits"),
        ({"type": "prompt", "text": "\u200b\u200b\u200b"}, "prompt text has no letters or digits"),
        ({"type": "prompt", "text": "a\ud800b"}, "unpaired surrogate"),
        ({"type": "prompt", "text": "a ball\x00"}, "control characters"),
        ({"type": "reset", "v": True}, "unsupported protocol version true"),
        ({"type": "reset", "v": 1.0}, "unsupported protocol version 1.0"),
        ({"type": "x" * 5000}, "unknown message type '" + "x" * 40 + "';"),
        ('{"type": "reset", "a": ' + "[" * 1000 + "]" * 1000 + "}", "nested deeper than 4 levels"),
        ('{"type": "reset", "a": [[[[[1]]]]]}', "nested deeper than 4 levels"),
        ('{"type": "lipar", "enabled": true, "thresholds": {"tau_short": 1' + "0" * 400 + "}}", "401 digits"),
        ('{"type": "lipar", "enabled": true, "thresholds": {"tau_short": 1e999}}', "tau_short must be a finite"),
        ({"type": "prompt", "text": "x" * 10_000}, "prompt is 10000 characters; the limit is 2000"),
        ({"type": "prompt", "text": "x", "transition_frames": -1}, "transition_frames must be in [0, 1000]"),
        (
            {"type": "prompt", "text": "x", "transition_frames": 5000},
            "transition_frames must be in [0, 1000]",
        ),
        ({"type": "prompt", "text": "x", "transition_frames": 2.5}, "transition_frames has the wrong type"),
        ({"type": "prompt", "text": "x", "transition_frames": True}, "transition_frames must be a number"),
        ({"type": "mode", "mode": "camera"}, "mode must be one of t2v, v2v; got 'camera'"),
        ({"type": "lipar", "enabled": "yes"}, "enabled has the wrong type"),
        ({"type": "lipar", "enabled": True, "thresholds": [0.1]}, "thresholds has the wrong type"),
        (
            {"type": "lipar", "enabled": True, "thresholds": {"tau": 0.1}},
            "thresholds has unexpected field(s) tau",
        ),
        ({"type": "lipar", "enabled": True, "thresholds": {"tau_short": -0.1}}, "tau_short must be a finite"),
        ('{"type": "lipar", "enabled": true, "thresholds": {"tau_long": NaN}}', "NaN is not a JSON number"),
        ({"type": "pause", "now": True}, "unexpected field(s) now"),
    ],
)
def test_invalid_messages_say_what_is_wrong(message: object, error: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(message)
    assert error in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
            ),
            max_leaves=20,
        ).map(json.dumps),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["prompt", "mode", "lipar", "reset", "pause", "resume"])},
            optional={
                "text": st.text(max_size=40),
                "transition_frames": st.integers() | st.floats() | st.booleans(),
                "mode": st.text(max_size=5),
                "enabled": st.booleans() | st.integers(),
                "thresholds": st.dictionaries(st.sampled_from(["tau_short", "tau_long", "x"]), st.floats()),
                "v": st.integers() | st.floats() | st.booleans(),
            },
        ).map(json.dumps),
    )
)
def test_any_input_is_a_command_or_a_protocol_error(raw: str) -> None:
    # the server's contract: nothing a client sends reaches its catch-all handler
    try:
        command = parse(raw)
    except ProtocolError as exc:
        assert 0 < len(str(exc)) <= 300
    else:
        assert isinstance(command, (SetPrompt, SetMode, SetLipar, Reset, Pause, Resume))


def test_offer_bodies_are_parsed_with_the_same_limits() -> None:
    assert parse_offer(json.dumps({"sdp": "v=0", "type": "offer"}).encode()) == "v=0"
    for body, error in [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"sdp": "v=0", "type": "offer", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper"),
        (b'{"sdp": "v=0", "type": "offer", "x": 1' + b"0" * 5000 + b"}", "5001 digits"),
        (b'{"sdp": "v=0", "type": "answer"}', 'body must be JSON: {"sdp"'),
    ]:
        with pytest.raises(ProtocolError, match=error):
            parse_offer(body)


def test_oversized_message_is_rejected_before_parsing() -> None:
    raw = json.dumps({"type": "prompt", "text": "x" * 100})
    with pytest.raises(ProtocolError, match=r"message is \d+ bytes; the limit is 64"):
        parse_command(raw, max_bytes=64, max_prompt_chars=2000)


def test_protocol_errors_are_value_errors() -> None:
    # the server answers every ValueError (the generator's included) with an `error` message
    assert issubclass(ProtocolError, ValueError)


def test_server_messages_carry_type_and_version() -> None:
    msg = json.loads(server_message("error", message="bad"))
    assert msg == {"type": "error", "v": PROTOCOL_VERSION, "message": "bad"}
