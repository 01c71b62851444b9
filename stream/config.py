"""Server settings: one frozen dataclass, validated once, passed everywhere."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lipar.config import LiparConfig

CODECS = ("h264", "vp8")
TOKEN_ENV = "LIPAR_STREAM_TOKEN"
WATCH_TOKEN_ENV = "LIPAR_STREAM_WATCH_TOKEN"
MIN_TOKEN_CHARS = 16  # a token a person can guess in a few thousand tries protects nothing
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port (tests)
    model: str = "tiny"
    device: str = "auto"  # "auto" = cuda when available, else cpu
    size: tuple[int, int] | None = None  # (height, width); None = the model's default size
    weights: str | None = None  # local checkpoint folder; None = the repo's engine/weights/<model>
    random_weights: bool = False  # serve before trained weights exist (timing, demos of the plumbing)
    lipar: LiparConfig | None = None  # None = the generator's default (on, model-calibrated thresholds)
    prompt: str = "a red ball bouncing right over a plain white background"  # plays until a viewer types one
    max_viewers: int = 8
    max_body_bytes: int = 64 * 1024  # an SDP offer is a few KB; anything larger is not an offer
    target_fps: float = 30.0  # the generator never produces faster than this
    bitrate: int | None = None  # bits/s; None = suited to the resolution (see video_bitrate)
    prefer_codec: str = "h264"  # used when the browser offers it; VP8 is always the fallback
    viewer_queue_frames: int = 2  # per-viewer frames waiting for the encoder; older ones are dropped
    stats_hz: float = 4.0
    max_prompt_chars: int = 500  # the generator's own limit (engine.text.MAX_PROMPT_CHARS)
    max_message_bytes: int = 16 * 1024  # data-channel messages larger than this are rejected unread
    connect_timeout_s: float = 10.0  # a peer that has not connected by then frees its viewer slot
    # ICE consent (RFC 7675) checks every consent_interval_s; this many missed in a row = a dead peer.
    # RFC 7675's 30 s would let a killed client hold its slot that long; 1 s x 4 frees it in ~6 s
    consent_interval_s: float = 1.0
    consent_failures: int = 4
    ice_loopback: bool = True  # offer 127.0.0.1 as a host candidate (machines with only loopback)
    # access (DESIGN.md section 8): a bind beyond loopback needs `token`; `watch_token` watches only
    token: str | None = None
    watch_token: str | None = None
    allowed_hosts: tuple[str, ...] = ()  # Host names (besides loopback and `host`) the server answers to
    allowed_origins: tuple[str, ...] = ()  # other pages (scheme://host:port) that may POST offers
    # per-viewer control messages: a steady rate, and a burst on top (typing, toggling)
    messages_per_s: float = 10.0
    message_burst: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if not self.prompt.strip():
            raise ValueError("prompt (the initial prompt) must not be empty")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ValueError(f"size must be (height, width) with positive values, got {self.size}")
        if self.max_viewers < 1:
            raise ValueError(f"max_viewers must be >= 1, got {self.max_viewers}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if not self.target_fps > 0:
            raise ValueError(f"target_fps must be > 0, got {self.target_fps}")
        if self.bitrate is not None and self.bitrate < 100_000:
            raise ValueError(f"bitrate must be >= 100000 bits/s or None, got {self.bitrate}")
        if self.prefer_codec not in CODECS:
            raise ValueError(f"prefer_codec must be one of {CODECS}, got {self.prefer_codec!r}")
        if self.viewer_queue_frames < 1:
            raise ValueError(f"viewer_queue_frames must be >= 1, got {self.viewer_queue_frames}")
        if not self.stats_hz > 0:
            raise ValueError(f"stats_hz must be > 0, got {self.stats_hz}")
        if self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars must be >= 1, got {self.max_prompt_chars}")
        if self.max_message_bytes < self.max_prompt_chars:
            raise ValueError(
                f"max_message_bytes ({self.max_message_bytes}) must be >= max_prompt_chars "
                f"({self.max_prompt_chars}) so a valid prompt fits in a message"
            )
        if not self.connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {self.connect_timeout_s}")
        if not self.consent_interval_s > 0 or self.consent_failures < 1:
            raise ValueError(
                f"consent_interval_s must be > 0 and consent_failures >= 1, got "
                f"{self.consent_interval_s} and {self.consent_failures}"
            )
        for name in ("token", "watch_token"):
            value = getattr(self, name)
            if value is not None and (len(value) < MIN_TOKEN_CHARS or not value.isascii() or not value.isprintable()):
                raise ValueError(f"{name} must be at least {MIN_TOKEN_CHARS} printable ASCII characters")
        if self.watch_token is not None and self.token is None:
            raise ValueError("a watch token needs a token too (--token): otherwise anyone could steer")
        if self.watch_token is not None and self.watch_token == self.token:
            raise ValueError("the watch token must differ from the token")
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(
                f"binding to {self.host} exposes the stream beyond this machine: "
                f"pass --token (or set {TOKEN_ENV}) with at least {MIN_TOKEN_CHARS} characters"
            )
        for origin in self.allowed_origins:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError(f"allowed origins look like http://host:port, got {origin!r}")
        if not self.messages_per_s > 0 or self.message_burst < 1:
            raise ValueError(
                f"messages_per_s must be > 0 and message_burst >= 1, got {self.messages_per_s} and {self.message_burst}"
            )

    @property
    def host_names(self) -> frozenset[str]:
        """Host header values (without the port) this server answers to: loopback, its bind address, and
        `allowed_hosts`. Empty = any: a wildcard bind with no list, where the token is the protection."""
        if self.host in ("0.0.0.0", "::") and not self.allowed_hosts:
            return frozenset()
        names = {*LOOPBACK_NAMES, *self.allowed_hosts}
        if self.host not in ("0.0.0.0", "::"):
            names.add(f"[{self.host}]" if ":" in self.host else self.host)
        return frozenset(n.lower() for n in names)


def video_bitrate(height: int, width: int, fps: float) -> int:
    """A bitrate suited to generated video of this size: 0.3 bits per pixel, within [0.5, 8] Mbps.

    Generated frames are full of fine texture that changes every frame, so they need more bits
    than camera video of the same size; aiortc's own ceiling (1.5 Mbps VP8) blurs 832x480 output.
    """
    return int(min(max(0.3 * height * width * fps, 500_000), 8_000_000))
