"""A Python viewer: the page's offer/answer and control protocol over aiortc (tests, benchmarks).

async with StreamClient("http://127.0.0.1:8080") as viewer:
    frame = await viewer.next_frame(timeout=5)        # uint8 (H, W, 3), decoded
    viewer.send({"type": "prompt", "text": "a blue ball"})
    stats = await viewer.next_message("stats", timeout=2)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from stream.protocol import CHANNEL_LABEL
from stream.rtc import codec_preferences


@dataclass(frozen=True)
class ReceivedFrame:
    image: np.ndarray  # uint8 (H, W, 3)
    received_at: float  # time.monotonic() when the decoded frame came out of aiortc


class OfferRejected(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"offer rejected ({status}): {message}")
        self.status = status
        self.message = message


class StreamClient:
    def __init__(
        self,
        url: str,
        *,
        camera: MediaStreamTrack | None = None,
        codec: str | None = None,
        max_frames: int = 256,
        token: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        self._camera = camera
        self._codec = codec  # None = let the server choose among everything aiortc offers
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel(CHANNEL_LABEL)
        self.frames: asyncio.Queue[ReceivedFrame] = asyncio.Queue(max_frames)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._channel_open = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self.viewer_id = ""

    async def __aenter__(self) -> StreamClient:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> None:
        if self._camera is not None:
            transceiver = self.pc.addTransceiver(self._camera, direction="sendrecv")
        else:
            transceiver = self.pc.addTransceiver("video", direction="recvonly")
        if self._codec is not None:
            transceiver.setCodecPreferences([c for c in codec_preferences(self._codec) if _is(c, self._codec)])
        self.pc.on("track", self._on_track)
        self.channel.on("open", self._channel_open.set)
        self.channel.on("message", self._on_message)
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers ICE candidates
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{self.url}/offer", json=offer, headers=self._headers, timeout=aiohttp.ClientTimeout(timeout)
            ) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise OfferRejected(resp.status, body.get("error", ""))
        self.viewer_id = body["viewer"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await asyncio.wait_for(self._channel_open.wait(), timeout)

    def send(self, message: dict[str, Any] | str) -> None:
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def next_frame(self, timeout: float) -> ReceivedFrame:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def next_message(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next server message of type `kind`; others received meanwhile are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.messages.get(), max(0.0, deadline - time.monotonic()))
            if msg.get("type") == kind:
                return msg

    def drain(self) -> None:
        """Forget frames and messages received so far."""
        for q in (self.frames, self.messages):
            while not q.empty():
                q.get_nowait()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            received_at = time.monotonic()
            received = ReceivedFrame(frame.to_ndarray(format="rgb24"), received_at)
            if self.frames.full():  # keep the newest, as the server does for slow viewers
                self.frames.get_nowait()
            self.frames.put_nowait(received)

    def _on_message(self, raw: str | bytes) -> None:
        self.messages.put_nowait(json.loads(raw))


def _is(codec: Any, name: str) -> bool:
    return codec.mimeType.lower() in (f"video/{name}", "video/rtx")
