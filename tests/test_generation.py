"""Generation (paper §5): exactness of guidance, inpainting, editing and rollout; determinism; batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaia2.conditioning.encoder import VARIABLES
from gaia2.generation.generator import Generator
from gaia2.generation.guidance import GuidanceBatch, GuidedVelocity
from gaia2.generation.sampler import batch_key, windows
from gaia2.generation.sources import Sources
from gaia2.generation.spec import SpecError, parse_spec
from gaia2.tokenizer import Tokenizer, tiny as tiny_tokenizer
from gaia2.world_model.config import tiny
from gaia2.world_model.model import WorldModel

MEAN = [0.1 * i for i in range(16)]
STD = [0.5 + 0.1 * i for i in range(16)]
STEPS = 4


def random_world_model(seed: int = 0) -> WorldModel:
    """A tiny world model whose every weight is random (the real init zeroes the output: v = 0 everywhere)."""
    torch.manual_seed(seed)
    model = WorldModel(tiny())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def gen() -> Generator:
    torch.manual_seed(1)
    return Generator(random_world_model(), Tokenizer(tiny_tokenizer()), MEAN, STD, device="cpu")


class ArraySources(Sources):
    """Latents files by name, from memory."""

    def __init__(self, **arrays: np.ndarray) -> None:
        self.arrays = arrays

    def latents(self, ref: str) -> np.ndarray:
        return self.arrays[ref]


def source_latents(steps: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((steps, 5, 16, 4, 8)) * np.array(STD)[None, None, :, None, None]
            + np.array(MEAN)[None, None, :, None, None]).astype(np.float32)


def spec(**changes) -> dict:
    base = {"rig": {"name": "sedan6_30hz"}, "duration": {"latent_steps": 6}, "sampler": {"steps": STEPS, "seed": 3},
            "action": {"speed": {"profile": "start_from_stop"}, "curvature": 0.01},
            "agents": [{"category": "car", "size": [4.5, 1.9, 1.6], "start": {"center": [10.0, 0.0]},
                        "velocity": [2.0, 0.0]}],
            "metadata": {"weather": "rain", "time_of_day": "night"}}
    base.update(changes)
    return base


def batch_inputs(gen: Generator, request) -> dict:
    """The world model's inputs for one request (batch of 1): cond, camera, timestamps, a random x and tau."""
    r = request
    cond = {k: torch.from_numpy(v[None]) for k, v in r.cond.items()}
    camera = {k: torch.from_numpy(v[None]) for k, v in r.camera.items()}
    ts = torch.from_numpy(r.timestamps[None]) - float(r.timestamps[0].mean())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, r.steps, len(r.rig.names), 16, 4, 8, generator=g)
    tau = torch.full((1, r.steps), 0.3)
    return {"x": x, "tau": tau, "cond": cond, "camera": camera, "timestamps": ts}


def guidance_for(request, cond, scale: float, cells=None) -> GuidanceBatch:
    keep = {v: torch.tensor([v not in request.drop]) for v in VARIABLES}
    return GuidanceBatch(scale=torch.tensor([scale]), time_weight=torch.ones(1, request.steps),
                         interval=torch.tensor([[0.0, 1.0]]), uncond=cond, keep=keep, cells=cells)


# ------------------------------------------------------------------------------------------------ guidance
def test_guidance_scale_one_is_the_conditional_and_zero_the_unconditional_prediction(gen):
    request = gen.prepare(parse_spec(spec()))
    inp = batch_inputs(gen, request)
    model = gen.world_model
    with torch.no_grad():
        v_cond = model(inp["x"], inp["tau"], inp["cond"], inp["timestamps"], inp["camera"])
        v_uncond = model(inp["x"], inp["tau"], inp["cond"], inp["timestamps"], inp["camera"],
                         keep=model.conditioning.unconditional_keep(1))
        assert not torch.allclose(v_cond, v_uncond, atol=1e-3)   # the conditioning matters to this model
        for scale, expected in ((1.0, v_cond), (0.0, v_uncond)):
            velocity = GuidedVelocity(model, inp["cond"], inp["timestamps"], inp["camera"],
                                      guidance_for(request, inp["cond"], scale))
            torch.testing.assert_close(velocity(inp["x"], inp["tau"]), expected, atol=1e-5, rtol=1e-5)
        velocity = GuidedVelocity(model, inp["cond"], inp["timestamps"], inp["camera"],
                                  guidance_for(request, inp["cond"], 3.0))
        torch.testing.assert_close(velocity(inp["x"], inp["tau"]), v_uncond + 3.0 * (v_cond - v_uncond),
                                   atol=1e-4, rtol=1e-4)


