import dataclasses

import pytest
import torch

from engine.config import CONFIGS, KVWindow
from engine.dit import CausalDiT, init_weights


def small_config(**changes):
    """A 2-layer model with tiny widths: fast enough for exact-equivalence tests on the CPU."""
    base = dict(dim=64, layers=2, heads=4, ffn_dim=128, latent_channels=4, text_dim=16, text_len=5)
    base.update(changes)
    return dataclasses.replace(CONFIGS["tiny"], **base)


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    cfg = small_config(window=KVWindow(sinks=1, m=2))
    model = CausalDiT(cfg).double().eval()
    init_weights(model, seed=1)
    model.double()
    return model
