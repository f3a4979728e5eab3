"""Generation from real latent shards: sample references, inherited conditioning, rigs of samples, CLIP inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gaia2.generation.generator import Generator
from gaia2.generation.sources import LatentShards, LocalSources
from gaia2.generation.spec import SpecError, parse_spec, spec_for_sample
from gaia2.tokenizer import Tokenizer, tiny as tiny_tokenizer
from gaia2.world_model.sample import world_model_sample
from tests.test_generation import random_world_model


@pytest.fixture(scope="module")
def stats(latent_shards) -> tuple[list, list]:
    with open(f"{latent_shards}/latent_stats.json") as f:
        s = json.load(f)
    return s["mean"], s["std"]


@pytest.fixture(scope="module")
def gen(stats, clip_model) -> Generator:
    torch.manual_seed(2)
    return Generator(random_world_model(1), Tokenizer(tiny_tokenizer()), *stats, device="cpu", clip=clip_model)


def test_samples_are_found_by_key_or_by_split_position(latent_shards):
    shards = LatentShards(latent_shards)
    val = shards.keys("val")
    assert val and set(val) <= set(shards.keys())
    assert shards.resolve("@val:0") == val[0] and shards("@val:0").key == val[0]
    with pytest.raises(SpecError, match="not in the latent shards"):
        shards("no-such-key")
    with pytest.raises(SpecError, match=r"@SPLIT:INDEX with INDEX below"):
        shards(f"@val:{len(val)}")


def test_a_sample_regenerated_under_its_own_conditioning(gen, latent_shards):
    sources = LocalSources(latents=latent_shards)
    key = sources.shards.keys("val")[0]
    sample = sources.sample(key)
    steps = sample.latents.shape[0]
    spec = spec_for_sample(key, steps, mode="rollout", context_steps=2, sampler_steps=3)
    request = gen.prepare(spec, sources)
    n = len(request.rig.names)
    fields = world_model_sample(sample.meta, sample.latents, sample.boxes, sample.boxes_valid, sample.clip, n,
                                gen.geometry.max_agents)
    np.testing.assert_array_equal(request.cond["action"], fields["action"])
    np.testing.assert_array_equal(request.cond["agents"], fields["agents"])
    np.testing.assert_array_equal(request.cond["agents_valid"], fields["agents_valid"])
    np.testing.assert_array_equal(request.cond["metadata"], fields["metadata"])
    np.testing.assert_array_equal(request.cond["clip"], fields["clip"])
    np.testing.assert_allclose(request.camera["intrinsics"], fields["intrinsics"], rtol=1e-6)
    np.testing.assert_array_equal(request.camera["extrinsics"], fields["extrinsics"])
    # the rig's rate and each camera's offset reproduce the sample's per-camera timestamps
    np.testing.assert_allclose(request.timestamps - request.timestamps[0].mean(),
                               fields["timestamps"] - fields["timestamps"][0].mean(), atol=2e-3)
    out = gen.sample([request])[0]
    assert np.array_equal(out[:2], sample.latents[:2, :n])        # its first k latents, kept as they are
    assert out.shape == sample.latents[:, :n].shape


def test_continuing_a_sample_shifts_its_inherited_conditioning(gen, latent_shards):
    sources = LocalSources(latents=latent_shards)
    sample = sources.sample("@val:0")
    spec = parse_spec({"mode": {"kind": "rollout", "context": {"sample": "@val:0"}, "context_steps": 2},
                       "duration": {"latent_steps": 5}, "inherit": ["action"], "sampler": {"steps": 2}})
    request = gen.prepare(spec, sources)
    ts = sample.latents.shape[0]
    fields = world_model_sample(sample.meta, sample.latents, sample.boxes, sample.boxes_valid, sample.clip,
                                len(request.rig.names), gen.geometry.max_agents)
    # output step i is sample step ts - 2 + i; past the sample's end the action is unknown
    np.testing.assert_array_equal(request.cond["action"][:2], fields["action"][ts - 2:])
    assert np.isnan(request.cond["action"][2:]).all()
    out = gen.sample([request])[0]
    assert np.array_equal(out[:2], sample.latents[ts - 2:, :len(request.rig.names)])


def test_clip_text_prompts_and_images_go_through_the_clip_model(gen, latent_shards, clip_model, tmp_path):
    from PIL import Image

    from gaia2.embedding.clip import ClipImageEmbedder
    from gaia2.embedding.clip_text import ClipTextEmbedder

    base = {"rig": {"name": "van5_25hz"}, "duration": {"latent_steps": 2}, "sampler": {"steps": 2}}
    text = gen.prepare(parse_spec({**base, "clip": {"text": "a snowy mountain road"}}))
    expected = ClipTextEmbedder(clip_model, device="cpu").embed(["a snowy mountain road"])[0]
    np.testing.assert_allclose(text.cond["clip"], np.tile(expected, (5, 1)), atol=1e-6)
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    image = gen.prepare(parse_spec({**base, "clip": {"image": {"front": "scene.png"}}}),
                        LocalSources(base_dir=str(tmp_path)))
    np.testing.assert_allclose(image.cond["clip"][0], ClipImageEmbedder(clip_model, device="cpu").embed(pixels[None])[0],
                               atol=1e-5)
    assert np.isnan(image.cond["clip"][1:]).all()                 # the other cameras: unknown
    with pytest.raises(SpecError, match=r"clip\.image 'missing\.png': cannot read"):
        gen.prepare(parse_spec({**base, "clip": {"image": "missing.png"}}), LocalSources(base_dir=str(tmp_path)))
    with pytest.raises(SpecError, match=r"clip\.image 'scene\.png': image files are not accepted"):
        gen.prepare(parse_spec({**base, "clip": {"image": "scene.png"}}))


def test_rollout_from_a_previous_generation_takes_its_rig_and_latents(gen, tmp_path):
    first = gen.generate(parse_spec({"rig": {"name": "suv6_20hz", "views": ["front", "rear"]},
                                     "duration": {"latent_steps": 3}, "sampler": {"steps": 2, "seed": 1}}))
    first.write(str(tmp_path / "first"))
    spec = parse_spec({"mode": {"kind": "rollout", "context": {"generation": "first"}, "context_steps": 2},
                       "duration": {"latent_steps": 8}, "sampler": {"steps": 2}})
    request = gen.prepare(spec, LocalSources(base_dir=str(tmp_path)))
    assert request.rig.names == ("front", "rear") and request.rig.frame_rate == 20.0
    out = gen.sample([request])[0]
    assert np.array_equal(out[:2], first.latents[1:]) and out.shape[0] == 8


def test_every_example_spec_prepares_against_real_latent_shards(gen, latent_shards):
    import glob
    import os

    from gaia2.generation.spec import load_spec

    examples = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "generation", "*.yaml")))
    assert {os.path.basename(p) for p in examples} >= {"scratch.yaml", "rollout.yaml", "inpaint.yaml", "edit.yaml",
                                                       "lead_vehicle_brake.yaml", "cut_in.yaml"}
    sources = LocalSources(latents=latent_shards)
    modes = set()
    for path in examples:
        spec = load_spec(path)
        request = gen.prepare(spec, sources)
        modes.add(spec.mode.kind)
        assert request.steps >= 1 and len(request.rig.names) == 5, path
        if spec.mode.kind == "inpaint":
            assert (~request.clean).any() and request.clean.any(), path   # the van's box covers some tokens
        if spec.guidance.selective:
            assert request.guidance_cells.any(), path
    assert modes == {"scratch", "rollout", "inpaint", "edit"}
