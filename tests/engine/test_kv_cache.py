import pytest
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


def make_block_cache(sinks=1, m=3, block=3, n=2, token_dim=4):
    return RollingKVCache(1, 1, n, 1, 2, KVWindow(sinks, m, block), "cpu", torch.float32, token_dim=token_dim)


def write_block(cache, first_frame):
    """Each frame's keys and clean tokens hold its time index."""
    cache.append()
    n, block = cache.tokens_per_frame, cache.window.block
    idx = cache.block_token_index(torch.arange(block * n))
    values = torch.arange(first_frame, first_frame + block).repeat_interleave(n).float()
    cache.k[0, 0, idx] = values[:, None, None]
    cache.commit(values[None, :, None].expand(1, -1, 4))


def test_blocks_are_sized_into_the_cache_and_seen_whole():
    cache = make_block_cache(sinks=1, m=3, block=3)
    assert cache.k.shape[2] == (1 + 3 + 3) * 2 and cache.window.slots == 7
    lengths, contexts = [], []
    for _ in range(4):
        cache.append()
        lengths.append(cache.valid_tokens // 2)
        contexts.append(cache.context_frames)
        cache.commit()
    assert lengths == [3, 6, 7, 7]  # the block's own three frames are visible to it (block-causal)
    assert contexts == [0, 3, 4, 4]


def test_block_eviction_keeps_sinks_and_the_last_m_frames():
    cache = make_block_cache(sinks=1, m=3, block=3)
    for b in range(5):
        write_block(cache, 3 * b)  # frames 0..14
    cache.append()  # frames 15..17
    visible = set(cache.k[0, 0, : cache.valid_tokens, 0, 0].tolist())
    fresh = {cache.slot_time[s] for s in range(7) if cache.slot_time[s] >= 0}
    assert fresh == {0, 12, 13, 14}  # sink + last m = 3 clean frames; the block's slots are open
    assert {0.0, 12.0, 13.0, 14.0} <= visible
    assert sorted(cache.current_slots) == sorted(set(range(1, 7)) - {cache.slot_of(f) for f in (12, 13, 14)})


def test_block_token_index_and_cached_blocks_follow_time():
    cache = make_block_cache(sinks=0, m=3, block=3, n=2)
    for b in range(3):
        write_block(cache, 3 * b)  # frames 0..8; slots hold 6, 7, 8 | 3, 4, 5
    assert cache.cached_blocks() == [[cache.slot_of(f) for f in (3, 4, 5)], [cache.slot_of(f) for f in (6, 7, 8)]]
    slots = cache.cached_blocks()[0]
    idx = cache.block_token_index(torch.arange(6), slots)
    torch.testing.assert_close(cache.clean[0, idx, 0], torch.tensor([3.0, 3, 4, 4, 5, 5]))
    cache.append()  # frames 9..11 take the slots of 3, 4, 5
    keys = cache.keys_up_to(7)
    assert keys.shape == (cache.valid_tokens,)
    assert keys.view(-1, 2).all(1).tolist() == [cache.slot_time[s] in (6, 7) for s in range(6)]


def test_reset_forgets_slot_times():
    cache = make_block_cache()
    write_block(cache, 0)
    cache.reset()
    assert cache.cached_blocks() == [] and cache.frames == 0 and cache.current_slots == [0, 1, 2]


def test_block_token_index_stays_right_as_the_ring_turns():
    """The slot offsets are kept per slot tuple: every block of a turning ring still gets its own."""
    cache = make_block_cache(sinks=1, m=2, block=2, n=3)
    for _ in range(7):
        cache.append()
        idx = cache.block_token_index(torch.arange(6))
        expected = [s * 3 + j for s in cache.current_slots for j in range(3)]
        assert idx.tolist() == expected
        cache.commit()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_block_token_index_does_not_sync_the_host_once_the_ring_has_turned():
    """Each block's cache write indices come from the slots; made afresh from a Python list, they were a
    copy from pageable host memory, which waits for the GPU: two host syncs in every denoise."""
    cache = RollingKVCache(1, 1, 4, 1, 2, KVWindow(1, 2), "cuda", torch.float32)
    idx = torch.arange(4, device="cuda")
    for _ in range(cache.window.slots):  # the first turn makes each slot tuple's offsets once
        cache.append()
        cache.block_token_index(idx)
        cache.commit()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(cache.window.slots):
            cache.append()
            cache.block_token_index(idx)
            cache.commit()
    finally:
        torch.cuda.set_sync_debug_mode("default")
