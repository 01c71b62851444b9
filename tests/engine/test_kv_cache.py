import torch

from engine.config import KVWindow
from engine.kv_cache import RollingKVCache


def make_cache(sinks=1, m=3, n=2):
    return RollingKVCache(1, 1, n, 1, 2, KVWindow(sinks, m), "cpu", torch.float32)


def write_frame(cache, value):
    k, v, k_pre = cache.frame(cache.append())
    for t in (k, v, k_pre):
        t.fill_(value)
    cache.commit()


def test_eviction_keeps_sinks_and_last_m_frames():
    cache = make_cache(sinks=2, m=3)
    for frame in range(12):
        write_frame(cache, frame)
    cache.append()  # frame 12 being generated: its slot is the oldest non-sink frame's
    k, _ = cache.view(0)
    frames_visible = sorted(set(k[0, :, 0, 0].tolist()))
    # sinks 0, 1; last three clean frames 9, 10, 11; and the evicted slot (held frame 8) now the current
    assert frames_visible[:2] == [0.0, 1.0]
    assert {9.0, 10.0, 11.0} <= set(frames_visible)
    assert 7.0 not in frames_visible
    assert cache.context_frames == 5
    assert cache.current_slot not in (0, 1)


def test_valid_prefix_grows_then_stays():
    cache = make_cache(sinks=1, m=2, n=4)
    lengths = []
    for _ in range(6):
        cache.append()
        lengths.append(cache.valid_tokens)
        cache.commit()
    assert lengths == [4, 8, 12, 16, 16, 16]


def test_views_share_storage_no_copies():
    cache = make_cache()
    cache.append()
    k, _ = cache.view(0)
    assert k.data_ptr() == cache.k.data_ptr()


def test_reset_starts_over():
    cache = make_cache()
    for f in range(5):
        write_frame(cache, f)
    cache.reset()
    assert cache.append() == 0 and cache.valid_tokens == 2 and cache.previous_slot is None
