"""aiohttp server: the page, `POST /offer` (WebRTC signalling), `GET /health`, `GET /metrics`.

Everyone sees the same stream: one generator on one worker thread, one shared encoder per
codec (stream/encoding.py), one GeneratedVideoTrack per viewer, and a `control` data channel
per viewer whose commands steer the shared stream.

Hostile or broken clients (DESIGN.md section 8): every route checks Host, Origin and (when
configured) the token before anything else; offers are parsed with size and depth limits
and their SDP checked before aiortc sees it; control messages are rate-limited per viewer
and coalesced by the worker; a peer that never connects, or dies, loses its slot in seconds.
A client's mistake is a 4xx or an `error` message, never a 5xx or a traceback in the log.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from stream.config import ServerConfig, video_bitrate
from stream.encoding import EncoderHub
from stream.metrics import StreamMetrics
from stream.protocol import CHANNEL_LABEL, ProtocolError, parse_command, parse_offer, server_message
from stream.ratelimit import TokenBucket
from stream.rtc import allow_loopback_candidates, apply_bitrate, codec_preferences, tighten_ice_consent
from stream.sdp import check_offer_sdp
from stream.tracks import GeneratedVideoTrack, consume_source
from stream.worker import GeneratorWorker

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STEER, WATCH = "steer", "watch"  # roles: a watcher sees the stream but its commands are refused
NEGOTIATION_TIMEOUT_S = 5.0  # aiortc answers a sane offer in milliseconds
BODY_TIMEOUT_S = 5.0  # an offer is a few KB: on any link it arrives in well under a second
MAX_CHANNEL_BUFFER_BYTES = 256 * 1024  # a viewer that stops reading its channel stops getting stats
ERROR_REPLY_INTERVAL_S = 1.0  # "too many messages" is said at most once a second, not per message
_PROTECTED = ("/offer", "/metrics")  # need the token when one is set; the page and /health do not


@dataclass(eq=False)
class Viewer:
    id: str
    role: str
    pc: RTCPeerConnection
    track: GeneratedVideoTrack
    log: logging.LoggerAdapter
    messages: TokenBucket
    channel: RTCDataChannel | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)
    last_refusal: float = -float("inf")

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send(self, text: str) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open" and channel.bufferedAmount < MAX_CHANNEL_BUFFER_BYTES:
            channel.send(text)

    @property
    def dropped(self) -> int:
        return self.track.packets.dropped if self.track.packets is not None else 0


class StreamServer:
    def __init__(self, config: ServerConfig, generator: Any | None = None) -> None:
        self.config = config
        self.metrics = StreamMetrics()
        self.viewers: dict[str, Viewer] = {}
        self._generator = generator
        self._worker: GeneratorWorker | None = None
        self._encoders: EncoderHub | None = None

    @property
    def worker(self) -> GeneratorWorker:
        if self._worker is None:
            raise RuntimeError("the server has not started")
        return self._worker

    async def startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_on_loop_exception)
        if self._generator is None:
            self._generator = await loop.run_in_executor(None, load_generator, self.config)
        self._worker = GeneratorWorker(
            self._generator,
            loop,
            self.metrics,
            prompt=self.config.prompt,
            target_fps=self.config.target_fps,
            queue_frames=self.config.viewer_queue_frames,
        )
        self._worker.start()
        try:
            await asyncio.wrap_future(self._worker.first_prompt)
        except Exception:
            await loop.run_in_executor(None, self._worker.stop)
            raise
        if self.config.ice_loopback:
            allow_loopback_candidates()
        tighten_ice_consent(self.config.consent_interval_s, self.config.consent_failures)
        height, width = self._worker.size
        apply_bitrate(self.config.bitrate or video_bitrate(height, width, self.config.target_fps))
        self._encoders = EncoderHub(self._worker, self.metrics, self.config.viewer_queue_frames)
        if self.config.token is None:
            logger.info("no token: anyone who reaches %s:%d can watch and steer", self.config.host, self.config.port)

    async def shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(self._close(v) for v in list(self.viewers.values())))
        if self._encoders is not None:
            self._encoders.close()
        if self._worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._worker.stop)

    @property
    def encoders(self) -> EncoderHub:
        if self._encoders is None:
            raise RuntimeError("the server has not started")
        return self._encoders

    # -- access: Host, Origin, token ----------------------------------------------------------

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            self.metrics.rejected.labels("http").inc()
            return refusal
        try:
            return await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 4xx (404, 405, 413): already a short reason
            if exc.status >= 400:
                self.metrics.rejected.labels("http").inc()
            raise

    def _refusal(self, request: web.Request) -> web.Response | None:
        names = self.config.host_names
        host = _host_name(request.host)
        if names and host not in names:
            # a name this server was not told about: DNS rebinding, or a proxy that should say so
            return _error(403, "this Host is not served here (ServerConfig.allowed_hosts / --allow-host)")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request.host):
            return _error(403, "requests from other web pages are refused (ServerConfig.allowed_origins)")
        if request.path in _PROTECTED and self.config.token is not None:
            role = self._role(request)
            if role is None or (request.path == "/metrics" and role != STEER):
                response = _error(401, "missing or wrong token: send the header Authorization: Bearer <token>")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin in self.config.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()  # the page itself

    def _role(self, request: web.Request) -> str | None:
        """STEER, WATCH, or None for a missing or wrong token; everyone steers when no token is set."""
        if self.config.token is None:
            return STEER
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return None
        presented = given.strip().encode("utf-8", "replace")
        role = None
        # both compared every time, in constant time: timing tells nothing about either token
        if hmac.compare_digest(presented, self.config.token.encode()):
            role = STEER
        if self.config.watch_token is not None and hmac.compare_digest(presented, self.config.watch_token.encode()):
            role = WATCH
        return role

    # -- routes ------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def health(self, request: web.Request) -> web.Response:
        alive = self.worker.alive
        snap = self.worker.snapshot
        body = {
            "status": "ok" if alive else "generator worker is not running",
            "model": self.config.model,
            "size": list(self.worker.size),
            "viewers": len(self.viewers),
            "max_viewers": self.config.max_viewers,
            "frame": snap.frame,
            "fps": round(snap.fps, 2),
            "last_error": snap.error,
        }
        return web.json_response(body, status=200 if alive else 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})

    async def offer(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":  # also keeps other pages to CORS-preflighted requests
            return self._reject(415, "Content-Type must be application/json")
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):  # a body that never ends holds no handler for long
                body = await request.read()  # decompressed as it comes, and cut off at client_max_size
        except TimeoutError:
            return self._reject(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s")
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, f"request body is larger than the limit of {self.config.max_body_bytes} bytes")
        except (RequestPayloadError, HttpProcessingError):  # a body that is not what it says (gzip that is not)
            return self._reject(400, "could not read the request body (its Content-Encoding or framing is wrong)")
        try:
            sdp = parse_offer(body)
        except ProtocolError as exc:
            return self._reject(400, str(exc))
        try:
            check_offer_sdp(sdp)
        except ProtocolError as exc:
            return self._reject(400, f"invalid SDP offer: {exc}")
        if len(self.viewers) >= self.config.max_viewers:
            return _error(
                503,
                f"server busy: {len(self.viewers)} viewers connected, the limit is {self.config.max_viewers}",
            )

        viewer_id = uuid.uuid4().hex[:8]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        track = GeneratedVideoTrack(self.metrics)
        role = self._role(request) or STEER  # the guard let it through: no token configured, or a valid one
        bucket = TokenBucket(self.config.messages_per_s, self.config.message_burst)
        viewer = Viewer(viewer_id, role, pc, track, _ViewerLog(logger, viewer_id), bucket)
        self.viewers[viewer_id] = viewer  # the slot is taken before the first await: no over-booking
        self.metrics.viewers.set(len(self.viewers))
        viewer.log.info("offer from %s (%s)", request.remote, role)

        transceiver = pc.addTransceiver(track, direction="sendrecv")
        transceiver.setCodecPreferences(codec_preferences(self.config.prefer_codec))
        pc.on("datachannel", partial(self._on_datachannel, viewer))
        pc.on("track", partial(self._on_track, viewer))
        pc.on("connectionstatechange", partial(self._on_connection_state, viewer))
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT_S):
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                if transceiver.mid is None:
                    raise ProtocolError("it has no video section (add a recvonly or sendrecv video transceiver)")
                await pc.setLocalDescription(await pc.createAnswer())
            mime = _negotiated_video_codec(pc.localDescription.sdp, transceiver.mid)
        except Exception as exc:  # aiortc raises many types for a malformed offer; all mean the same
            viewer.log.info("rejected offer: %s", type(exc).__name__ if not isinstance(exc, ProtocolError) else exc)
            await self._close(viewer)
            reason = str(exc) if isinstance(exc, ProtocolError) else "the WebRTC stack could not use it"
            return self._reject(400, f"invalid SDP offer: {reason}")
        track.bind(self.encoders.get(mime))
        # a browser's picture-loss report (PLI/FIR) asks aiortc's sender, which only encodes frames it is
        # given, for a keyframe; the frames come from the shared encoder, so the request must go there
        transceiver.sender._send_keyframe = track.request_keyframe
        viewer.spawn(self._connect_deadline(viewer))
        answer = pc.localDescription
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "viewer": viewer_id})

    def _reject(self, status: int, message: str) -> web.Response:
        self.metrics.rejected.labels("http").inc()
        return _error(status, message)

    # -- peer events -------------------------------------------------------------------------

    def _on_datachannel(self, viewer: Viewer, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL or viewer.channel is not None:
            # one control channel per viewer, one stats loop: more channels would multiply both
            viewer.log.info("closing an extra data channel (a viewer has one %r channel)", CHANNEL_LABEL)
            self.metrics.rejected.labels("channel").inc()
            channel.close()
            return
        viewer.channel = channel
        channel.on("message", partial(self._on_raw_message, viewer))
        height, width = self.worker.size
        viewer.send(
            server_message(
                "hello",
                viewer=viewer.id,
                model=self.config.model,
                width=width,
                height=height,
                target_fps=self.config.target_fps,
                max_prompt_chars=self.config.max_prompt_chars,
                role=viewer.role,
            )
        )
        viewer.spawn(self._send_stats(viewer))

    def _on_track(self, viewer: Viewer, track: Any) -> None:
        viewer.log.info("receiving %s track", track.kind)
        # a track nobody reads grows aiortc's queue without bound, so unused kinds are drained too
        sink = partial(self.worker.offer_source, viewer.id) if track.kind == "video" else _discard
        viewer.spawn(consume_source(track, sink))

    async def _on_connection_state(self, viewer: Viewer) -> None:
        state = viewer.pc.connectionState
        viewer.log.info("connection %s", state)
        if state in ("failed", "closed"):
            await self._close(viewer)

    def _on_raw_message(self, viewer: Viewer, raw: str | bytes) -> None:
        # on the loop, per message: a refusal here costs O(1), so a flood is cheap to ignore
        if not viewer.messages.take():
            self.metrics.rejected.labels("channel").inc()
            now = asyncio.get_running_loop().time()
            if now - viewer.last_refusal >= ERROR_REPLY_INTERVAL_S:
                viewer.last_refusal = now
                rate = self.config.messages_per_s
                viewer.send(server_message("error", message=f"too many messages: at most {rate:g} a second"))
            return
        viewer.spawn(self._on_message(viewer, raw))

    async def _on_message(self, viewer: Viewer, raw: str | bytes) -> None:
        try:
            command = parse_command(
                raw, max_bytes=self.config.max_message_bytes, max_prompt_chars=self.config.max_prompt_chars
            )
            if viewer.role != STEER:
                raise ProtocolError("this viewer watches only: its token cannot steer the stream")
            await asyncio.wrap_future(self.worker.submit(command, viewer.id))
        except ValueError as exc:  # ProtocolError, or the generator refusing a value (e.g. a prompt)
            self.metrics.rejected.labels("channel").inc()
            viewer.log.info("rejected message: %s", str(exc)[:200])
            viewer.send(server_message("error", message=str(exc)[:300]))
        except Exception:  # a bug of ours, not the client's: the log gets the traceback, the client a plain reply
            viewer.log.exception("could not apply message")
            viewer.send(server_message("error", message="the server could not apply the message"))

    async def _send_stats(self, viewer: Viewer) -> None:
        while True:
            await asyncio.sleep(1.0 / self.config.stats_hz)
            viewer.send(self._stats(viewer))

    def _stats(self, viewer: Viewer) -> str:
        snap = self.worker.snapshot
        return server_message(
            "stats",
            frame=snap.frame,
            fps=round(snap.fps, 2),
            latency_ms=round(snap.latency_ms, 1),
            kept_ratio=round(snap.kept_ratio, 4),
            stages_ms=snap.stages_ms,
            mode=snap.mode,
            paused=snap.paused,
            prompt=snap.prompt,
            lipar=snap.lipar,
            viewers=len(self.viewers),
            dropped=viewer.dropped,
            source_frames=snap.source_frames,
            mask=_encode_mask(snap.mask),
            motion=snap.motion,
            error=snap.error,
        )

    async def _connect_deadline(self, viewer: Viewer) -> None:
        await asyncio.sleep(self.config.connect_timeout_s)
        if viewer.pc.connectionState != "connected":
            viewer.log.info("not connected after %.0f s; freeing its slot", self.config.connect_timeout_s)
            await self._close(viewer)

    async def _close(self, viewer: Viewer) -> None:
        if self.viewers.pop(viewer.id, None) is None:
            return
        self.metrics.viewers.set(len(self.viewers))
        viewer.track.stop()
        self.worker.release_source(viewer.id)
        current = asyncio.current_task()
        for task in list(viewer.tasks):
            if task is not current:
                task.cancel()
        try:
            await viewer.pc.close()
        except Exception as exc:  # aiortc's cleanup after a half-negotiated offer can raise; the slot is free
            viewer.log.warning("closing its peer connection raised %s", type(exc).__name__)
        viewer.log.info("closed")


class _MalformedHttpFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (bad chunking, a Content-Encoding it cannot decode) with
    a traceback at ERROR, after answering it with a 400 itself: that is a client's mistake, so one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a malformed HTTP request: %s", (exc.message[:80],)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class _ViewerLog(logging.LoggerAdapter):
    """Prefixes every line with the viewer's id, so interleaved connections stay readable."""

    def __init__(self, log: logging.Logger, viewer_id: str) -> None:
        super().__init__(log, {"viewer": viewer_id})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"viewer {self.extra['viewer']}: {msg}", kwargs


