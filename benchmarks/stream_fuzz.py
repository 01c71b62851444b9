"""Generated bad inputs against the real server on 127.0.0.1: HTTP bodies and headers, SDP, data channel.

The server runs in this process with the tiny model (the shipped weights where present) on the
CPU; every input comes from the strategies in stream/hostile.py (the suite's hardening tests
draw ~200 of them, this draws as many as asked). Recorded per phase: status codes, 5xx
(the target is 0; "server busy" 503s, the answer to a valid offer when every slot is taken,
are counted apart), log records with a traceback or at ERROR, error replies that came from
the server's catch-all, and whether the stream and /health were fine afterwards.

    python benchmarks/stream_fuzz.py                      # 1,200 inputs: 500 HTTP, 300 SDP, 400 messages
    python benchmarks/stream_fuzz.py --http 100 --sdp 100 --messages 100 --out /tmp/fuzz.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from engine.checkpoint import WEIGHTS_DIR  # noqa: E402
from stream import hostile  # noqa: E402
from stream.client import StreamClient  # noqa: E402
from stream.config import ServerConfig  # noqa: E402
from stream.server import BackgroundServer  # noqa: E402

CATCH_ALL = "the server could not apply the message"


def drive(strategy: st.SearchStrategy, n: int, each) -> None:
    """Call `each` on n generated examples; it records, never raises, so all n run."""
    settings(max_examples=n, deadline=None, database=None)(given(strategy)(each))()


def http_phase(url: str, offer: str, n: int) -> dict:
    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []

    def each(body: bytes, headers: dict[str, str]) -> None:
        status, reply = hostile.post(url, body, headers)
        statuses[status] += 1
        if status >= 500 and not (status == 503 and reply.get("error", "").startswith("server busy")):
            server_errors.append(f"{status}: {body[:80]!r} {headers}")

    drive(st.tuples(hostile.offer_bodies(offer), st.sampled_from(hostile.HEADER_VARIANTS)), n, lambda a: each(*a))
    return _phase(statuses, server_errors)


def sdp_phase(url: str, offer: str, n: int) -> dict:
    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []

    def each(sdp: str) -> None:
        status, reply = hostile.post(url, hostile.offer_body(sdp))
        statuses[status] += 1
        if status >= 500 and not (status == 503 and reply.get("error", "").startswith("server busy")):
            server_errors.append(f"{status}: {reply}")

    drive(hostile.sdp_mutations(offer), n, each)
    return _phase(statuses, server_errors)


def _phase(statuses: collections.Counter, server_errors: list[str]) -> dict:
    busy = statuses.get(503, 0) - len([e for e in server_errors if e.startswith("503")])
    return {
        "inputs": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_busy_503": busy,
        "5xx_other_than_busy": len(server_errors),
        "5xx_examples": server_errors[:10],
    }


def channel_phase(srv: BackgroundServer, n: int) -> dict:
    messages: list[str] = []
    drive(hostile.control_messages(), n, lambda m: messages.append(m))
    messages.append('{"type": "resume"}')  # generated messages may have paused the stream

    async def main() -> dict:
        async with StreamClient(srv.url) as viewer:
            await viewer.next_frame(30)
            for raw in messages:
                viewer.send(raw)
                await asyncio.sleep(0.002)  # within the per-viewer rate limit the fuzzing server allows
            await asyncio.sleep(2.0)
            replies = []
            while not viewer.messages.empty():
                replies.append(viewer.messages.get_nowait())
            viewer.drain()
            frame = await viewer.next_frame(30)  # the stream goes on
        errors = [r["message"] for r in replies if r["type"] == "error"]
        return {
            "inputs": len(messages) - 1,
            "error_replies": len(errors),
            "catch_all_replies": errors.count(CATCH_ALL),
            "distinct_error_reasons": len({e.split(":")[0][:40] for e in errors}),
            "longest_error_reply_chars": max(map(len, errors), default=0),
            "frames_after": frame.image.shape[:2],
        }

    return srv.call(main(), timeout=300)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", type=int, default=500, help="generated POST /offer bodies and headers")
    p.add_argument("--sdp", type=int, default=300, help="generated SDP mutations of a real offer")
    p.add_argument("--messages", type=int, default=400, help="generated data-channel messages")
    p.add_argument("--note", default="", help="saved in the result (e.g. what else ran on the machine)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream_fuzz.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    problems = hostile.LogProblems()
    logging.getLogger().addHandler(problems)

    import torch

    trained = (WEIGHTS_DIR / "tiny" / "dit.safetensors").is_file()
    config = ServerConfig(
        port=0,
        device="cpu",
        size=(128, 128),
        random_weights=not trained,
        # mutated offers that stay valid take slots; many slots, freed fast, let the next ones reach aiortc
        max_viewers=100,
        connect_timeout_s=2.0,
        messages_per_s=1000,
        message_burst=1000,
    )
    offer = hostile.offer_sdp()
    started = time.monotonic()
    with BackgroundServer(config) as srv:
        before = _open_fds()
        phases = {
            "http_offer_bodies_and_headers": http_phase(srv.url, offer, args.http),
            "sdp_mutations": sdp_phase(srv.url, offer, args.sdp),
            "data_channel_messages": channel_phase(srv, args.messages),
        }
        health = srv.call(_health(srv.url))
        deadline = time.monotonic() + 3 * config.connect_timeout_s
        while srv.server.viewers and time.monotonic() < deadline:  # offers that were answered, never used
            time.sleep(0.2)
        after = {"viewers": len(srv.server.viewers), "open_fds": _open_fds()}
    total = sum(ph["inputs"] for ph in phases.values())
    five_xx = sum(ph.get("5xx_other_than_busy", 0) for ph in phases.values())
    result = {
        "what": "generated bad inputs against the server on 127.0.0.1 (stream/hostile.py strategies)",
        "model": "tiny",
        "random_weights": not trained,
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "seconds": round(time.monotonic() - started, 1),
        "inputs_total": total,
        "phases": phases,
        "5xx_total": five_xx,
        "log_records_with_traceback_or_error": problems.summary()[:20],
        "health_after": health,
        # every answered offer gathered ICE sockets; once its slot is freed they must be closed again
        "open_fds_before_and_after": [before, after["open_fds"]],
        "viewers_left_after": after["viewers"],
        "targets": {
            "inputs_ge_1000": total >= 1000,
            "no_5xx": five_xx == 0,
            "no_traceback_logged": not problems.records,
            "no_catch_all_reply": phases["data_channel_messages"]["catch_all_replies"] == 0,
            "no_leaked_peers_or_fds": after["viewers"] == 0 and after["open_fds"] <= before,
        },
        "command": " ".join(["python", *sys.argv]),
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=list) + "\n")
    print(json.dumps(result, indent=2, default=list))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _health(url: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/health") as resp:
            return {"http_status": resp.status, **(await resp.json())}


if __name__ == "__main__":
    main()
