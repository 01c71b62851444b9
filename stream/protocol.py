"""The `control` data-channel protocol: JSON objects with a `type` field, version 1.

Client -> server messages become typed commands here (validated: a bad message raises
ProtocolError with a message fit to show the user). Server -> client messages are built by
`server_message`. The README section in stream/README_SECTION.md documents every field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
CHANNEL_LABEL = "control"
MODES = ("t2v", "v2v")
MAX_TRANSITION_FRAMES = 1000


class ProtocolError(ValueError):
    """A client message that cannot be applied; its text is sent back in an `error` message."""


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
            raise ProtocolError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")


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
    try:
        msg = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError('message must be a JSON object with a string "type" field')
    version = msg.pop("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r}; this server speaks {PROTOCOL_VERSION}"
        )
    kind = msg.pop("type")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {', '.join(_FIELDS)}")
    required, optional = _FIELDS[kind]
    missing = required - msg.keys()
    if missing:
        raise ProtocolError(f"{kind!r} message is missing {', '.join(sorted(missing))}")
    unexpected = msg.keys() - required - optional
    if unexpected:
        raise ProtocolError(f"{kind!r} message has unexpected field(s) {', '.join(sorted(unexpected))}")

    if kind == "prompt":
        text = _typed(msg["text"], str, "prompt text")
        if len(text) > max_prompt_chars:
            raise ProtocolError(f"prompt is {len(text)} characters; the limit is {max_prompt_chars}")
        frames = _typed(msg.get("transition_frames", 0), int, "transition_frames")
        return SetPrompt(text, frames)
    if kind == "mode":
        return SetMode(_typed(msg["mode"], str, "mode"))
    if kind == "lipar":
        enabled = _typed(msg["enabled"], bool, "enabled")
        thresholds = _typed(msg.get("thresholds", {}), dict, "thresholds")
        unknown = thresholds.keys() - {"tau_short", "tau_long"}
        if unknown:
            raise ProtocolError(f"thresholds has unexpected field(s) {', '.join(sorted(unknown))}")
        taus = {
            name: float(_typed(value, (int, float), f"thresholds.{name}"))
            for name, value in thresholds.items()
        }
        return SetLipar(enabled, taus.get("tau_short"), taus.get("tau_long"))
    return {"reset": Reset, "pause": Pause, "resume": Resume}[kind]()


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
