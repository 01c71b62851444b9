"""Write a half-precision copy of all-MiniLM-L6-v2 (~45 MB) to carry to a machine without the pip package.

    python -m train.export_minilm OUT_DIR
    python -m train.export_minilm OUT_DIR --compact      # ~33 MB, for a device call beside the tree
    python -m train.export_minilm --expand COMPACT_DIR OUT_DIR   # on the device: back to OUT_DIR

`engine.text.MiniLMEncoder(text_len, path=OUT_DIR)` loads it (upcast to fp32 on the CPU).

`--compact` exists because a device call carries at most 64 MiB with the working tree (~27 MiB): the
fp16 copy does not fit beside it. Half of MiniLM is its 30,522-row word-embedding table, of which the
training captions and the evaluation prompts use ~150 rows. Those rows stay fp16, exactly; every other
row is stored as int8 with one fp16 scale per row (a relative error of ~0.4 %), so that a prompt outside
the training vocabulary still encodes, nearly as the full model would. `--expand` rebuilds the ordinary
fp16 folder that transformers loads.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.text import minilm_package_dir

log = logging.getLogger(__name__)

# what AutoTokenizer / AutoModel read; the sentence-transformers extras (pooling, README) stay behind
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WEIGHTS = "model.safetensors"
COMPACT_WEIGHTS = "model.compact.safetensors"
TABLE = "embeddings.word_embeddings.weight"


def export_minilm(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Copy the tokenizer/config files and an fp16 copy of the weights from `source` (default: the
    installed package) into `out_dir`; returns `out_dir`."""
    src = minilm_package_dir() if source is None else Path(source)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    tensors = load_file(src / WEIGHTS)
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    _write(src, out, half, WEIGHTS)
    size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    log.info("wrote %d tensors in fp16 to %s (%.1f MB)", len(half), out, size_mb)
    return out


def compact_minilm(full_dir: str | Path, out_dir: str | Path, texts: Iterable[str]) -> Path:
    """From an `export_minilm` folder, write `out_dir` with the word-embedding table compacted: the rows
    of every token of `texts` in fp16, the others int8 with a per-row scale. Returns `out_dir`."""
    from transformers import AutoTokenizer

    src, out = Path(full_dir), Path(out_dir)
    if out.resolve() == src.resolve():
        raise ValueError("compact_minilm writes a new folder: out_dir must differ from full_dir")
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    ids = sorted({i for text in texts for i in tokenizer(text)["input_ids"]})
    tensors = load_file(src / WEIGHTS)
    table = tensors.pop(TABLE).float()
    scale = (table.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
    exact = torch.tensor(ids, dtype=torch.int64)
    tensors.update(
        {
            TABLE + ".int8": torch.round(table / scale).to(torch.int8),
            TABLE + ".scale": scale.half(),
            TABLE + ".exact_ids": exact,
            TABLE + ".exact_rows": table[exact].half(),
        }
    )
    _write(src, out, tensors, COMPACT_WEIGHTS)
    size_mb = (out / COMPACT_WEIGHTS).stat().st_size / 1e6
    log.info("wrote %s: %d exact rows, the rest int8 (%.1f MB)", out, len(ids), size_mb)
    return out


def expand_minilm(compact_dir: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the fp16 folder transformers loads from a `compact_minilm` folder. Returns `out_dir`."""
    src, out = Path(compact_dir), Path(out_dir)
    if not (src / COMPACT_WEIGHTS).is_file():
        raise FileNotFoundError(f"{src} has no {COMPACT_WEIGHTS}: not a compact MiniLM folder")
    tensors = load_file(src / COMPACT_WEIGHTS)
    table = tensors.pop(TABLE + ".int8").float() * tensors.pop(TABLE + ".scale").float()
    exact = tensors.pop(TABLE + ".exact_ids")
    table[exact] = tensors.pop(TABLE + ".exact_rows").float()
    tensors[TABLE] = table.half()
    _write(src, out, tensors, WEIGHTS)
    return out


def _write(src: Path, out: Path, tensors: dict[str, torch.Tensor], weights_name: str) -> None:
    """`out` (created) gets src's tokenizer and config files and `tensors` as `weights_name`."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(src / name, out / name)
    save_file(tensors, out / weights_name, metadata={"format": "pt"})


def training_texts(clips: int = 1000) -> list[str]:
    """The texts the DiT trains and is evaluated on: captions of `clips` sampled clips (their ~150 token
    ids stop growing after a few hundred), recoloured too, and the evaluation's prompts."""
    from train import evaluate
    from train.dataset import COLORS, caption, recolor, sample_clip

    texts = []
    for seed in range(clips):
        params = sample_clip(seed, 20)
        texts += [caption(params, seed), caption(recolor(params, seed), seed)]
    texts += [caption(p) for p in evaluate.fidelity_clips(16)]
    texts += [evaluate.t2v_prompt(c, b, s, d) for c, s, d, b in evaluate.MOTION_PROMPTS]
    texts += [evaluate.t2v_prompt(c, "black") for c in COLORS]
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--compact", action="store_true", help="int8 embedding rows except the training vocabulary's")
    mode.add_argument("--expand", type=Path, metavar="COMPACT_DIR", help="rebuild out_dir from a --compact folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.expand:
        expand_minilm(args.expand, args.out_dir)
    elif args.compact:
        with tempfile.TemporaryDirectory() as full:
            compact_minilm(export_minilm(full), args.out_dir, training_texts())
    else:
        export_minilm(args.out_dir)


if __name__ == "__main__":
    main()
