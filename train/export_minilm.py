"""Write a half-precision copy of all-MiniLM-L6-v2 (~45 MB) to carry to a machine without the pip package.

    python -m train.export_minilm OUT_DIR

`engine.text.MiniLMEncoder(text_len, path=OUT_DIR)` loads it (upcast to fp32 on the CPU).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from engine.text import minilm_package_dir

log = logging.getLogger(__name__)

# what AutoTokenizer / AutoModel read; the sentence-transformers extras (pooling, README) stay behind
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WEIGHTS = "model.safetensors"


def export_minilm(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Copy the tokenizer/config files and an fp16 copy of the weights from `source` (default: the
    installed package) into `out_dir`; returns `out_dir`."""
    src = minilm_package_dir() if source is None else Path(source)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(src / name, out / name)
    tensors = load_file(src / WEIGHTS)
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(half, out / WEIGHTS, metadata={"format": "pt"})
    size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    log.info("wrote %d tensors in fp16 to %s (%.1f MB)", len(half), out, size_mb)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    export_minilm(args.out_dir)


if __name__ == "__main__":
    main()