def _discard(frame: Any) -> None:
    pass


def _on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiortc connects each peer in tasks of its own, whose failures nobody awaits: a peer whose offer
    parsed but whose transport parameters make aiortc trip an assertion. That is the peer's doing: one
    line (its slot is freed by the connect deadline). Everything else keeps asyncio's full report."""
    future = context.get("future")
    coro = future.get_coro() if isinstance(future, asyncio.Task) else None
    filename = getattr(getattr(coro, "cr_code", None), "co_filename", "")
    if context.get("exception") is not None and any(f"{os.sep}{m}{os.sep}" in filename for m in ("aiortc", "aioice")):
        logger.warning("a peer's connection task failed: %s", type(context["exception"]).__name__)
        return
    loop.default_exception_handler(context)


def _host_name(host: str) -> str:
    """The Host header without its port: "127.0.0.1:8080" -> "127.0.0.1", "[::1]:80" -> "[::1]"."""
    host = host.lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _negotiated_video_codec(answer_sdp: str, mid: str) -> str:
    """The mime type of the codec the answer chose for this video section (its first one)."""
    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind == "video" and media.rtp.muxId == mid:
            return media.rtp.codecs[0].mimeType
    raise ProtocolError("no video codec in common (the server sends H.264 or VP8)")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _encode_mask(mask: np.ndarray | None) -> dict[str, Any] | None:
    """Kept-token grid as {rows, cols, bits}: bits = base64 of the row-major grid, 1 bit per token."""
    if mask is None:
        return None
    rows, cols = mask.shape
    return {"rows": rows, "cols": cols, "bits": base64.b64encode(np.packbits(mask.ravel())).decode("ascii")}