def test_guidance_is_one_forward_pass_of_a_doubled_batch(gen):
    request = gen.prepare(parse_spec(spec()))
    inp = batch_inputs(gen, request)
    batches = []
    hook = gen.world_model.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            GuidedVelocity(gen.world_model, inp["cond"], inp["timestamps"], inp["camera"],
                           guidance_for(request, inp["cond"], 4.0))(inp["x"], inp["tau"])
    finally:
        hook.remove()
    assert batches == [2]


def test_selective_guidance_is_the_conditional_prediction_outside_the_boxes(gen):
    request = gen.prepare(parse_spec(spec(guidance={"scale": 6.0, "selective": True})))
    cells = torch.from_numpy(request.guidance_cells[None])
    assert 0 < int(cells.sum()) < cells.numel()            # the car covers some tokens, not all
    assert bool(cells[:, :, 0].any()) and not bool(cells[:, :, 3:].any())   # front camera, not the rear ones
    inp = batch_inputs(gen, request)
    with torch.no_grad():
        v_cond = gen.world_model(inp["x"], inp["tau"], inp["cond"], inp["timestamps"], inp["camera"])
        v = GuidedVelocity(gen.world_model, inp["cond"], inp["timestamps"], inp["camera"],
                           guidance_for(request, inp["cond"], 6.0, cells))(inp["x"], inp["tau"])
    outside = ~cells[:, :, :, None].expand_as(v)
    torch.testing.assert_close(v[outside], v_cond[outside], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(v[~outside], v_cond[~outside], atol=1e-3)


def test_guided_generation_at_scale_one_equals_unguided_generation(gen):
    plain = gen.sample([gen.prepare(parse_spec(spec()))])[0]
    guided = gen.prepare(parse_spec(spec(guidance={"scale": 1.0, "drop": ["agents"]})))
    assert not guided.guided
    guided.guidance_scale = 1.0 + 1e-12   # forces the two-branch path with a weight that rounds to 0
    np.testing.assert_allclose(gen.sample([guided])[0], plain, atol=1e-4)


def test_negative_conditioning_replaces_the_unconditional_branch(gen):
    request = gen.prepare(parse_spec(spec(guidance={"scale": 2.0, "negative": {"metadata": {"weather": "snow"}}})))
    assert request.drop == ()
    snow = request.negative["metadata"][list(request.info["metadata"]).index("weather")]
    assert snow == 5 and request.negative["action"].shape == request.cond["action"].shape
    assert np.isnan(request.negative["action"]).all()      # what the negative leaves out is unknown there
    out = gen.sample([request])[0]
    plain = gen.sample([gen.prepare(parse_spec(spec()))])[0]
    assert not np.allclose(out, plain, atol=1e-3)


# ------------------------------------------------------------------------------------ inpainting, editing
def test_inpainting_keeps_every_latent_outside_the_mask_bit_identical(gen):
    src = source_latents()
    sources = ArraySources(ctx=src)
    request = gen.prepare(parse_spec(spec(mode={"kind": "inpaint", "source": {"latents": "ctx"}, "mask": [
        {"rect": [0.25, 0.25, 0.75, 1.0], "camera": "front", "start_s": 0.3},
        {"agent": 0, "end_s": 0.8}]})), sources)
    generated = ~request.clean
    assert generated.any() and request.clean.any()
    out = gen.sample([request])[0]
    keep = request.clean[:, :, None].repeat(16, axis=2)
    assert np.array_equal(out[keep], src[keep])
    assert not np.allclose(out[~keep], src[~keep], atol=1e-3)
    # latent i covers [8i / 30, 8(i + 1) / 30) s: the car (until 0.8 s) is in latents 0-2 of the front camera only;
    # the rectangle (from 0.3 s) in latents 1-5 of the front camera, half its width, its lower three quarters
    assert generated[:3, 0].any() and not generated[3:, 1:].any()
    assert not generated[0, 0, 0].any()                             # the car's box does not reach the top row
    rect = np.zeros((4, 8), bool)
    rect[1:, 2:6] = True
    assert (generated[3:, 0] == rect).all()


def test_editing_keeps_the_unmasked_latents_and_tau_start_one_returns_the_input(gen):
    src = source_latents()
    sources = ArraySources(ctx=src)
    request = gen.prepare(parse_spec(spec(mode={"kind": "edit", "source": {"latents": "ctx"}, "tau_start": 0.6,
                                                "mask": [{"rect": [0.0, 0.5, 1.0, 1.0]}]})), sources)
    out = gen.sample([request])[0]
    keep = request.clean[:, :, None].repeat(16, axis=2)
    assert np.array_equal(out[keep], src[keep]) and not np.allclose(out[~keep], src[~keep], atol=1e-3)
    whole = gen.prepare(parse_spec(spec(mode={"kind": "edit", "source": {"latents": "ctx"}, "tau_start": 0.6})),
                        sources)
    edited = gen.sample([whole])[0]
    assert not whole.clean.any()
    # partial noising keeps the source's structure: closer to it than a generation from scratch
    scratch = gen.sample([gen.prepare(parse_spec(spec()))])[0]
    assert np.abs(edited - src).mean() < np.abs(scratch - src).mean()
    end = gen.prepare(parse_spec(spec(mode={"kind": "edit", "source": {"latents": "ctx"}, "tau_start": 1.0})),
                      sources)
    assert np.array_equal(gen.sample([end])[0], src)


# ---------------------------------------------------------------------------------------- rollout, lengths
def test_rollout_to_four_windows_gives_the_expected_frames_and_keeps_its_context(gen):
    src = source_latents(steps=6)
    window = gen.geometry.window
    request = gen.prepare(parse_spec(spec(duration={"latent_steps": 4 * window}, mode={
        "kind": "rollout", "context": {"latents": "ctx"}})), ArraySources(ctx=src))
    assert request.context == 3
    latents = gen.sample([request])[0]
    assert latents.shape == (4 * window, 5, 16, 4, 8)
    assert np.array_equal(latents[:3], src[-3:])
    assert np.isfinite(latents).all()
    frames = gen.decode(latents)
    assert frames.shape == (5, 4 * window * 8, 32, 64, 3)


def test_windows_slide_by_the_window_minus_its_context():
    assert windows(6, 6, 3) == [(0, 6, 0)]
    assert windows(4, 6, 3) == [(0, 4, 0)]
    assert windows(12, 6, 3) == [(0, 6, 0), (3, 9, 3), (6, 12, 3)]
    assert windows(10, 6, 3) == [(0, 6, 0), (3, 9, 3), (4, 10, 5)]
    plan = windows(24, 6, 3)
    assert plan[-1][1] == 24 and all(e - s == 6 and ctx >= 3 for s, e, ctx in plan[1:])


def test_scratch_longer_than_the_window_rolls_out(gen):
    request = gen.prepare(parse_spec(spec(duration={"seconds": 3.2})))   # 96 frames at 30 Hz = 12 latents
    assert request.steps == 12
    assert gen.sample([request])[0].shape == (12, 5, 16, 4, 8)


# ------------------------------------------------------------------------------ determinism and batching
def test_same_seed_same_video_and_another_seed_another(gen):
    a = gen.generate(parse_spec(spec()))
    b = gen.generate(parse_spec(spec()))
    c = gen.generate(parse_spec(spec(sampler={"steps": STEPS, "seed": 4})))
    assert np.array_equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    assert not np.allclose(a.latents, c.latents)


def test_a_request_gives_the_same_output_alone_and_inside_a_batch(gen):
    specs = [spec(), spec(metadata={"weather": "snow"}, sampler={"steps": STEPS, "seed": 9}),
             spec(rig={"name": "van5_25hz"}, agents=None, action={"speed": 3.0}, sampler={"steps": STEPS, "seed": 5}),
             spec(guidance={"scale": 4.0, "drop": ["agents"]})]
    requests = [gen.prepare(parse_spec(s)) for s in specs]
    unguided = requests[:3]
    assert len({batch_key(r) for r in unguided}) == 1
    together = gen.sample(unguided)
    for r, out in zip(unguided, together):
        np.testing.assert_allclose(gen.sample([r])[0], out, rtol=1e-5, atol=1e-4)
    guided = gen.prepare(parse_spec(spec(guidance={"scale": 3.0}, sampler={"steps": STEPS, "seed": 1})))
    pair = gen.sample([requests[3], guided])
    np.testing.assert_allclose(gen.sample([requests[3]])[0], pair[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="cannot share a batch"):
        gen.sample([requests[0], requests[3]])


def test_generate_many_matches_one_at_a_time(gen):
    specs = [parse_spec(spec(sampler={"steps": STEPS, "seed": s})) for s in (1, 2, 3)]
    many = gen.generate_many(specs, batch_size=2, decode=False)
    for s, r in zip(specs, many):
        np.testing.assert_allclose(gen.generate(s, decode=False).latents, r.latents, rtol=1e-5, atol=1e-4)


# -------------------------------------------------------------------- what a partial spec conditions on
def test_left_out_variables_are_exactly_dropped_ones(gen):
    full = gen.prepare(parse_spec(spec(clip={"vector": [0.1] * 16}, scenario=[0.2] * 32)))
    partial = gen.prepare(parse_spec(spec(agents=None, action={"curvature": 0.01}, metadata={"weather": "rain"})))
    assert np.isnan(partial.cond["action"][:, 0]).all() and not np.isnan(partial.cond["action"][:, 1]).any()
    assert not partial.cond["agents_valid"].any() and np.isnan(partial.cond["clip"]).all()
    assert np.isnan(partial.cond["scenario"]).all()
    inp_full, inp_partial = batch_inputs(gen, full), batch_inputs(gen, partial)
    dropped = ["speed", "agents", "clip", "scenario", *[k for k in VARIABLES[2:-3] if k != "weather"]]
    keep = {v: torch.tensor([v not in dropped]) for v in VARIABLES}
    with torch.no_grad():
        v_partial = gen.world_model(inp_partial["x"], inp_partial["tau"], inp_partial["cond"],
                                    inp_partial["timestamps"], inp_partial["camera"])
        v_dropped = gen.world_model(inp_full["x"], inp_full["tau"], inp_full["cond"], inp_full["timestamps"],
                                    inp_full["camera"], keep=keep)
    torch.testing.assert_close(v_partial, v_dropped, atol=1e-5, rtol=1e-5)


def test_each_camera_gets_its_own_timestamps_from_the_rig_rate(gen):
    from gaia2.generation.timing import latent_timestamps
    from gaia2.synth.rigs import RIGS

    request = gen.prepare(parse_spec(spec(rig={"name": "suv6_20hz"})))
    rig = RIGS["suv6_20hz"]
    expected = latent_timestamps(20.0, 6, 8, [c.time_offset_s for c in rig.cameras[:5]])
    np.testing.assert_array_equal(request.timestamps, expected)
    assert request.rig.names == ("front", "front_left", "front_right", "rear_left", "rear_right")
    assert len(set(request.timestamps[0].tolist())) == 5          # not synchronous


# ---------------------------------------------------------------------------------------- spec validation
@pytest.mark.parametrize("change, field", [
    ({"metadata": {"weather": "sunny"}}, "metadata.weather"),
    ({"metadata": {"colour": "red"}}, "colour"),
    ({"action": {"speed": {"profile": "warp"}}}, "speed.profile"),
    ({"action": {"speed": -3}}, "speed"),
    ({"agents": [{"category": "tank", "size": [1, 1, 1], "start": {"center": [1, 0]}}]}, "category"),
    ({"duration": {"seconds": -1}}, "duration.seconds"),
    ({"rig": None}, "rig"),
    ({"sampler": {"steps": 0}}, "sampler.steps"),
    ({"guidance": {"scale": 3, "drop": ["weather", "colour"]}}, "guidance.drop"),
    ({"mode": {"kind": "edit", "source": {"latents": "x"}, "tau_start": 1.5}}, "tau_start"),
    ({"mode": "dream"}, "mode"),
    ({"unknown_field": 1}, "unknown_field"),
])
def test_spec_errors_name_the_field(change, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec(spec(**change))


def test_errors_that_need_the_models_name_the_field(gen):
    def fails(match: str, sources=None, **change):
        with pytest.raises(SpecError, match=match):
            gen.prepare(parse_spec(spec(**change)), sources)

    fails(r"action\.speed\.accel", action={"speed": {"profile": "constant", "accel": 2}})
    fails(r"action\.speed: 3 values", action={"speed": [1.0, 2.0, 3.0]})
    fails(r"clip\.vector: 3 values", clip={"vector": [0.1, 0.2, 0.3]})
    fails(r"clip\.text.*CLIP model", clip={"text": "a road"})
    fails(r"scenario: 2 values", scenario=[0.0, 1.0])
    fails(r"rig\.name: unknown rig", rig={"name": "bus9"})
    fails(r"rig\.views: no camera \['roof'\]", rig={"name": "sedan6_30hz", "views": ["front", "roof"]})
    fails(r"sample 'k'.*no latent shards", mode={"kind": "rollout", "context": {"sample": "k"}})
    fails(r"mode\.source: latents of shape", ArraySources(x=np.zeros((6, 5, 8, 4, 8), np.float32)),
          mode={"kind": "edit", "source": {"latents": "x"}})
    fails(r"duration: 8 latent steps, the source has 6", ArraySources(x=source_latents()),
          duration={"latent_steps": 8}, mode={"kind": "edit", "source": {"latents": "x"}})
    fails(r"mode\.mask\[0\]\.agent: index 2", ArraySources(x=source_latents()),
          mode={"kind": "inpaint", "source": {"latents": "x"}, "mask": [{"agent": 2}]})


def test_the_spec_loads_from_yaml_and_json_files(tmp_path):
    import json

    import yaml

    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec()))
    (tmp_path / "b.json").write_text(json.dumps(spec()))
    (tmp_path / "c.yaml").write_text("rig: [unclosed")
    from gaia2.generation.spec import load_spec

    assert load_spec(str(tmp_path / "a.yaml")) == load_spec(str(tmp_path / "b.json"))
    with pytest.raises(SpecError, match="c.yaml: cannot read"):
        load_spec(str(tmp_path / "c.yaml"))
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(str(tmp_path / "missing.yaml"))


# -------------------------------------------------------------------------------------------- the outputs
def test_outputs_are_per_camera_videos_a_mosaic_latents_and_the_resolved_spec(gen, tmp_path):
    import json

    import av

    result = gen.generate(parse_spec(spec(rig={"name": "suv6_20hz", "views": ["front", "rear", "front_left"]},
                                          duration={"latent_steps": 2})))
    paths = result.write(str(tmp_path / "out"))
    for name in ("front", "rear", "front_left"):
        with av.open(paths[f"cameras/{name}"]) as c:
            stream = c.streams.video[0]
            frames = [f for f in c.decode(stream)]
            assert len(frames) == 16 and (frames[0].height, frames[0].width) == (32, 64)
            assert abs(float(stream.average_rate) - 20.0) < 1e-6
    with av.open(paths["video"]) as c:
        mosaic = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert mosaic.shape[1] == 2 * 256      # two forward cameras in the top row, the rear one centred below
    assert np.load(paths["latents"]).shape == (2, 3, 16, 4, 8)
    resolved = json.loads(open(paths["spec"]).read())
    assert resolved["cameras"] == ["front", "rear", "front_left"] and resolved["frames"] == 16
    assert resolved["latent_mean"] == MEAN and resolved["rig"]["frame_rate"] == 20.0


def test_mosaic_layout_follows_the_rig():
    from gaia2.generation.rig import mosaic_layout, resolve_rig
    from gaia2.generation.spec import RigSpec

    rig = resolve_rig(RigSpec(name="sedan6_30hz", views=["front", "front_left", "front_right", "rear_left",
                                                          "rear_right", "rear"]), (32, 64), 5, 6)
    rows = [[rig.names[i] for i in row] for row in mosaic_layout(rig)]
    assert rows == [["front_left", "front", "front_right"], ["rear_left", "rear", "rear_right"]]


def test_world_model_without_latent_statistics_is_refused(tmp_path):
    from gaia2.world_model.export import save_world_model

    path = save_world_model(str(tmp_path / "wm"), WorldModel(tiny()))
    with pytest.raises(ValueError, match="latent_mean"):
        Generator.from_dirs(path, None, device="cpu")
