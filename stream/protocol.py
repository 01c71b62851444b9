"""The `control` data-channel protocol: JSON objects with a `type` field, version 1.

Client -> server messages become typed commands here (validated: a bad message raises
ProtocolError with a message fit to show the user). Server -> client messages are built by
`server_message`. The README's "Control protocol" section documents every field.

Everything a client sends is parsed here, the `POST /offer` body too, with the same limits:
size, nesting depth and number length are checked before any value is used, so a hostile
message costs a bounded amount of work and always ends as a ProtocolError.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
CHANNEL_LABEL = "control"
MODES = ("t2v", "v2v")
MAX_TRANSITION_FRAMES = 1000
MAX_DEPTH = 4  # the deepest valid message is {"thresholds": {...}}: 2 levels; room for a field or two
MAX_NUMBER_CHARS = 32  # 1e-300 and 18-digit integers fit; a 4,000-digit integer is not a setting
_OFFER_FORMAT = 'body must be JSON: {"sdp": "<offer SDP>", "type": "offer"}'


class ProtocolError(ValueError):
    """A client message that cannot be applied; its text is sent back in an `error` message."""


def parse_json(raw: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """JSON text -> value, refusing what only an attacker sends: deep nesting, huge numbers, NaN."""
    try:
        value = json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant)
    except RecursionError:  # the C scanner's own guard fires long before the stack is at risk
        raise ProtocolError(f"JSON is nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    if _depth(value) > max_depth:
        raise ProtocolError(f"JSON is nested deeper than {max_depth} levels")
    return value


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ProtocolError(f"a number has {len(text)} digits; the limit is {MAX_NUMBER_CHARS}")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ProtocolError(f"a number has {len(text)} characters; the limit is {MAX_NUMBER_CHARS}")
    return float(text)


def _refuse_constant(name: str) -> float:
    raise ProtocolError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in item)
    return deepest


def parse_offer(body: bytes) -> str:
    """The `POST /offer` body -> the offer's SDP text (validated separately, by stream.sdp)."""
    try:
        text = body.decode("utf-8")  # JSON is UTF-8 (RFC 8259 section 8.1), whatever charset= says
    except UnicodeDecodeError:
        raise ProtocolError("body is not UTF-8 text") from None
    try:
        params = parse_json(text)
    except ProtocolError as exc:
        raise ProtocolError(f"{_OFFER_FORMAT} ({exc})") from None
    if not isinstance(params, dict) or params.get("type") != "offer" or not isinstance(params.get("sdp"), str):
        raise ProtocolError(_OFFER_FORMAT)
    return params["sdp"]


def check_text(text: str, max_chars: int) -> str:
    """A prompt as the text encoder can take it: printable, within the limit, with something visible."""
    if len(text) > max_chars:
        raise ProtocolError(f"prompt is {len(text)} characters; the limit is {max_chars}")
    categories = {unicodedata.category(c) for c in text}
    if "Cs" in categories:  # a lone surrogate ("\ud800") is valid JSON but not Unicode text
        raise ProtocolError("prompt text contains an unpaired surrogate (not valid Unicode)")
    if "Cc" in categories:  # NUL, escape sequences, newlines: nothing a one-line prompt needs
        raise ProtocolError("prompt text contains control characters")
    if not any(c.isalnum() for c in text):  # blanks, zero-width spaces, punctuation only
        raise ProtocolError("prompt text has no letters or digits")
    return text


@dataclass(frozen=True)
class SetPrompt:
    text: str
    transition_frames: int = 0

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ProtocolError("prompt text is empty")
        if not 0 <= self.transition_frames <= MAX_TRANSITION_FRAMES:
            raise ProtocolError(
                f"transition_frames must be in [0, {MAX_TRANSITION_FRAMES}], got {self.transition_frames}"
            )


@dataclass(frozen=True)
class SetMode:
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ProtocolError(f"mode must be one of {', '.join(MODES)}; got {self.mode[:40]!r}")


@dataclass(frozen=True)
class SetLipar:
    enabled: bool
    tau_short: float | None = None  # None keeps the model's calibrated threshold
    tau_long: float | None = None

    def __post_init__(self) -> None:
        for name in ("tau_short", "tau_long"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ProtocolError(f"thresholds.{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


Command = SetPrompt | SetMode | SetLipar | Reset | Pause | Resume

# message type -> (required fields, optional fields)
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "prompt": (frozenset({"text"}), frozenset({"transition_frames"})),
    "mode": (frozenset({"mode"}), frozenset()),
    "lipar": (frozenset({"enabled"}), frozenset({"thresholds"})),
    "reset": (frozenset(), frozenset()),
    "pause": (frozenset(), frozenset()),
    "resume": (frozenset(), frozenset()),
}


def parse_command(raw: str | bytes, *, max_bytes: int, max_prompt_chars: int) -> Command:
    """One client message -> one command; ProtocolError says what is wrong with it."""
    if isinstance(raw, bytes):
        raise ProtocolError("binary messages are not supported: send JSON text")
    size = len(raw.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise ProtocolError(f"message is {size} bytes; the limit is {max_bytes}")
    msg = parse_json(raw)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError('message must be a JSON object with a string "type" field')
    version = msg.pop("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:  # `true` and 1.0 are not version 1
        raise ProtocolError(
            f"unsupported protocol version {json.dumps(version)[:20]}; this server speaks {PROTOCOL_VERSION}"
        )
    kind = msg.pop("type")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown message type {kind[:40]!r}; expected one of {', '.join(_FIELDS)}")
    required, optional = _FIELDS[kind]
    missing = required - msg.keys()
    if missing:
        raise ProtocolError(f"{kind!r} message is missing {', '.join(sorted(missing))}")
    unexpected = msg.keys() - required - optional
    if unexpected:
        raise ProtocolError(f"{kind!r} message has unexpected field(s) {_names(unexpected)}")

    if kind == "prompt":
        text = check_text(_typed(msg["text"], str, "prompt text"), max_prompt_chars)
        frames = _typed(msg.get("transition_frames", 0), int, "transition_frames")
        return SetPrompt(text, frames)
    if kind == "mode":
        return SetMode(_typed(msg["mode"], str, "mode"))
    if kind == "lipar":
        enabled = _typed(msg["enabled"], bool, "enabled")
        thresholds = _typed(msg.get("thresholds", {}), dict, "thresholds")
        unknown = thresholds.keys() - {"tau_short", "tau_long"}
        if unknown:
            raise ProtocolError(f"thresholds has unexpected field(s) {_names(unknown)}")
        taus = {name: float(_typed(value, (int, float), f"thresholds.{name}")) for name, value in thresholds.items()}
        return SetLipar(enabled, taus.get("tau_short"), taus.get("tau_long"))
    return {"reset": Reset, "pause": Pause, "resume": Resume}[kind]()


def _names(keys: set[str]) -> str:
    """Field names for an error message, each cut short: a client chooses them."""
    return ", ".join(sorted(json.dumps(k)[1:-1][:40] for k in keys)[:5])


def _typed(value: Any, types: type | tuple[type, ...], name: str) -> Any:
    # bool is an int in Python, but `true` is never a frame count or a threshold
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ProtocolError(f"{name} must be a number, got {json.dumps(value)}")
    if not isinstance(value, types):
        raise ProtocolError(f"{name} has the wrong type: got {json.dumps(value)[:40]}")
    return value


def server_message(kind: str, **fields: Any) -> str:
    """A server -> client message: {"type": kind, "v": 1, **fields} as JSON text."""
    return json.dumps({"type": kind, "v": PROTOCOL_VERSION, **fields}, separators=(",", ":"))
