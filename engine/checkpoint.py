"""Weights in and out: safetensors and PyTorch `.pt/.pth` files, loaded key for key, with errors that say
what is wrong.

Self-Forcing, CausVid and LongLive save `torch.save({"generator": sd, "generator_ema": sd}, path)` with
the DiT's keys prefixed `model.`; their README loads `generator_ema`. `read_state` unwraps that (and
`model`, `state_dict`, `module.`/`model.` prefixes), so such a file loads with no conversion;
`python -m engine.convert` rewrites it as safetensors for faster later loads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
WRAPPERS = ("generator_ema", "generator", "model", "state_dict")  # first found wins: EMA weights first
PREFIXES = ("module.", "model.")  # DDP / FSDP and Self-Forcing's WanDiffusionWrapper
DIT_FILE = "dit.safetensors"
SHOWN = 5  # keys named in an error


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte header length and a JSON header ("{")."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a safetensors or `.pt/.pth` file (read with `weights_only=True`), unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        return unwrap_state(load_file(str(path)), path)
    try:
        try:  # memory-mapped: a 1.3B checkpoint is not read into memory twice
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be mapped
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a zip/pickle that is not plain tensors, or not a checkpoint at all
        raise ValueError(
            f"{path} is neither a safetensors file nor a PyTorch checkpoint of plain tensors "
            f"(torch.load with weights_only=True: {str(e).splitlines()[0]})"
        ) from None
    return unwrap_state(obj, path)


def unwrap_state(obj: object, source: str | Path = "state") -> dict[str, Tensor]:
    """Descend through wrapper dicts (`generator_ema` > `generator` > `model` > `state_dict`) to the tensors,
    then strip a prefix that every key carries (`module.`, `model.`, repeatedly)."""
    trail = []
    while isinstance(obj, dict) and not (obj and all(isinstance(v, Tensor) for v in obj.values())):
        key = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if key is None:
            found = [str(k) for k in obj][:SHOWN]
            raise ValueError(
                f"{source}: found no state dict: top-level keys {found}; expected tensors, "
                f"or one of {', '.join(WRAPPERS)} holding them"
            )
        trail.append(key)
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    if trail:
        log.info("%s: using the state dict under %s", source, " > ".join(trail))
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in obj):
                obj = {k[len(prefix) :]: v for k, v in obj.items()}
                stripped = True
    return obj


def _listed(keys: list, more: int) -> str:
    return f"{keys[:SHOWN]}{f' and {more - SHOWN} more' if more > SHOWN else ''}"


def check_state(module: nn.Module, state: dict[str, Tensor], source: str | Path = "state") -> None:
    """ValueError naming the first few missing, unexpected and wrongly shaped keys, if any."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing {_listed(missing, len(missing))}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected {_listed(unexpected, len(unexpected))}")
        if wrong:
            shapes = [f"{k}: file {a} vs model {b}" for k, a, b in wrong]
            problems.append(f"{len(wrong)} with other shapes {_listed(shapes, len(shapes))}")
        raise ValueError(f"{source} does not fit {type(module).__name__}: {'; '.join(problems)}")


def load_state_dict_checked(module: nn.Module, state: dict[str, Tensor], source: str | Path = "state") -> None:
    """Check, then copy key for key in the module's dtypes (a module on the meta device takes the tensors)."""
    check_state(module, state, source)
    own = module.state_dict()
    on_meta = any(t.is_meta for t in own.values())
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=on_meta)
    log.info("loaded %s (%d tensors)", source, len(state))


def load_state(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors or `.pt/.pth` file into `module`, key for key (see `read_state`)."""
    load_state_dict_checked(module, read_state(path), path)


def save_state(module: nn.Module, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
    save_tensors(module.state_dict(), path, dtype)


def save_tensors(state: dict[str, Tensor], path: str | Path, dtype: torch.dtype = torch.float16) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in state.items()}
    save_file(state, str(path))


def dit_weights_file(weights: str | Path) -> Path:
    """`--weights` is a checkpoint file (.safetensors/.pt/.pth) or a folder holding dit.safetensors."""
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / DIT_FILE).is_file():
            raise FileNotFoundError(
                f"no {DIT_FILE} in {path}; give the checkpoint file itself (e.g. self_forcing_dmd.pt), a "
                f"folder made by `python -m engine.convert`, or --random-weights for timing"
            )
        return path / DIT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"weights not found: {path}; give a checkpoint file or a folder with {DIT_FILE}, "
            f"or --random-weights for timing"
        )
    return path


def load_dit(name: str, weights: str | Path | None = None, random_weights: bool = False, seed: int = 0):
    """The preset's DiT (fp32, CPU) with its weights: from `weights` (a checkpoint file, or a folder
    holding dit.safetensors), else the repo's `engine/weights/<name>/`, or random only when asked for."""
    from engine.config import get_config
    from engine.dit import CausalDiT, init_weights

    dit = CausalDiT(get_config(name))
    if random_weights:
        init_weights(dit, seed)
    elif weights is not None:
        load_state(dit, dit_weights_file(weights))
    elif (WEIGHTS_DIR / name / DIT_FILE).is_file():
        load_state(dit, WEIGHTS_DIR / name / DIT_FILE)
    else:
        raise FileNotFoundError(
            f"no weights for model {name!r} in {WEIGHTS_DIR / name} (expected {DIT_FILE}); give a local "
            f"checkpoint (--weights FILE or DIR), or ask for random weights explicitly (--random-weights) for timing"
        )
    return dit
