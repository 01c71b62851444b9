"""Safetensors loading, key for key, with errors that say what is wrong."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"


def load_state(module: nn.Module, path: str | Path, strip_prefixes: tuple[str, ...] = ("model.",)) -> None:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = load_file(str(path))
    for prefix in strip_prefixes:  # Self-Forcing / CausVid checkpoints wrap the DiT as `model.`
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match {type(module).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"wrong shapes {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:5]]}"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    log.info("loaded %s (%d tensors)", path, len(state))


def save_state(module: nn.Module, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in module.state_dict().items()
    }
    save_file(state, str(path))


def load_dit(name: str, weights: str | Path | None = None, random_weights: bool = False, seed: int = 0):
    """The preset's DiT (fp32, CPU) with its weights: from `weights` (a local folder holding
    dit.safetensors), else the repo's `engine/weights/<name>/`, or random only when asked for."""
    from engine.config import get_config
    from engine.dit import CausalDiT, init_weights

    dit = CausalDiT(get_config(name))
    folder = Path(weights) if weights is not None else WEIGHTS_DIR / name
    if random_weights:
        init_weights(dit, seed)
    elif not (folder / "dit.safetensors").is_file():
        raise FileNotFoundError(
            f"no weights for model {name!r} in {folder} (expected dit.safetensors); give a local "
            f"checkpoint folder, or ask for random weights explicitly (--random-weights) for timing"
        )
    else:
        load_state(dit, folder / "dit.safetensors")
    return dit
