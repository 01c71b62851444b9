"""engine/video_io.py: frames written as H.264 MP4 read back through PyAV, or OpenCV where PyAV is absent."""

import sys

import numpy as np
import pytest

from engine.video_io import read_frames, write_video


def _clip(count: int = 6) -> list[np.ndarray]:
    """Smooth colour bands moving right: what H.264 keeps well."""
    y, x = np.mgrid[0:48, 0:64]
    frames = []
    for i in range(count):
        phase = (x - 4 * i) / 10.0
        rgb = [np.sin(phase), np.cos(phase + y / 15.0), np.sin(y / 9.0)]
        frames.append((np.stack(rgb, axis=-1) * 100 + 128).astype(np.uint8))
    return frames


@pytest.fixture(params=["pyav", "opencv"])
def use_decoder(request, monkeypatch):
    """Call it after writing: with "opencv", `import av` then raises ImportError."""

    def apply() -> None:
        if request.param == "opencv":
            monkeypatch.setitem(sys.modules, "av", None)

    return apply


def test_both_decoders_read_back_what_was_written(tmp_path, use_decoder):
    frames = _clip()
    path = tmp_path / "clip.mp4"
    write_video(frames, path, fps=8)
    use_decoder()
    back = list(read_frames(path))
    assert len(back) == len(frames) and back[0].shape == (48, 64, 3) and back[0].dtype == np.uint8
    # lossy H.264 at crf 18: close to the frames written, far closer than to the next frame
    err = [np.abs(a.astype(int) - b).mean() for a, b in zip(back, frames)]
    assert max(err) < 12 < np.abs(frames[0].astype(int) - frames[1]).mean()
    assert len(list(read_frames(path, limit=2))) == 2


def test_both_decoders_refuse_a_file_that_is_not_a_video_clearly(tmp_path, use_decoder):
    use_decoder()
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        list(read_frames(path))
    with pytest.raises(ValueError, match="not found"):
        list(read_frames(tmp_path / "missing.mp4"))
