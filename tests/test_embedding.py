"""CLIP image embeddings: tiny random CLIP checkpoints saved and loaded through the real loading code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig, CLIPVisionModel,
                          CLIPVisionModelWithProjection)

from gaia2.embedding import ClipImageEmbedder, save_random_clip
from pipelines.rejects import Reject, batch_rejects, reject_columns
from pipelines.shards.embed import EmbedClip

D = 16
SIZE = 32
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return save_random_clip(str(tmp_path_factory.mktemp("clip")), image_size=SIZE, projection_dim=D)


@pytest.fixture(scope="module")
def embedder(clip_dir) -> ClipImageEmbedder:
    return ClipImageEmbedder(clip_dir, device="cpu")


def _images(m: int, h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (m, h, w, 3), dtype=np.uint8)


def _reference(model: torch.nn.Module, projection: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Hand-written CLIP preprocessing for images already at the model's size: rescale, mean/std."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        emb = projection(model(pixel_values=(x - CLIP_MEAN) / CLIP_STD).pooler_output)
    return (emb / emb.norm(dim=-1, keepdim=True)).numpy()


# ---------------------------------------------------------------------------------------------- embedder

def test_embed_shape_dtype_unit_norm_and_determinism(clip_dir, embedder):
    images = _images(7)
    emb = embedder.embed(images)
    assert embedder.dim == D
    assert emb.shape == (7, D) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(images), emb)
    # A second load of the same directory gives the same function.
    np.testing.assert_array_equal(ClipImageEmbedder(clip_dir, device="cpu").embed(images), emb)
    # Different images -> different embeddings (random weights still separate random images).
    cos = emb @ emb.T
    assert np.all(cos[~np.eye(7, dtype=bool)] < 0.9999)


def test_embed_matches_hand_written_preprocessing(clip_dir, embedder):
    # At the model's own size resize and crop are identities: what remains is rescale + CLIP mean/std.
    images = _images(3, SIZE, SIZE, seed=1)
    model = CLIPVisionModelWithProjection.from_pretrained(clip_dir, local_files_only=True).eval()
    ref = _reference(model.vision_model, model.visual_projection, images)
    np.testing.assert_allclose(embedder.embed(images), ref, atol=1e-5)


def test_processor_resizes_shortest_edge_and_centre_crops(embedder):
    # 64x128 -> shortest edge 32 -> 32x64 -> centre crop 32x32 keeps source columns 32..96:
    # pixels far outside (beyond the bicubic support) must not matter, pixels inside must.
    img = _images(1, 64, 128, seed=2)
    outside, inside = img.copy(), img.copy()
    outside[:, :, :24] = 0
    outside[:, :, 104:] = 255
    inside[:, 20:44, 56:72] = 255 - inside[:, 20:44, 56:72]
    emb = embedder.embed(np.concatenate([img, outside, inside]))
    np.testing.assert_allclose(emb[1], emb[0], atol=1e-6)
    assert float(emb[2] @ emb[0]) < 0.9999


def test_chunked_batches_equal_one_batch(clip_dir, embedder):
    images = _images(7, seed=3)
    chunked = ClipImageEmbedder(clip_dir, device="cpu", batch_size=3).embed(images)
    np.testing.assert_allclose(chunked, embedder.embed(images), atol=1e-6)
    empty = embedder.embed(np.zeros((0, 8, 8, 3), np.uint8))
    assert empty.shape == (0, D) and empty.dtype == np.float32


def test_embed_rejects_bad_images(embedder):
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(M, H, W, 3\)"):
        embedder.embed(np.zeros((8, 8, 3), np.uint8))


def test_save_random_clip_is_seeded(tmp_path):
    images = _images(2, SIZE, SIZE, seed=4)
    state = torch.random.get_rng_state()
    a = ClipImageEmbedder(save_random_clip(str(tmp_path / "a"), seed=5), device="cpu").embed(images)
    assert torch.equal(torch.random.get_rng_state(), state)   # the caller's RNG is untouched
    b = ClipImageEmbedder(save_random_clip(str(tmp_path / "b"), seed=5), device="cpu").embed(images)
    c = ClipImageEmbedder(save_random_clip(str(tmp_path / "c"), seed=6), device="cpu").embed(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-3)
    cfg = json.loads((tmp_path / "a" / "preprocessor_config.json").read_text())
    assert cfg["image_processor_type"] == "CLIPImageProcessor"
    assert cfg["crop_size"] == {"height": SIZE, "width": SIZE} and cfg["size"] == {"shortest_edge": SIZE}


def test_full_clip_checkpoint_uses_its_vision_tower(tmp_path):
    # Real checkpoints (e.g. openai/clip-vit-large-patch14) are full CLIPModels with a text tower.
    vision = CLIPVisionConfig(image_size=SIZE, patch_size=8, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=D)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(vision_config=vision.to_dict(), text_config=text, projection_dim=D)).eval()
    full.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}).save_pretrained(tmp_path)
    images = _images(3, SIZE, SIZE, seed=7)
    emb = ClipImageEmbedder(str(tmp_path), device="cpu").embed(images)
    np.testing.assert_allclose(emb, _reference(full.vision_model, full.visual_projection, images), atol=1e-5)


def test_bad_paths_raise_clear_errors(tmp_path, clip_dir):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*not a directory.*config.json"):
        ClipImageEmbedder(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="lacks config.json, preprocessor_config.json, model.safetensors"):
        ClipImageEmbedder(str(empty))

    # A vision model without the projection head: transformers would silently randomise it.
    no_proj = tmp_path / "no_proj"
    cfg = CLIPVisionConfig(image_size=SIZE, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, projection_dim=D)
    CLIPVisionModel(cfg).save_pretrained(no_proj)
    CLIPImageProcessor.from_pretrained(clip_dir, local_files_only=True).save_pretrained(no_proj)
    with pytest.raises(ValueError, match="visual_projection"):
        ClipImageEmbedder(str(no_proj))

    wrong_type = tmp_path / "wrong_type"
    save_random_clip(str(wrong_type))
    conf = json.loads((wrong_type / "config.json").read_text())
    (wrong_type / "config.json").write_text(json.dumps({**conf, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        ClipImageEmbedder(str(wrong_type))

    wrong_crop = tmp_path / "wrong_crop"
    save_random_clip(str(wrong_crop))
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(wrong_crop)
    with pytest.raises(ValueError, match=r"\(224, 224\).*expects 32x32"):
        ClipImageEmbedder(str(wrong_crop))


# ---------------------------------------------------------------------------------------------- stage

def _rows(cams: list[int], t: int = 5, h: int = 24, w: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, t, h, w, 3), dtype=np.uint8) for n in cams]


def _batch(frames: list[np.ndarray], rejects: list[Reject | None]) -> dict[str, np.ndarray]:
    col = np.empty(len(frames), dtype=object)
    for i, f in enumerate(frames):
        col[i] = f
    return {"key": np.asarray([f"k{i}" for i in range(len(frames))], dtype=object), "frames": col,
            **reject_columns(rejects)}


@pytest.fixture(scope="module")
def stage(clip_dir) -> EmbedClip:
    return EmbedClip(clip_dir, device="cpu")


def test_stage_embeds_middle_frame_of_every_camera(stage, embedder):
    frames = _rows([5, 6])
    out = stage(_batch(frames, [None, None]))
    assert batch_rejects(out, 2) == [None, None]
    assert [c.shape for c in out["clip"]] == [(5, D), (6, D)]
    assert all(c.dtype == np.float32 for c in out["clip"])
    np.testing.assert_array_equal(out["key"], ["k0", "k1"])   # other columns pass through
    for f, c in zip(frames, out["clip"]):
        np.testing.assert_allclose(c, embedder.embed(f[:, 2]), atol=1e-6)   # T = 5 -> frame 2

    other = [f.copy() for f in frames]
    other[1][3, 0] = 255 - other[1][3, 0]          # not the middle frame: nothing changes
    np.testing.assert_allclose(np.concatenate(stage(_batch(other, [None, None]))["clip"]),
                               np.concatenate(out["clip"]), atol=1e-6)
    middle = [f.copy() for f in frames]
    middle[1][3, 2] = 255 - middle[1][3, 2]        # camera 3's middle frame of row 1: only it changes
    changed = stage(_batch(middle, [None, None]))["clip"]
    np.testing.assert_allclose(changed[0], out["clip"][0], atol=1e-6)
    np.testing.assert_allclose(np.delete(changed[1], 3, 0), np.delete(out["clip"][1], 3, 0), atol=1e-6)
    assert float(changed[1][3] @ out["clip"][1][3]) < 0.9999


def test_stage_passes_rejected_rows_and_rejects_malformed_rows(stage):
    frames = _rows([5, 6, 5])
    frames[1] = np.zeros((0, 0, 0, 0, 3), np.uint8)   # what decode leaves in a failed row
    frames[2] = frames[2][:, 0]                         # (N, H, W, 3): a missing time axis
    unreadable = Reject("ingest", "unreadable_video", "cam_front")
    out = stage(_batch([frames[0], frames[1], frames[2]], [None, unreadable, None]))
    rejects = batch_rejects(out, 3)
    assert rejects[0] is None and out["clip"][0].shape == (5, D)
    assert rejects[1] == unreadable and out["clip"][1].shape == (0, D)
    assert (rejects[2].stage, rejects[2].reason) == ("embed", "decode_failed")
    assert rejects[2].detail.startswith("frames must be (N, T, H, W, 3)")
    assert out["clip"][2].shape == (0, D)


def test_stage_batch_failure_marks_ok_rows(stage):
    # Rows at different resolutions cannot share one model call: the batch fails as a value.
    a, b = _rows([5], h=24, w=40)[0], _rows([6], h=32, w=40)[0]
    too_short = Reject("ingest", "too_short", "3 frames")
    out = stage(_batch([a, b, np.zeros((0, 0, 0, 0, 3), np.uint8)], [None, None, too_short]))
    rejects = batch_rejects(out, 3)
    assert (rejects[0].stage, rejects[0].reason) == ("embed", "decode_failed")
    assert rejects[0].detail.startswith("ValueError")
    assert rejects[1] == rejects[0]
    assert rejects[2] == too_short
    assert all(c.shape == (0, D) for c in out["clip"])


def test_stage_accepts_a_dense_frames_column(stage):
    frames = np.stack(_rows([5, 5], seed=9))   # (B, N, T, H, W, 3): equal shapes arrive stacked
    out = stage({"frames": frames, **reject_columns([None, None])})
    assert [c.shape for c in out["clip"]] == [(5, D), (5, D)]
    np.testing.assert_allclose(out["clip"][0], stage.embedder.embed(frames[0, :, 2]), atol=1e-6)
