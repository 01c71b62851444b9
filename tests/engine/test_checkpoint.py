import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.checkpoint import load_dit, load_state, load_state_dict_checked, read_state, unwrap_state
from engine.config import get_config
from engine.convert import main as convert_main
from engine.dit import CausalDiT, init_weights
from tests.engine.conftest import small_config


@pytest.fixture(scope="module")
def tiny_states():
    """Two different state dicts of the tiny DiT: (ema, plain)."""
    dit = CausalDiT(get_config("tiny"))
    init_weights(dit, seed=1)
    ema = {k: v.clone() for k, v in dit.state_dict().items()}
    init_weights(dit, seed=2)
    return ema, dit.state_dict()


def prefixed(state, prefix="model."):
    return {prefix + k: v for k, v in state.items()}


def test_self_forcing_pt_loads_generator_ema_with_no_conversion(tmp_path, tiny_states):
    ema, plain = tiny_states
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": prefixed(plain), "generator_ema": prefixed(ema)}, path)
    dit = load_dit("tiny", weights=path)
    for k, v in dit.state_dict().items():
        torch.testing.assert_close(v, ema[k])


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"generator": prefixed(s)},
        lambda s: {"model": s, "epoch": 3},
        lambda s: {"state_dict": prefixed(s, "module.")},
        lambda s: prefixed(prefixed(s, "model."), "module."),
        lambda s: s,
    ],
)
def test_wrappers_and_prefixes_are_unwrapped(tmp_path, tiny_states, wrap):
    ema, _ = tiny_states
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(ema), path)
    assert set(read_state(path)) == set(ema)


def test_safetensors_file_and_folder(tmp_path, tiny_states):
    ema, _ = tiny_states
    save_file(prefixed(ema), str(tmp_path / "dit.safetensors"))
    for weights in (tmp_path, tmp_path / "dit.safetensors"):
        dit = load_dit("tiny", weights=weights)
        torch.testing.assert_close(dit.state_dict()["head.head.weight"], ema["head.head.weight"])


def test_wrong_keys_are_named(tmp_path, tiny_states):
    ema, _ = tiny_states
    state = dict(ema)
    del state["blocks.0.ffn.0.weight"]
    state["blocks.0.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"generator_ema": state}, path)
    with pytest.raises(ValueError, match=r"1 missing \['blocks.0.ffn.0.weight'\].*1 unexpected \['blocks.0.extra"):
        load_dit("tiny", weights=path)


def test_shape_mismatch_is_named_with_both_shapes(tmp_path):
    small = CausalDiT(small_config())
    state = small.state_dict()
    path = tmp_path / "other_width.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ValueError, match=r"with other shapes \['patch_embedding.weight: file \(64, 4, 1, 2, 2\) vs"):
        load_dit("tiny", weights=path)


def test_long_lists_are_cut_after_the_first_few(tiny_states):
    dit = CausalDiT(get_config("tiny"))
    with pytest.raises(ValueError, match=r"missing \[.*\] and \d+ more"):
        load_state_dict_checked(dit, {"x": torch.zeros(1)})


class NotATensor:
    pass


def test_unreadable_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(ValueError, match="neither a safetensors file nor a PyTorch checkpoint"):
        read_state(text)
    pickled = tmp_path / "object.pt"
    torch.save({"generator": NotATensor()}, pickled)  # arbitrary pickles are never executed
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state(pickled)


def test_dict_without_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "opt.pt"
    torch.save({"optimizer": {"lr": torch.tensor(1.0), "step": 3}, "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"found no state dict: top-level keys \['optimizer', 'epoch'\]"):
        read_state(path)


def test_missing_weights_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dit.safetensors in"):
        load_dit("tiny", weights=tmp_path)
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load_dit("tiny", weights=tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_state(CausalDiT(small_config()), tmp_path / "nope.safetensors")


def test_convert_writes_bf16_safetensors_that_load(tmp_path, tiny_states, capsys):
    ema, plain = tiny_states
    src = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": prefixed(plain), "generator_ema": prefixed(ema)}, src)
    assert convert_main([str(src), str(tmp_path / "out"), "--model", "tiny"]) == 0
    written = load_file(str(tmp_path / "out" / "dit.safetensors"))
    assert set(written) == set(ema) and all(v.dtype == torch.bfloat16 for v in written.values())
    dit = load_dit("tiny", weights=tmp_path / "out")
    torch.testing.assert_close(dit.state_dict()["head.head.weight"], ema["head.head.weight"].bfloat16().float())


def test_convert_refuses_a_checkpoint_of_another_model(tmp_path, tiny_states, capsys):
    ema, _ = tiny_states
    src = tmp_path / "tiny.pt"
    torch.save(ema, src)
    assert convert_main([str(src), str(tmp_path / "out")]) == 2  # default model: self-forcing
    assert "does not fit CausalDiT" in capsys.readouterr().err
    assert not (tmp_path / "out" / "dit.safetensors").exists()


def wan_1_3b_layout() -> dict[str, tuple[int, ...]]:
    """Wan2.1-T2V-1.3B parameter names and shapes as published (not derived from our module)."""
    d, ffn, text, freq, layers = 1536, 8960, 4096, 256, 30
    spec = {
        "patch_embedding.weight": (d, 16, 1, 2, 2),
        "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, text),
        "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d),
        "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, freq),
        "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d),
        "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d),
        "time_projection.1.bias": (6 * d,),
        "head.modulation": (1, 2, d),
        "head.head.weight": (64, d),
        "head.head.bias": (64,),
    }
    for i in range(layers):
        b = f"blocks.{i}."
        spec[b + "modulation"] = (1, 6, d)
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                spec[f"{b}{attn}.{p}.weight"] = (d, d)
                spec[f"{b}{attn}.{p}.bias"] = (d,)
            spec[f"{b}{attn}.norm_q.weight"] = (d,)
            spec[f"{b}{attn}.norm_k.weight"] = (d,)
        spec[b + "norm3.weight"] = (d,)
        spec[b + "norm3.bias"] = (d,)
        spec[b + "ffn.0.weight"] = (ffn, d)
        spec[b + "ffn.0.bias"] = (ffn,)
        spec[b + "ffn.2.weight"] = (d, ffn)
        spec[b + "ffn.2.bias"] = (d,)
    return spec


@pytest.mark.parametrize("model", ["wan2.1-1.3b", "self-forcing"])
def test_whole_1_3b_checkpoint_layout_loads_key_for_key_on_meta(model):
    spec = wan_1_3b_layout()
    assert len(spec) == 825
    sd = {f"model.{k}": torch.empty(shape, device="meta", dtype=torch.bfloat16) for k, shape in spec.items()}
    state = unwrap_state({"generator": sd, "generator_ema": sd}, "self_forcing_dmd.pt")
    with torch.device("meta"):
        dit = CausalDiT(get_config(model))
    load_state_dict_checked(dit, state, "self_forcing_dmd.pt")
    assert {k: tuple(v.shape) for k, v in dit.state_dict().items()} == spec
