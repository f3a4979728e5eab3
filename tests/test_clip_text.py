"""CLIP text embeddings: a tiny random full CLIP (both towers + tokenizer) saved and loaded through the real code."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from gaia2.embedding import ClipImageEmbedder, ClipTextEmbedder, camera_slots, save_random_clip
from gaia2.embedding.clip import byte_level_vocab
from gaia2.world_model.config import world_model_config
from gaia2.world_model.inputs import example_inputs
from gaia2.world_model.model import WorldModel

D = 12            # not the world model's default clip_dim (16): the end-to-end test must set it
POSITIONS = 32
PROMPTS = ["the car in the rain", "a snowy motorway at night", "Straße bei Nacht — 雪", "a red car 🚗 at dusk"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return save_random_clip(str(tmp_path_factory.mktemp("clip") / "clip"), projection_dim=D, seed=3)


@pytest.fixture(scope="module")
def embedder(clip_dir) -> ClipTextEmbedder:
    return ClipTextEmbedder(clip_dir, device="cpu")


def _copy(clip_dir: str, tmp_path, name: str):
    return shutil.copytree(clip_dir, tmp_path / name)


# ---------------------------------------------------------------------------------------------- embedder

def test_text_embed_shape_unit_norm_determinism(clip_dir, embedder):
    emb = embedder.embed(PROMPTS)
    assert embedder.dim == D and emb.shape == (len(PROMPTS), D) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(PROMPTS), emb)
    np.testing.assert_array_equal(ClipTextEmbedder(clip_dir, device="cpu").embed(PROMPTS), emb)
    cos = emb @ emb.T
    assert np.all(cos[~np.eye(len(PROMPTS), dtype=bool)] < 0.9999)   # different prompts, different vectors
    empty = embedder.embed([])
    assert empty.shape == (0, D) and empty.dtype == np.float32


def test_text_and_image_embeddings_share_one_space(clip_dir, embedder):
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    image = ClipImageEmbedder(clip_dir, device="cpu")
    assert image.dim == embedder.dim == D
    assert image.embed(images).shape == embedder.embed(PROMPTS[:2]).shape


def test_text_embeddings_match_the_full_clip_text_tower(clip_dir, embedder):
    # The text embedder must use the checkpoint's text tower and projection, not a random one.
    full = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    tokens = CLIPTokenizer.from_pretrained(clip_dir, local_files_only=True)(PROMPTS, padding=True,
                                                                            return_tensors="pt")
    with torch.no_grad():
        ref = full.text_projection(full.text_model(**tokens).pooler_output)
    ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(embedder.embed(PROMPTS), ref, atol=1e-5)


def test_batching_and_padding_do_not_change_embeddings(clip_dir, embedder):
    together = embedder.embed(PROMPTS)
    alone = np.concatenate([embedder.embed([p]) for p in PROMPTS])
    chunked = ClipTextEmbedder(clip_dir, device="cpu", batch_size=3).embed(PROMPTS)
    np.testing.assert_allclose(alone, together, atol=1e-5)
    np.testing.assert_allclose(chunked, together, atol=1e-5)


def test_long_prompts_are_truncated_to_the_model_positions(embedder):
    assert embedder.max_length == POSITIONS
    long = "a wide road " * 20                                   # far more than 32 tokens
    assert len(embedder.tokenizer(long)["input_ids"]) > POSITIONS
    a, b, c = embedder.embed([long, long + "then heavy snow", "snow " + long])
    np.testing.assert_allclose(a, b, atol=1e-6)                 # the tail past the limit is cut
    assert float(a @ c) < 0.9999                                 # the head still counts


def test_embed_rejects_bad_prompts(embedder):
    with pytest.raises(ValueError, match=r"prompts\[1\] must be a non-empty string, got ''"):
        embedder.embed(["a road", ""])
    with pytest.raises(ValueError, match=r"prompts\[0\].*'   '"):
        embedder.embed(["   "])
    with pytest.raises(ValueError, match=r"prompts\[2\].*None"):
        embedder.embed(["a", "b", None])
    with pytest.raises(ValueError, match="list of strings, got str"):
        embedder.embed("a road")


# ---------------------------------------------------------------------------------------------- tokenizer

def test_random_clip_tokenizer_tokenizes_any_text(clip_dir, tmp_path):
    vocab, merges = byte_level_vocab()
    assert len(vocab) == 2 * 256 + len(merges) + 2 and len(set(vocab.values())) == len(vocab)
    tok = CLIPTokenizer.from_pretrained(clip_dir, local_files_only=True)
    assert len(tok) == len(vocab) and tok.eos_token_id == len(vocab) - 1 == vocab["<|endoftext|>"]
    with open(f"{clip_dir}/config.json") as f:
        config = json.load(f)
    assert config["model_type"] == "clip" and config["text_config"]["vocab_size"] == len(vocab)
    assert tok.model_max_length == config["text_config"]["max_position_embeddings"] == POSITIONS
    assert tok.convert_ids_to_tokens(tok("the car")["input_ids"]) == [
        "<|startoftext|>", "the</w>", "car</w>", "<|endoftext|>"]      # the merges run
    # The original CLIP files alone (vocab.json + merges.txt, no tokenizer.json) give the same tokenizer.
    plain = _copy(clip_dir, tmp_path, "plain")
    (plain / "tokenizer.json").unlink()
    (plain / "tokenizer_config.json").unlink()
    tok_plain = CLIPTokenizer.from_pretrained(str(plain), local_files_only=True)
    texts = {"A red car 🚗 at night": "a red car 🚗 at night", "Straße bei Nacht — 雪": "straße bei nacht — 雪",
             "  tabs\tand\nnewlines ": "tabs and newlines", "ÀÉÎ ñ ü 東京 café": "àéî ñ ü 東京 café"}
    for text, normalised in texts.items():
        ids = tok(text)["input_ids"]
        assert tok_plain(text)["input_ids"] == ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.eos_token_id not in ids[1:-1]                  # no unknown bytes (unk is <|endoftext|>)
        assert tok.decode(ids, skip_special_tokens=True) == normalised
    padded = tok(["the car", "x " * 40], padding="max_length", truncation=True, return_tensors="pt")
    assert padded["input_ids"].shape == (2, POSITIONS)
    assert padded["input_ids"][0, 4:].eq(tok.pad_token_id).all() and padded["attention_mask"][0].sum() == 4
    assert padded["input_ids"][1, -1] == tok.eos_token_id and padded["attention_mask"][1].all()


def test_image_embedder_loads_the_full_clip_directory(clip_dir):
    _, info = CLIPVisionModelWithProjection.from_pretrained(clip_dir, local_files_only=True,
                                                            output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert ClipImageEmbedder(clip_dir, device="cpu").embed(np.zeros((1, 40, 40, 3), np.uint8)).shape == (1, D)


# ---------------------------------------------------------------------------------------------- errors

def test_text_embedder_bad_directories_raise_clear_errors(clip_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*not a directory.*vocab.json"):
        ClipTextEmbedder(str(tmp_path / "nowhere"))

    no_tokenizer = _copy(clip_dir, tmp_path, "no_tokenizer")
    (no_tokenizer / "merges.txt").unlink()
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no_tokenizer.*lacks vocab.json \\+ merges.txt or tokenizer.json"):
        ClipTextEmbedder(str(no_tokenizer))

    # A vision-only checkpoint (what the old save_random_clip wrote) has no text tower.
    vision_only = _copy(clip_dir, tmp_path, "vision_only")
    CLIPVisionModelWithProjection.from_pretrained(clip_dir, local_files_only=True).save_pretrained(vision_only)
    with pytest.raises(ValueError, match="vision_only.*model_type 'clip_vision_model'.*clip_text_model"):
        ClipTextEmbedder(str(vision_only))

    # A text model without the projection head: transformers would silently randomise it.
    no_proj = _copy(clip_dir, tmp_path, "no_proj")
    CLIPTextModel.from_pretrained(clip_dir, local_files_only=True).save_pretrained(no_proj)
    with pytest.raises(ValueError, match="no_proj.*text_projection"):
        ClipTextEmbedder(str(no_proj))

    mis_shaped = _copy(clip_dir, tmp_path, "mis_shaped")
    conf = json.loads((mis_shaped / "config.json").read_text())
    conf["text_config"]["projection_dim"] = D // 2
    (mis_shaped / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="mis_shaped.*mis-shapes weights.*text_projection"):
        ClipTextEmbedder(str(mis_shaped))

    wrong_eos = _copy(clip_dir, tmp_path, "wrong_eos")
    conf = json.loads((wrong_eos / "config.json").read_text())
    conf["text_config"]["eos_token_id"] = 5
    (wrong_eos / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="wrong_eos.*eos_token_id 5.*id 519"):
        ClipTextEmbedder(str(wrong_eos))


# ---------------------------------------------------------------------------------------------- camera slots

@pytest.mark.parametrize("as_tensor", [False, True])
def test_camera_slots_repeats_each_vector_over_the_cameras(as_tensor):
    vectors = np.random.default_rng(1).standard_normal((3, D)).astype(np.float32)
    x = torch.from_numpy(vectors) if as_tensor else vectors
    one, many = camera_slots(x[0], 5), camera_slots(x, 4)
    assert type(one) is type(x) and type(many) is type(x)
    assert tuple(one.shape) == (1, 5, D) and tuple(many.shape) == (3, 4, D)
    assert one.dtype == x.dtype and many.dtype == x.dtype
    for b in range(3):
        for n in range(4):
            np.testing.assert_array_equal(np.asarray(many[b, n]), vectors[b])
    np.testing.assert_array_equal(np.asarray(one[0]), np.broadcast_to(vectors[0], (5, D)))
    many[0, 0] += 1.0                                        # a copy: the input is untouched
    np.testing.assert_array_equal(np.asarray(x), vectors)


def test_camera_slots_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"\(D,\) or \(B, D\).*\(2, 5, 12\)"):
        camera_slots(np.zeros((2, 5, D), np.float32), 5)
    with pytest.raises(ValueError, match="cameras must be an int >= 1, got 0"):
        camera_slots(np.zeros(D, np.float32), 0)
    with pytest.raises(TypeError, match="list"):
        camera_slots([0.0] * D, 5)


# ---------------------------------------------------------------------------------------------- world model

def test_text_prompts_steer_the_world_model(embedder):
    cfg = world_model_config("tiny", overrides={"conditioning": {"clip_dim": D}})
    torch.manual_seed(0)
    model = WorldModel(cfg).eval()
    # The output layers start at zero (v = 0 for any input): small noise everywhere makes v depend on clip.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    inputs = example_inputs(cfg, batch=1, generator=torch.Generator().manual_seed(2))
    text = torch.from_numpy(embedder.embed(["a sunny motorway", "a snowy village street at night"]))

    def velocity(vector: torch.Tensor) -> torch.Tensor:
        cond = {**inputs["cond"], "clip": camera_slots(vector, cfg.cameras)}   # (1, N, D)
        with torch.no_grad():
            return model(**{**inputs, "cond": cond})

    sunny, snowy = velocity(text[0]), velocity(text[1])
    assert sunny.shape == inputs["x"].shape and sunny.abs().max() > 1e-3
    torch.testing.assert_close(velocity(text[0]), sunny)
    assert (sunny - snowy).abs().max() > 1e-4 * sunny.abs().max()
