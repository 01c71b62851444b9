import dataclasses

import pytest

from build_engines.export import export_step
from engine.config import CONFIGS, KVWindow
from engine.dit import CausalDiT, init_weights

GRID = (4, 4)  # 16 tokens per frame: a 64x64 video for the small config


def small_config(**changes):
    """A 2-layer model with tiny widths and a 4-slot window: exports and runs in well under a second."""
    base = dict(
        dim=64, layers=2, heads=4, ffn_dim=128, latent_channels=4, text_dim=16, text_len=5, window=KVWindow(1, 2)
    )
    base.update(changes)
    return dataclasses.replace(CONFIGS["tiny"], **base)


@pytest.fixture(scope="session")
def small_dit():
    dit = CausalDiT(small_config()).eval()
    init_weights(dit, seed=1)
    return dit


@pytest.fixture(scope="session")
def exported(small_dit, tmp_path_factory):
    """bucket -> ONNX path of the small model's step graph, each exported once per session."""
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}

    def get(bucket: int):
        if bucket not in paths:
            paths[bucket] = export_step(small_dit, GRID, bucket, folder / f"small-k{bucket}.onnx")
        return paths[bucket]

    return get
