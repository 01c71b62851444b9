"""aiohttp server: the page, `POST /offer` (WebRTC signalling), `GET /health`, `GET /metrics`.

Everyone sees the same stream: one generator on one worker thread, one GeneratedVideoTrack
per viewer, and a `control` data channel per viewer whose commands steer the shared stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from stream.config import ServerConfig, video_bitrate
from stream.metrics import StreamMetrics
from stream.protocol import CHANNEL_LABEL, parse_command, server_message
from stream.rtc import allow_loopback_candidates, apply_bitrate, codec_preferences
from stream.tracks import GeneratedVideoTrack, consume_source
from stream.worker import FrameQueue, GeneratorWorker

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(eq=False)
class Viewer:
    id: str
    pc: RTCPeerConnection
    frames: FrameQueue
    log: logging.LoggerAdapter
    channel: RTCDataChannel | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send(self, text: str) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)


class StreamServer:
    def __init__(self, config: ServerConfig, generator: Any | None = None) -> None:
        self.config = config
        self.metrics = StreamMetrics()
        self.viewers: dict[str, Viewer] = {}
        self._generator = generator
        self._worker: GeneratorWorker | None = None

    @property
    def worker(self) -> GeneratorWorker:
        if self._worker is None:
            raise RuntimeError("the server has not started")
        return self._worker

    async def startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
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
        height, width = self._worker.size
        apply_bitrate(self.config.bitrate or video_bitrate(height, width, self.config.target_fps))

    async def shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(self._close(v) for v in list(self.viewers.values())))
        if self._worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._worker.stop)

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
        try:
            params = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body is larger than the limit of {self.config.max_body_bytes} bytes")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, 'body must be JSON: {"sdp": "<offer SDP>", "type": "offer"}')
        if (
            not isinstance(params, dict)
            or params.get("type") != "offer"
            or not isinstance(params.get("sdp"), str)
        ):
            return _error(400, 'body must be JSON: {"sdp": "<offer SDP>", "type": "offer"}')
        if len(self.viewers) >= self.config.max_viewers:
            return _error(
                503,
                f"server busy: {len(self.viewers)} viewers connected, the limit is {self.config.max_viewers}",
            )

        viewer_id = uuid.uuid4().hex[:8]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        frames = self.worker.subscribe()
        viewer = Viewer(viewer_id, pc, frames, _ViewerLog(logger, viewer_id))
        self.viewers[viewer_id] = viewer
        self.metrics.viewers.set(len(self.viewers))
        viewer.log.info("offer from %s", request.remote)

        track = GeneratedVideoTrack(frames, self.metrics, on_stop=partial(self.worker.unsubscribe, frames))
        transceiver = pc.addTransceiver(track, direction="sendrecv")
        transceiver.setCodecPreferences(codec_preferences(self.config.prefer_codec))
        pc.on("datachannel", partial(self._on_datachannel, viewer))
        pc.on("track", partial(self._on_track, viewer))
        pc.on("connectionstatechange", partial(self._on_connection_state, viewer))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type="offer"))
            if transceiver.mid is None:
                raise ValueError("it has no video section (add a recvonly or sendrecv video transceiver)")
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises many types for a malformed offer; all mean the same
            viewer.log.info("rejected offer: %r", exc)
            await self._close(viewer)
            return _error(400, f"invalid SDP offer: {exc or type(exc).__name__}")
        viewer.spawn(self._connect_deadline(viewer))
        answer = pc.localDescription
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "viewer": viewer_id})

    # -- peer events -------------------------------------------------------------------------

    def _on_datachannel(self, viewer: Viewer, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL:
            viewer.log.info(
                "ignoring data channel %r (the control channel is %r)", channel.label, CHANNEL_LABEL
            )
            return
        viewer.channel = channel
        channel.on("message", lambda raw: viewer.spawn(self._on_message(viewer, raw)))
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

    async def _on_message(self, viewer: Viewer, raw: str | bytes) -> None:
        try:
            command = parse_command(
                raw, max_bytes=self.config.max_message_bytes, max_prompt_chars=self.config.max_prompt_chars
            )
            await asyncio.wrap_future(self.worker.submit(command, viewer.id))
        except ValueError as exc:  # ProtocolError, or the generator refusing a value (e.g. a prompt)
            viewer.log.info("rejected message: %s", exc)
            viewer.send(server_message("error", message=str(exc)))
        except Exception as exc:
            viewer.log.exception("could not apply message")
            viewer.send(server_message("error", message=f"could not apply the message: {exc}"))

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
            dropped=viewer.frames.dropped,
            source_frames=snap.source_frames,
            mask=_encode_mask(snap.mask),
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
        self.worker.unsubscribe(viewer.frames)
        self.worker.release_source(viewer.id)
        current = asyncio.current_task()
        for task in list(viewer.tasks):
            if task is not current:
                task.cancel()
        await viewer.pc.close()
        viewer.log.info("closed")


class _ViewerLog(logging.LoggerAdapter):
    """Prefixes every line with the viewer's id, so interleaved connections stay readable."""

    def __init__(self, log: logging.Logger, viewer_id: str) -> None:
        super().__init__(log, {"viewer": viewer_id})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"viewer {self.extra['viewer']}: {msg}", kwargs


def _discard(frame: Any) -> None:
    pass


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
    app = web.Application(client_max_size=config.max_body_bytes)
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


def serve(config: ServerConfig) -> None:
    """Run the server until Ctrl-C (blocking)."""
    web.run_app(create_app(config), host=config.host, port=config.port, print=logger.info)


class BackgroundServer:
    """The server on its own event loop in a thread: for tests and benchmarks in one process.

    with BackgroundServer(ServerConfig(port=0), generator) as srv:
        srv.url  # http://127.0.0.1:<port>
    """

    def __init__(
        self, config: ServerConfig, generator: Any | None = None, start_timeout_s: float = 120.0
    ) -> None:
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
        runner = web.AppRunner(self.app, handle_signals=False)
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
