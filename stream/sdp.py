"""Checks on an offer's SDP before aiortc sees it.

aiortc parses SDP for well-behaved browsers: some malformed offers (a non-ASCII media name,
an empty or binary `a=mid:`) make it raise from deep inside, or fail later in its own cleanup.
This accepts the SDP that browsers and aiortc write and refuses the rest with a reason, so a
bad offer is a 400 before any peer connection exists.
"""

from __future__ import annotations

import ipaddress
import re

from stream.protocol import ProtocolError

MAX_SDP_LINES = 1000  # a browser offer with audio, video, data and many candidates is ~150
MAX_MEDIA_SECTIONS = 8
MAX_CANDIDATES = 64  # each one is a STUN check the server sends; a browser gathers a handful

_LINE = re.compile(r"[a-z]=[\x20-\x7e]*")  # RFC 8866: <type>=<value>, printable ASCII here
_MEDIA = re.compile(r"m=(audio|video|application) \d{1,5}(/\d{1,3})? [A-Za-z0-9/_.-]{1,64}( [A-Za-z0-9_.:-]{1,64})+")
_MID = re.compile(r"a=mid:[A-Za-z0-9_.-]{1,32}")  # RFC 5888: a token; browsers use "0", "1", ...
_CANDIDATE = re.compile(r"a=candidate:\S{1,32} \d{1,3} \S{1,8} \d{1,10} (\S{1,253}) \d{1,5} typ \S+.*")


def check_offer_sdp(sdp: str) -> None:
    """Raise ProtocolError saying what is wrong with this offer SDP, if anything."""
    lines = sdp.replace("\r\n", "\n").rstrip("\n").split("\n")
    if len(lines) > MAX_SDP_LINES:
        raise ProtocolError(f"SDP has {len(lines)} lines; the limit is {MAX_SDP_LINES}")
    if lines[0] != "v=0":
        raise ProtocolError('SDP must start with "v=0"')
    media = candidates = 0
    for number, line in enumerate(lines, 1):
        if not _LINE.fullmatch(line):
            raise ProtocolError(f"SDP line {number} is not <letter>=<printable ASCII>")
        if line.startswith("m="):
            media += 1
            if not _MEDIA.fullmatch(line):
                raise ProtocolError(f"SDP line {number}: malformed media line")
        elif line.startswith("a=mid:") and not _MID.fullmatch(line):
            raise ProtocolError(f"SDP line {number}: a=mid must be 1 to 32 letters, digits, '-', '_' or '.'")
        elif line.startswith("a=candidate:"):
            candidates += 1
            _check_candidate(line, number)
    if media == 0 or not any(line.startswith("m=video ") for line in lines):
        raise ProtocolError("SDP has no video section (add a recvonly or sendrecv video transceiver)")
    if media > MAX_MEDIA_SECTIONS:
        raise ProtocolError(f"SDP has {media} media sections; the limit is {MAX_MEDIA_SECTIONS}")
    if candidates > MAX_CANDIDATES:
        raise ProtocolError(f"SDP has {candidates} ICE candidates; the limit is {MAX_CANDIDATES}")
    for needed in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"):  # aiortc asserts on these while connecting
        if not any(line.startswith(needed) for line in lines):
            raise ProtocolError(f"SDP has no {needed[:-1]} line")


def _check_candidate(line: str, number: int) -> None:
    match = _CANDIDATE.fullmatch(line)
    if match is None:
        raise ProtocolError(f"SDP line {number}: malformed ICE candidate")
    address = match.group(1)
    if address.endswith(".local"):  # a browser's mDNS name for its own address
        return
    try:
        ipaddress.ip_address(address)
    except ValueError:
        # a host name would make the server resolve names a client chose
        raise ProtocolError(f"SDP line {number}: an ICE candidate's address must be an IP address") from None
