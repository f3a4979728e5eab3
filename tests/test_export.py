"""One on-disk model format (gaia2.export): round trips, format checks, mismatched or unsafe weights refused."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

from gaia2 import tokenizer, world_model
from gaia2.export import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, read_meta, save_pretrained
from gaia2.tokenizer import Tokenizer
from gaia2.tokenizer.export import load_tokenizer, read_tokenizer_meta, save_tokenizer
from gaia2.world_model import WorldModel
from gaia2.world_model.export import load_world_model, save_world_model


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (the zero-initialised ones too), so a weight lost in the round trip shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return _randomised(Tokenizer(tokenizer.tiny()), 0)


@pytest.fixture(scope="module")
def wm() -> WorldModel:
    return _randomised(WorldModel(world_model.config.tiny()), 1)


@pytest.fixture(scope="module")
def tok_dir(tok, tmp_path_factory) -> str:
    return save_tokenizer(str(tmp_path_factory.mktemp("export") / "tokenizer"), tok, extra={"step": 7})


@pytest.fixture(scope="module")
def wm_dir(wm, tmp_path_factory) -> str:
    return save_world_model(str(tmp_path_factory.mktemp("export") / "world_model"), wm, extra={"latent_std": 0.32})


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def copy_of(src: str, dst, edit: Callable[[dict], object] | None = None) -> str:
    """A copy of export directory ``src`` at ``dst``; ``edit`` changes its config.json's dict in place."""
    shutil.copytree(src, dst)
    if edit is not None:
        cfg_file = os.path.join(dst, CONFIG_FILE)
        with open(cfg_file) as f:
            meta = json.load(f)
        edit(meta)
        with open(cfg_file, "w") as f:
            json.dump(meta, f)
    return str(dst)


def test_tokenizer_round_trip(tok, tok_dir):
    assert sorted(os.listdir(tok_dir)) == [CONFIG_FILE, WEIGHTS_FILE]
    meta = read_tokenizer_meta(tok_dir)
    assert meta == read_meta(tok_dir) == read_meta(tok_dir, "gaia2-tokenizer")
    assert meta["format"] == "gaia2-tokenizer" and meta["format_version"] == 1 and meta["step"] == 7
    assert meta["config"] == tok.cfg.model_dump(mode="json")
    for loaded in (load_tokenizer(tok_dir), load_pretrained(tok_dir)):
        assert type(loaded) is Tokenizer and loaded.cfg == tok.cfg
        assert _same_weights(loaded, tok)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    video = torch.rand(1, 3, 8, 32, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(load_pretrained(tok_dir).encode(video), tok.encode(video)))


def test_world_model_round_trip(wm, wm_dir):
    meta = read_meta(wm_dir)
    assert meta["format"] == "gaia2-world-model" and meta["latent_std"] == 0.32
    for loaded in (load_world_model(wm_dir), load_pretrained(wm_dir)):
        assert type(loaded) is WorldModel and loaded.cfg == wm.cfg
        assert _same_weights(loaded, wm)
        assert not loaded.training


def test_weights_are_stored_as_float32(tok, tmp_path):
    half = Tokenizer(tok.cfg)
    half.load_state_dict(tok.state_dict())
    path = save_tokenizer(str(tmp_path / "bf16"), half.to(torch.bfloat16))
    stored = load_file(os.path.join(path, WEIGHTS_FILE))
    assert {v.dtype for v in stored.values()} == {torch.float32}
    assert load_tokenizer(path).encoder.to_moments.weight.dtype == torch.float32


def test_wrong_format_is_refused(tok, tok_dir, wm_dir, tmp_path):
    with pytest.raises(ValueError, match=f"world model '{tok_dir}'.*'gaia2-tokenizer', expected 'gaia2-world-model'"):
        load_world_model(tok_dir)
    with pytest.raises(ValueError, match=f"tokenizer '{wm_dir}'.*expected 'gaia2-tokenizer'"):
        load_tokenizer(wm_dir)
    with pytest.raises(ValueError, match="export format 'gaia2-vae' is not one of"):
        read_meta(tok_dir, "gaia2-vae")
    newer = copy_of(tok_dir, tmp_path / "v2", lambda meta: meta.update(format_version=2))
    with pytest.raises(ValueError, match=f"model '{newer}'.*'gaia2-tokenizer' version 2, this gaia2 reads version 1"):
        load_pretrained(newer)
    with open(os.path.join(newer, CONFIG_FILE), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match=f"'{newer}': config.json is not JSON"):
        read_meta(newer)
    with pytest.raises(TypeError, match="holds a WorldModel, got Tokenizer"):
        save_pretrained(str(tmp_path / "x"), tok, "gaia2-world-model")
    with pytest.raises(ValueError, match="overwrite"):
        save_tokenizer(str(tmp_path / "y"), tok, extra={"config": {}})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_missing_files_are_named(tok_dir, tmp_path):
    no_config = copy_of(tok_dir, tmp_path / "no_config")
    os.remove(os.path.join(no_config, CONFIG_FILE))
    with pytest.raises(FileNotFoundError, match=f"tokenizer '{no_config}': no config.json .*save_tokenizer"):
        load_tokenizer(no_config)
    no_weights = copy_of(tok_dir, tmp_path / "no_weights")
    os.remove(os.path.join(no_weights, WEIGHTS_FILE))
    with pytest.raises(FileNotFoundError, match=f"tokenizer '{no_weights}': no model.safetensors"):
        load_pretrained(no_weights)


def test_weights_that_do_not_match_the_config_are_refused(tok_dir, wm_dir, tmp_path):
    # the config of a wider model over the tiny weights: every shape differs
    wider = copy_of(tok_dir, tmp_path / "wider", lambda meta: meta["config"].update(dim=32))
    with pytest.raises(ValueError, match=f"tokenizer '{wider}': weights do not match the config .*wrong shape"):
        load_tokenizer(wider)
    # a deeper model: blocks missing from the file
    deeper = copy_of(wm_dir, tmp_path / "deeper", lambda meta: meta["config"].update(depth=meta["config"]["depth"] + 1))
    with pytest.raises(ValueError, match=f"world model '{deeper}': .*missing \\['blocks.2"):
        load_world_model(deeper)
    # a config the model's config class refuses
    bad = copy_of(tok_dir, tmp_path / "bad", lambda meta: meta["config"].update(heads=5))
    with pytest.raises(ValueError, match=f"tokenizer '{bad}': config.json holds no valid TokenizerConfig.*heads"):
        load_tokenizer(bad)


class _Trap:
    """Unpickling this creates a directory: the proof that a loader ran pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_pickled_weights_file_is_refused_without_unpickling(tok, tok_dir, tmp_path):
    torch_saved = copy_of(tok_dir, tmp_path / "torch_saved")
    torch.save(tok.state_dict(), os.path.join(torch_saved, WEIGHTS_FILE))
    with pytest.raises(ValueError, match=f"tokenizer '{torch_saved}': model.safetensors is not a safetensors file"):
        load_tokenizer(torch_saved)
    trapped = copy_of(tok_dir, tmp_path / "trapped")
    marker = tmp_path / "unpickled"
    with open(os.path.join(trapped, WEIGHTS_FILE), "wb") as f:
        pickle.dump({"encoder.norm.weight": _Trap(str(marker))}, f)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_pretrained(trapped)
    assert not marker.exists()
