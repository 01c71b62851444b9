import pytest
import torch

from lipar.prune import gather, positions, restore


def tokens(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_gather_takes_the_kept_rows_in_order():
    x = tokens(2, 10, 6)
    idx = torch.tensor([0, 3, 4, 9])
    out = gather(x, idx)
    assert out.shape == (2, 4, 6)
    for j, n in enumerate(idx.tolist()):
        assert torch.equal(out[:, j], x[:, n])


def test_restore_copies_exactly_the_pruned_positions_from_previous():
    previous = tokens(2, 10, 6, seed=1)
    before = previous.clone()
    kept = tokens(2, 3, 6, seed=2)
    idx = torch.tensor([1, 5, 9])
    out = restore(kept, idx, previous)
    pruned = [n for n in range(10) if n not in idx.tolist()]
    assert torch.equal(out[:, idx], kept)
    assert torch.equal(out[:, pruned], previous[:, pruned])
    assert torch.equal(previous, before), "previous is not modified"


def test_gather_restore_round_trip():
    x = tokens(1, 12, 4, seed=3)
    previous = tokens(1, 12, 4, seed=4)
    idx = torch.tensor([2, 3, 7, 11])
    out = restore(gather(x, idx), idx, previous)
    assert torch.equal(out[:, idx], x[:, idx])
    assert torch.equal(restore(gather(x, idx), idx, x), x)
    empty = torch.zeros(0, dtype=torch.int64)
    assert torch.equal(restore(gather(x, empty), empty, previous), previous)


def test_positions_are_t_row_col_in_row_major_order():
    assert positions(3, 2, 3).tolist() == [[3, r, c] for r in range(2) for c in range(3)]
    idx = torch.tensor([1, 5])
    assert positions(0, 2, 3, idx).tolist() == [[0, 0, 1], [0, 1, 2]]
    assert positions(0, 2, 3, idx).dtype == torch.int64


def test_bad_inputs_raise_clear_errors():
    x = tokens(1, 8, 4)
    idx = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        gather(x[0], idx)
    with pytest.raises(ValueError, match="int64"):
        gather(x, idx.int())
    with pytest.raises(ValueError, match="do not agree"):
        restore(tokens(1, 3, 4), idx, x)
    with pytest.raises(ValueError, match="do not agree"):
        restore(tokens(1, 2, 5), idx, x)
    with pytest.raises(ValueError, match="dtype"):
        restore(tokens(1, 2, 4).double(), idx, x)
    with pytest.raises(ValueError, match="t >= 0"):
        positions(-1, 2, 2)
    with pytest.raises(ValueError, match="positive grid"):
        positions(0, 0, 2)
