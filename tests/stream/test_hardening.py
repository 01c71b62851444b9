"""Hostile and broken clients against the real server (fake generator): 4xx or `error`, never 5xx."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream import hostile
from stream.client import OfferRejected, StreamClient
from stream.config import ServerConfig
from stream.server import BackgroundServer
from tests.stream.conftest import FakeGenerator

TIMEOUT_S = 20
FLOOD_RATE = 1000.0  # the fuzzing server lets messages through; the rate-limit test uses its own server


@pytest.fixture(scope="module")
def problems():
    handler = hostile.LogProblems()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def server(problems):
    config = ServerConfig(port=0, max_viewers=4, connect_timeout_s=2.0, messages_per_s=FLOOD_RATE, message_burst=1000)
    with BackgroundServer(config, FakeGenerator()) as srv:
        yield srv
    assert problems.summary() == []


def post(server, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    return hostile.post(server.url, body, headers)


OFFER = hostile.offer_sdp()
offer_body = hostile.offer_body


@pytest.mark.parametrize(
    "body, headers, status, error",
    [
        (b"[" * 1000 + b"]" * 1000, {}, 400, "nested deeper"),
        (b'{"sdp": 1' + b"0" * 5000 + b', "type": "offer"}', {}, 400, "5001 digits"),
        (offer_body(OFFER), {"Content-Type": "application/json; charset=klingon"}, 200, ""),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "could not read the request body"),
        (gzip.compress(b"[" * 100_000), {"Content-Encoding": "gzip"}, 413, "larger than the limit"),
        (b'{"sdp": "v=0", "type": "offer"}', {"Content-Type": "text/plain"}, 415, "must be application/json"),
        (offer_body(OFFER.replace("m=video", "m=vidéo")), {}, 400, "printable ASCII"),
        (offer_body(OFFER.replace("a=mid:0", "a=mid:")), {}, 400, "a=mid must be"),
        (offer_body(OFFER.replace("a=mid:0", "a=mid:0\x00")), {}, 400, "printable ASCII"),
        (offer_body(OFFER.replace("a=ice-ufrag:", "a=ice-ufraq:")), {}, 400, "no a=ice-ufrag line"),
        (offer_body(OFFER.replace("a=setup:actpass", "a=setup:bogus")), {}, 400, "the WebRTC stack could not use it"),
    ],
)
def test_bad_offers_get_a_4xx_with_a_short_reason(server, body, headers, status, error) -> None:
    got, reply = post(server, body, headers)
    assert got == status, reply
    if status != 200:
        assert error in reply["error"] and len(reply["error"]) < 200 and "Traceback" not in reply["error"]
    deadline = time.monotonic() + 5
    while server.server.viewers and time.monotonic() < deadline:  # the answered offer is never used
        time.sleep(0.1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile.offer_bodies(OFFER), st.sampled_from(hostile.HEADER_VARIANTS))
def test_generated_bodies_and_sdp_never_get_a_5xx(server, body: bytes, headers: dict) -> None:
    status, reply = post(server, body, headers)
    # a mutation that leaves a valid offer takes a slot; when all are taken, "busy" is the right answer
    assert status < 500 or (status == 503 and reply["error"].startswith("server busy")), reply


def wait_for_a_free_slot(server, wait_s: float = 15.0) -> None:
    """Generated offers of the tests before may still hold slots (each at most connect_timeout_s, longer
    on a loaded CPU): a test that needs a viewer waits for one instead of racing them."""
    deadline = time.monotonic() + wait_s
    while len(server.server.viewers) >= server.server.config.max_viewers and time.monotonic() < deadline:
        time.sleep(0.2)


def test_generated_control_messages_get_error_replies_and_the_stream_goes_on(server) -> None:
    wait_for_a_free_slot(server)
    messages = _generated(hostile.control_messages(), 100) + [
        "{" * 5000,
        '{"type": "lipar", "enabled": true, "thresholds": {"tau_short": 1' + "0" * 400 + "}}",
        '{"type": "prompt", "text": "\\ud800"}',
        '{"type": "prompt", "text": "\\u200b\\u200b"}',
        '{"type": "reset", "v": true}',
        '{"type": "resume"}',  # generated messages may have paused the stream
    ]

    async def main() -> list[dict]:
        async with StreamClient(server.url) as viewer:
            await viewer.next_frame(TIMEOUT_S)
            for raw in messages:
                viewer.send(raw)
            await asyncio.sleep(1.0)
            viewer.drain()
            await viewer.next_frame(TIMEOUT_S)  # still streaming
            replies = []
            while not viewer.messages.empty():
                replies.append(viewer.messages.get_nowait())
            return replies

    replies = server.call(main(), timeout=60)
    assert all(r["message"] != "the server could not apply the message" for r in replies if r["type"] == "error")


def _generated(strategy: st.SearchStrategy, n: int) -> list:
    """n examples of a strategy, drawn once (the messages are sent in one go, not one test each)."""
    found: list = []

    @settings(max_examples=n, deadline=None, database=None)
    @given(strategy)
    def collect(example: object) -> None:
        found.append(example)

    collect()
    return found


def test_a_viewer_gets_one_control_channel_and_one_stats_loop(server) -> None:
    wait_for_a_free_slot(server)

    async def main() -> tuple[int, str]:
        viewer = StreamClient(server.url)
        extra = [viewer.pc.createDataChannel("control") for _ in range(3)]
        async with viewer:
            await viewer.next_frame(TIMEOUT_S)
            await asyncio.sleep(0.5)
            stats_tasks = len(server.server.viewers[viewer.viewer_id].tasks)
            return stats_tasks, [c.readyState for c in extra]

    tasks, states = server.call(main(), timeout=60)
    assert states == ["closed"] * 3 or all(s in ("closing", "closed") for s in states), states
    assert tasks <= 3  # connect deadline, one stats loop, the camera reader at most


def test_pending_offers_free_their_slots_and_do_not_run_the_generator(server) -> None:
    generator = server.server.worker._gen
    deadline = time.monotonic() + 10
    while server.server.viewers and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(4):  # fill every slot with offers whose answers are thrown away
        assert post(server, offer_body(OFFER))[0] == 200
    status, reply = post(server, offer_body(OFFER))
    assert status == 503 and "server busy" in reply["error"]
    time.sleep(0.5)
    frame = generator.frame
    time.sleep(0.5)
    assert generator.frame == frame  # nobody connected: the generator idles
    started = time.monotonic()
    while server.server.viewers:
        assert time.monotonic() - started < 2.0 + 1.0, "pending offers kept their slots"
        time.sleep(0.1)


def test_a_message_flood_is_refused_plainly_and_cannot_freeze_the_stream() -> None:
    generator = FakeGenerator()
    config = ServerConfig(port=0, messages_per_s=10, message_burst=20)
    with BackgroundServer(config, generator) as srv:

        async def main() -> tuple[float, list[str]]:
            async with StreamClient(srv.url) as viewer:
                await viewer.next_frame(TIMEOUT_S)
                viewer.drain()
                started = time.monotonic()
                for i in range(500):
                    viewer.send({"type": "prompt", "text": f"a ball number {i}"})
                last, worst = started, 0.0
                while time.monotonic() - started < 3.0:
                    frame = await viewer.next_frame(TIMEOUT_S)
                    worst, last = max(worst, frame.received_at - last), frame.received_at
                errors = []
                while not viewer.messages.empty():
                    msg = viewer.messages.get_nowait()
                    if msg["type"] == "error":
                        errors.append(msg["message"])
                return worst, errors

        worst_gap, errors = srv.call(main(), timeout=60)
    assert worst_gap < 1.0, worst_gap
    assert errors and all(e == "too many messages: at most 10 a second" for e in errors)
    assert len(errors) <= 4  # said once a second, not once per refused message
    assert len(generator.prompts) <= 1 + 20 + 1  # the initial prompt, the burst, coalesced


def test_a_failing_generator_is_reported_and_the_server_keeps_serving(server) -> None:
    generator = server.server.worker._gen

    async def main() -> str:
        async with StreamClient(server.url) as viewer:
            await viewer.next_frame(TIMEOUT_S)
            generator.fail_with = MemoryError()
            try:
                while (stats := await viewer.next_message("stats", TIMEOUT_S))["error"] is None:
                    pass
                status, _ = await _get(server.url + "/health")
                assert status == 200
                async with StreamClient(server.url) as second:  # a newcomer still gets in
                    assert (await second.next_message("hello", TIMEOUT_S))["type"] == "hello"
            finally:
                generator.fail_with = None
            viewer.drain()
            await viewer.next_frame(TIMEOUT_S)
            return stats["error"]

    assert server.call(main(), timeout=60).startswith("the generator ran out of memory")


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}) as resp:
            return resp.status, await resp.text()


TOKEN, WATCH_TOKEN = "s" * 24, "w" * 24


@pytest.fixture(scope="module")
def guarded():
    config = ServerConfig(port=0, token=TOKEN, watch_token=WATCH_TOKEN, allowed_origins=("http://app.example:3000",))
    with BackgroundServer(config, FakeGenerator()) as srv:
        yield srv


def test_the_token_guards_offers_and_metrics_but_not_the_page(guarded) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
        status, reply = post(guarded, offer_body(OFFER), headers)
        assert status == 401 and "token" in reply["error"]
    assert guarded.call(_get(guarded.url + "/metrics"))[0] == 401
    assert guarded.call(_get(guarded.url + "/metrics", {"Authorization": f"Bearer {WATCH_TOKEN}"}))[0] == 401
    assert guarded.call(_get(guarded.url + "/metrics", {"Authorization": f"Bearer {TOKEN}"}))[0] == 200
    assert guarded.call(_get(guarded.url + "/"))[0] == 200
    assert guarded.call(_get(guarded.url + "/health"))[0] == 200


def test_a_watch_token_watches_but_cannot_steer(guarded) -> None:
    async def main() -> tuple[dict, dict]:
        async with StreamClient(guarded.url, token=WATCH_TOKEN) as viewer:
            hello = await viewer.next_message("hello", TIMEOUT_S)
            await viewer.next_frame(TIMEOUT_S)
            viewer.send({"type": "pause"})
            return hello, await viewer.next_message("error", TIMEOUT_S)

    hello, refusal = guarded.call(main(), timeout=60)
    assert hello["role"] == "watch" and "watches only" in refusal["message"]
    assert not guarded.server.worker.snapshot.paused

    async def steer() -> dict:
        async with StreamClient(guarded.url, token=TOKEN) as viewer:
            return await viewer.next_message("hello", TIMEOUT_S)

    assert guarded.call(steer(), timeout=60)["role"] == "steer"


def test_other_hosts_and_other_pages_are_refused(guarded) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, reply = post(guarded, offer_body(OFFER), {**auth, "Host": "rebound.example:8080"})
    assert status == 403 and "Host" in reply["error"]
    status, reply = post(guarded, offer_body(OFFER), {**auth, "Origin": "http://evil.example"})
    assert status == 403 and "other web pages" in reply["error"]
    host = guarded.url.removeprefix("http://")
    for origin in (f"http://{host}", "http://app.example:3000"):  # the page itself, and an allowed page
        assert post(guarded, offer_body(OFFER), {**auth, "Origin": origin})[0] == 200


def test_offers_over_the_slot_limit_are_busy_not_errors(guarded) -> None:
    async def main() -> None:
        with pytest.raises(OfferRejected) as info:
            async with StreamClient(guarded.url):
                pass
        assert info.value.status == 401

    guarded.call(main(), timeout=30)
