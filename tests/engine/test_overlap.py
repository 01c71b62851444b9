import pytest
import torch

from engine.overlap import SideStream


def test_on_the_cpu_the_work_runs_at_once_in_order():
    calls = []
    side = SideStream(torch.device("cpu"))
    assert not side.overlaps
    side.start(lambda x: calls.append("ran") or x * 2, torch.ones(3))
    assert calls == ["ran"], "nothing is deferred without a CUDA stream"
    calls.append("then")
    assert torch.equal(side.result(), torch.full((3,), 2.0))
    assert calls == ["ran", "then"]


def test_one_call_at_a_time():
    side = SideStream(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="nothing was started"):
        side.result()
    side.start(lambda x: x, torch.zeros(1))
    with pytest.raises(RuntimeError, match="was not taken"):
        side.start(lambda x: x, torch.zeros(1))
    side.result()
    with pytest.raises(RuntimeError, match="nothing was started"):
        side.result()
