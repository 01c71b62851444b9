"""Video files in and out through PyAV (H.264 MP4 out; anything FFmpeg reads in, or OpenCV reads without PyAV)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np


def read_frames(path: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Decoded RGB frames, uint8 (H, W, 3). Raises ValueError if the file is not a readable video. Decodes
    through PyAV, or, where PyAV is not installed, OpenCV's own FFmpeg (the GPU image has OpenCV only)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"source video not found: {path}")
    try:
        import av  # noqa: F401
    except ImportError:
        frames = _decode_opencv(path)
    else:
        frames = _decode_pyav(path)
    count = 0
    with closing(frames):  # a stop at `limit` closes the file now, not when the generator is collected
        for frame in frames:
            yield frame
            count += 1
            if limit is not None and count >= limit:
                return
    if count == 0:
        raise ValueError(f"{path} contains no decodable frames")


def _decode_pyav(path: Path) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read source video {path}: {e}") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode source video {path}: {e}") from None


def _decode_opencv(path: Path) -> Iterator[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot read source video {path}")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


class VideoWriter:
    """H.264 (yuv420p) MP4 writer; frames are uint8 (H, W, 3) of one size (even sides)."""

    def __init__(self, path: str | Path, fps: int, crf: int = 18) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf)}
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        if self.frames == 0:
            self.stream.height, self.stream.width = frame.shape[:2]
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(frames, path: str | Path, fps: int = 16) -> None:
    with VideoWriter(path, fps) as w:
        for f in frames:
            w.write(np.ascontiguousarray(f))
