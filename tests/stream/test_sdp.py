import asyncio

import pytest
from aiortc import RTCPeerConnection
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.protocol import ProtocolError
from stream.sdp import MAX_CANDIDATES, check_offer_sdp


async def _aiortc_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


OFFER = asyncio.run(_aiortc_offer())
# what Chromium sends, trimmed: mDNS-free (--use-fake-ui-for-media-stream), loopback candidate
CHROMIUM_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102",
        "c=IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0 network-id 1",
        "a=candidate:2 1 udp 2122260223 0c3f6a1e-2a7b-4b7e-9d2c-5f7a6a1b2c3d.local 50001 typ host",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdef01234567",
        "a=fingerprint:sha-256 AB:CD:EF",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=mid:1",
        "a=sctp-port:5000",
        "",
    ]
)


@pytest.mark.parametrize("sdp", [OFFER, CHROMIUM_OFFER], ids=["aiortc", "chromium"])
def test_offers_that_browsers_and_aiortc_write_pass(sdp: str) -> None:
    check_offer_sdp(sdp)


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda s: s.replace("m=video", "m=vidéo"), "not <letter>=<printable ASCII>"),
        (lambda s: s.replace("a=mid:0", "a=mid:"), "a=mid must be 1 to 32"),
        (lambda s: s.replace("a=mid:0", "a=mid:0\x00"), "not <letter>=<printable ASCII>"),
        (lambda s: "x" + s, 'must start with "v=0"'),
        (lambda s: s.replace("m=video 9", "m=video nine"), "malformed media line"),
        (lambda s: s.replace("m=video", "m=audio"), "no video section"),
        (lambda s: s.replace("127.0.0.1 50000", "evil.example.com 50000"), "must be an IP address"),
        (lambda s: s.replace("a=candidate:1 1 udp", "a=candidate:1 udp"), "malformed ICE candidate"),
        (lambda s: s + "a=x\r\n" * 1000, "lines; the limit is 1000"),
        (lambda s: s.replace("a=ice-ufrag:abcd\r\n", ""), "no a=ice-ufrag line"),
        (lambda s: s.replace("a=fingerprint:sha-256 AB:CD:EF\r\n", ""), "no a=fingerprint line"),
        (lambda s: s + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * 8, "media sections; the limit is 8"),
        (
            lambda s: s + "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n" * MAX_CANDIDATES,
            "ICE candidates; the limit is 64",
        ),
    ],
)
def test_malformed_offers_are_refused_with_a_reason(mutate, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        check_offer_sdp(mutate(CHROMIUM_OFFER))


_LINES = CHROMIUM_OFFER.split("\r\n")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete", "duplicate"]),
            st.integers(0, len(_LINES) - 1),
            st.text(max_size=40),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_mutated_offer_passes_or_gets_a_protocol_error(edits) -> None:
    lines = list(_LINES)
    for op, at, text in edits:
        at %= max(len(lines), 1)
        if op == "replace" and lines:
            lines[at] = lines[at][:2] + text
        elif op == "insert":
            lines.insert(at, text)
        elif op == "delete" and lines:
            del lines[at]
        elif lines:
            lines.insert(at, lines[at])
    try:
        check_offer_sdp("\r\n".join(lines))
    except ProtocolError as exc:
        assert str(exc)
