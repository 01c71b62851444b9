"""`python -m engine.convert SRC OUT_DIR`: a checkpoint (e.g. Self-Forcing's `self_forcing_dmd.pt`) ->
OUT_DIR/dit.safetensors, bf16 by default, for fast later loads (`--weights OUT_DIR`).

The file is unwrapped as `engine.checkpoint.read_state` does and checked key for key against the
preset's DiT (built on the meta device, so nothing of the model's size is allocated) before writing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from engine.checkpoint import DIT_FILE, check_state, read_state

log = logging.getLogger(__name__)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def convert(src: str | Path, out_dir: str | Path, model: str = "self-forcing", dtype: str = "bf16") -> Path:
    """Write the DiT weights of `src` to `out_dir`/dit.safetensors; returns its path."""
    from safetensors.torch import save_file

    from engine.config import get_config
    from engine.dit import CausalDiT

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    cfg = get_config(model)
    state = read_state(src)
    with torch.device("meta"):
        dit = CausalDiT(cfg)
    check_state(dit, state, src)
    out = Path(out_dir).expanduser() / DIT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    converted = {}
    for key, tensor in tqdm(state.items(), desc=f"to {dtype}", unit="tensor"):
        converted[key] = (tensor.to(DTYPES[dtype]) if tensor.is_floating_point() else tensor).contiguous()
    save_file(converted, str(out), metadata={"source": Path(src).name, "model": model})
    log.info("wrote %s (%d tensors, %s)", out, len(converted), dtype)
    return out


def main(argv: list[str] | None = None) -> int:
    from engine.config import CONFIGS

    p = argparse.ArgumentParser(prog="python -m engine.convert", description=__doc__.splitlines()[0])
    p.add_argument("src", help="checkpoint file: .pt/.pth (Self-Forcing, CausVid, LongLive) or .safetensors")
    p.add_argument("out_dir", help="folder to write dit.safetensors into")
    p.add_argument("--model", default="self-forcing", choices=list(CONFIGS), help="preset the weights must fit")
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert(args.src, args.out_dir, args.model, args.dtype)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
