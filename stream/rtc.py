"""WebRTC transport settings the server applies once: codec order, encoder bitrate, ICE addresses.

aiortc and aioice read these from module-level names with no per-connection option, so they
are set process-wide; one process serves one stream, so one setting is the right scope.
"""

from __future__ import annotations

import logging

from aiortc import RTCRtpCodecCapability, RTCRtpSender

logger = logging.getLogger(__name__)

_MIME = {"h264": "video/H264", "vp8": "video/VP8"}


def codec_preferences(prefer: str) -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs with `prefer` first; the answer then picks it whenever the offer has it."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return sorted(codecs, key=lambda c: c.mimeType != _MIME[prefer])


def apply_bitrate(bitrate: int) -> None:
    """Start both encoders at `bitrate` and let congestion control (REMB) move them only below it.

    aiortc's ceilings (1.5 Mbps VP8, 3 Mbps H.264) and its 0.5 Mbps VP8 start are tuned for
    camera video; the floor stays aiortc's so a viewer on a slow link still gets a picture.
    """
    from aiortc.codecs import h264, vpx

    for module in (vpx, h264):
        module.DEFAULT_BITRATE = bitrate
        module.MAX_BITRATE = bitrate
        module.MIN_BITRATE = min(module.MIN_BITRATE, bitrate)
    logger.info("video encoders start at %.2f Mbps", bitrate / 1e6)


def allow_loopback_candidates() -> None:
    """Offer 127.0.0.1 as an ICE host candidate too.

    aioice skips loopback, so on a machine whose only interface is loopback (containers, CI)
    neither side has a candidate and no browser can connect. Chromium needs
    --allow-loopback-in-peer-connection for the same reason on its side.
    """
    from aioice import ice

    if getattr(ice.get_host_addresses, "_with_loopback", False):
        return
    discover = ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = discover(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    with_loopback._with_loopback = True  # type: ignore[attr-defined]
    ice.get_host_addresses = with_loopback


def tighten_ice_consent(interval_s: float, failures: int) -> None:
    """Check ICE consent (RFC 7675) every `interval_s` and give a peer up after `failures` misses.

    aioice keeps RFC 7675's pace (a check every 5 s, 6 misses): a client killed without a
    goodbye then holds its viewer slot for ~30 s. Each check is one STUN request, so a tighter
    pace costs a few bytes a second per viewer and frees a dead peer's slot in a few seconds.
    """
    from aioice import ice

    ice.CONSENT_INTERVAL = interval_s
    ice.CONSENT_FAILURES = failures
    logger.info("ICE consent: a check every %.1f s, a peer given up after %d misses", interval_s, failures)