SERVER_KEY = web.AppKey("stream_server", StreamServer)


def create_app(config: ServerConfig, generator: Any | None = None) -> web.Application:
    """The aiohttp application. `generator` defaults to loading `config.model` at startup."""
    server = StreamServer(config, generator)
    aiohttp_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedHttpFilter) for f in aiohttp_log.filters):
        aiohttp_log.addFilter(_MalformedHttpFilter())
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[server.guard])
    app[SERVER_KEY] = server
    app.on_startup.append(server.startup)
    app.on_shutdown.append(server.shutdown)
    app.router.add_get("/", server.index)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_post("/offer", server.offer)
    app.router.add_get("/health", server.health)
    app.router.add_get("/metrics", server.metrics_text)
    return app


def load_generator(config: ServerConfig) -> Any:
    from engine.generator import StreamingGenerator

    return StreamingGenerator.from_pretrained(
        config.model,
        device=config.device,
        lipar=config.lipar,
        random_weights=config.random_weights,
        size=config.size,
        weights=config.weights,
    )


# aiohttp reads on ("lingers") for 10 s after a response to a request whose body was not read
# to its end, and logs a traceback when that body is broken (gzip that is not): a refused body
# is dropped with its connection instead
RUNNER_SETTINGS: dict[str, Any] = {"lingering_time": 0.0}


def serve(config: ServerConfig) -> None:
    """Run the server until Ctrl-C (blocking)."""
    web.run_app(create_app(config), host=config.host, port=config.port, print=logger.info, **RUNNER_SETTINGS)


class BackgroundServer:
    """The server on its own event loop in a thread: for tests and benchmarks in one process.

    with BackgroundServer(ServerConfig(port=0), generator) as srv:
        srv.url  # http://127.0.0.1:<port>
    """

    def __init__(self, config: ServerConfig, generator: Any | None = None, start_timeout_s: float = 120.0) -> None:
        self.app = create_app(config, generator)
        self._config = config
        self._start_timeout_s = start_timeout_s
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="stream-server", daemon=True)
        self.url = ""

    @property
    def server(self) -> StreamServer:
        return self.app[SERVER_KEY]

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        if not self._ready.wait(self._start_timeout_s):
            raise TimeoutError(f"server did not start within {self._start_timeout_s} s")
        if self._failure is not None:
            raise RuntimeError("server failed to start") from self._failure
        return self

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop (where its state lives) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.app, handle_signals=False, **RUNNER_SETTINGS)
        try:
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self._config.host, self._config.port)
            self._loop.run_until_complete(site.start())
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()
