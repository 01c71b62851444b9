"""Hostile and broken clients, for the hardening tests and the fault benchmarks (never the runtime).

Hypothesis strategies for what a client can send (offer bodies, SDP mutations, control
messages), a raw HTTP POST that sends exactly those bytes, and viewers in processes of their
own that a test can kill without a goodbye. Imports hypothesis: a dev dependency.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
HEADER_VARIANTS = (
    {},
    {"Content-Encoding": "gzip"},
    {"Content-Encoding": "deflate"},
    {"Content-Encoding": "br"},
    {"Content-Type": "application/json; charset=latin-1"},
    {"Content-Type": "application/json; charset=klingon"},
    {"Content-Type": "text/plain"},
    {"Content-Type": "multipart/form-data; boundary=x"},
    {"Transfer-Encoding": "chunked"},
    {"Origin": "null"},
    {"Authorization": "Bearer \u00e9\u00e9"},
)


class LogProblems(logging.Handler):
    """Log records that would mean a client reached code it should not: errors and tracebacks.
    The generator worker's are left out: an injected generator fault is not a client's doing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (record.levelno >= logging.ERROR or record.exc_info) and record.name != "stream.worker":
            if not _collected_aiortc_task(record):
                self.records.append(record)

    def summary(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage() for r in self.records]


def _collected_aiortc_task(record: logging.LogRecord) -> bool:
    """asyncio's note that the garbage collector met a pending task of a peer connection (aiortc, aioice,
    or a connection-state handler run by aiortc's event emitter, pyee) whose event loop already ended
    with an earlier test's server: nothing a client did to this server. (That a stopped server leaves
    such tasks for the collector is a shutdown untidiness, not yet mended.)"""
    message = record.getMessage()
    return (
        record.name == "asyncio"
        and message.startswith("Task was destroyed but it is pending")
        and any(lib in message for lib in ("aiortc", "aioice", "pyee"))
    )


async def aiortc_offer() -> str:
    """A real offer as aiortc writes it: recvonly video and the control channel."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    return pc.localDescription.sdp


def offer_body(sdp: str) -> bytes:
    return json.dumps({"sdp": sdp, "type": "offer"}).encode()


def json_values(max_leaves: int = 10) -> st.SearchStrategy:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["sdp", "type", "x"]), c, max_size=3),
        max_leaves=max_leaves,
    )


def sdp_mutations(sdp: str) -> st.SearchStrategy[str]:
    """The offer with 1 to 3 lines edited: a value replaced (its type kept), a line dropped or doubled,
    or a line inserted; the edits of a real fuzzer of SDP parsers."""
    lines = sdp.split("\r\n")
    edit = st.tuples(
        st.sampled_from(["replace", "drop", "double", "insert"]), st.integers(0, len(lines) - 1), st.text(max_size=30)
    )

    def apply(edits: list[tuple[str, int, str]]) -> str:
        out = list(lines)
        for op, at, text in edits:
            at %= len(out)
            if op == "replace":
                out[at] = out[at][:2] + text
            elif op == "drop" and len(out) > 1:
                del out[at]
            elif op == "double":
                out.insert(at, out[at])
            else:
                out.insert(at, text)
        return "\r\n".join(out)

    return st.lists(edit, min_size=1, max_size=3).map(apply)


def offer_bodies(sdp: str) -> st.SearchStrategy[bytes]:
    """What may arrive as a `POST /offer` body: bytes, JSON of any shape, offers with broken SDP."""
    return st.one_of(
        st.binary(max_size=200),
        json_values().map(lambda v: json.dumps(v).encode()),
        sdp_mutations(sdp).map(offer_body),
    )


def control_messages() -> st.SearchStrategy[str]:
    """Data-channel messages: near-valid commands with wrong, missing and extra fields, and plain text."""
    values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    message = st.fixed_dictionaries(
        {"type": st.sampled_from(["prompt", "mode", "lipar", "reset", "pause", "resume", "x"])},
        optional={
            "text": st.text(max_size=30) | values,
            "mode": values,
            "enabled": values,
            "thresholds": st.dictionaries(st.sampled_from(["tau_short", "tau_long", "x"]), values, max_size=3),
            "transition_frames": values,
            "v": values,
        },
    )
    return st.one_of(message.map(json.dumps), json_values().map(json.dumps), st.text(max_size=50))


def post(url: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/offer") -> tuple[int, dict]:
    """POST exactly these bytes (no client library fixing them up); the reply's status and JSON."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        text = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, {"error": text.decode("latin-1")}


_VIEWER = """
import asyncio, sys
from stream.client import StreamClient

async def main():
    viewer = StreamClient(sys.argv[1])
    await viewer.connect()
    await viewer.next_frame(60)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def start_viewer_processes(url: str, n: int) -> list[subprocess.Popen]:
    """n aiortc viewers, a process each, returned once each has decoded a frame; kill them at will."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _VIEWER, url], stdout=subprocess.PIPE, env=env, cwd=ROOT)
        for _ in range(n)
    ]
    for proc in procs:
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("a viewer process did not receive a frame")
    return procs


def offer_sdp() -> str:
    return asyncio.run(aiortc_offer())
