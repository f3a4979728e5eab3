"""Evaluation protocols: the ``nuscenes`` preset is the documented nuScenes-val protocol and validates; the settings
it needs take effect in the measuring stage (FID frames "all", FVD clips of another length, frames resized to the
protocol's size, one window per scene); the report's protocol record says what was followed and what deviated;
a shard build at another frame rate is refused before anything is generated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gaia2.config.base import ConfigError


@pytest.fixture
def inputs(tmp_path) -> dict:
    """Paths ``load_config`` accepts: two shard directories and network files (only their existence is checked)."""
    for d in ("shards", "latents", "dinov2"):
        (tmp_path / d).mkdir()
    for f in ("inception.pth", "i3d.pt"):
        (tmp_path / f).write_bytes(b"")
    return {"job": {"world_model": str(tmp_path / "wm"), "tokenizer": str(tmp_path / "tok"),
                    "shards": str(tmp_path / "shards"), "latents": str(tmp_path / "latents")},
            "networks": {"fdd": str(tmp_path / "dinov2"), "fid": str(tmp_path / "inception.pth"),
                         "fvd": str(tmp_path / "i3d.pt")}}


def test_the_nuscenes_preset_is_the_documented_protocol_and_validates(inputs):
    from jobs.evaluate import load_config, protocol_record

    cfg = load_config("nuscenes", overrides=inputs)
    job, m, p = cfg.job, cfg.measure, cfg.protocol
    assert (job.split, job.samples, job.windows_per_clip, job.mode, job.sampler_steps) == ("val", None, 1,
                                                                                          "scratch", 50)
    assert job.metrics == "fid,fvd,fdd,loss"
    assert (m.frames_per_video, m.clips_per_video, m.fvd_clip_frames) == ("all", 1, 16)
    assert m.frame_sizes == {"fid": [224, 400], "fvd": [224, 400]}
    assert cfg.networks.resolutions == {"fid": [299, 299], "fvd": [224, 224]}
    assert (p.name, p.frame_rate, p.samples) == ("nuscenes-val-multiview", 12.0, 150)
    cited = " ".join(p.citations)
    for source in ("arXiv:2310.02601", "W-CODA2024-Track2 test_fvd.py", "OpenDWM", "arXiv:2405.17398"):
        assert source in cited, source
    record = protocol_record(cfg, "d" * 16, 150, ["CAM_FRONT", "CAM_BACK"])
    assert record["conforms"] and record["deviations"] == [] and record["citations"] == p.citations
    assert record["metrics"]["fid"] == {"frame_size": [224, 400], "network_resolution": [299, 299],
                                        "frames_per_camera": "all"}
    assert record["metrics"]["fvd"] == {"frame_size": [224, 400], "network_resolution": [224, 224],
                                        "clip_frames": 16, "clips_per_camera": 1}
    assert (record["frame_rate"], record["samples"], record["cameras"]) == (12.0, 150, ["CAM_FRONT", "CAM_BACK"])
    json.dumps(record)   # goes into evaluation.json and the run as it is


def test_a_changed_protocol_setting_is_a_deviation_in_the_record(inputs):
    from gaia2.config.base import deep_merge
    from jobs.evaluate import load_config, protocol_record

    cfg = load_config("nuscenes", overrides={**inputs, "measure": {"fvd_clip_frames": 8},
                                             "protocol": {"frame_rate": None}})
    record = protocol_record(cfg, "d", 120)
    assert not record["conforms"] and record["metrics"]["fvd"]["clip_frames"] == 8
    assert record["deviations"] == ["measure.fvd_clip_frames: 8 (the protocol's 16)",
                                    "protocol.frame_rate: None (the protocol's 12.0)",
                                    "samples: 120 evaluated (the protocol's 150)"]
    # the other presets record their own protocol
    paper = protocol_record(load_config("paper", overrides=deep_merge(inputs, {"job": {"metrics": "fid,fvd"}})),
                            "d", 1024)
    assert paper["conforms"] and paper["name"] == "gaia2-paper" and "arXiv:2503.20523" in paper["citations"][0]
    assert paper["metrics"]["fid"]["frames_per_camera"] == 8 and paper["metrics"]["fvd"]["clip_frames"] == 16


@pytest.mark.parametrize("override,needle", [
    ({"measure": {"frames_per_video": 0}}, "measure.frames_per_video"),
    ({"measure": {"frames_per_video": "some"}}, "measure.frames_per_video"),
    ({"measure": {"fvd_clip_frames": 4}}, "measure.fvd_clip_frames"),
    ({"measure": {"frame_sizes": {"iou": [224, 400]}}}, "frame sizes are for fdd, fid, fvd or fvmd"),
    ({"measure": {"frame_sizes": {"fid": [224]}}}, "expected [H, W]"),
    ({"job": {"windows_per_clip": 0}}, "job.windows_per_clip"),
])
def test_bad_protocol_settings_are_errors_naming_the_field(inputs, override, needle):
    from gaia2.config.base import deep_merge
    from jobs.evaluate import load_config

    with pytest.raises(ConfigError) as err:
        load_config("nuscenes", overrides=deep_merge(inputs, override))
    assert needle in str(err.value)


def test_first_windows_keeps_the_first_of_each_clip_in_key_order():
    from pipelines.evaluation.samples import first_windows

    keys = ["a_w003", "a_w001", "b_w002", "b_w005", "c_w000", "lonely"]
    clip = {"a_w003": "a", "a_w001": "a", "b_w002": "b", "b_w005": "b", "c_w000": "c"}
    window = {"a_w003": 3, "a_w001": 1, "b_w002": 2, "b_w005": 5, "c_w000": 0}
    assert first_windows(keys, clip, window, 1) == ["a_w001", "b_w002", "c_w000", "lonely"]
    assert first_windows(keys, clip, window, 2) == keys


def test_resize_frames_keeps_layout_and_range():
    from pipelines.evaluation.samples import resize_frames

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 3, 32, 64, 3), dtype=np.uint8)
    out = resize_frames(frames, (16, 24))
    assert out.shape == (2, 3, 16, 24, 3) and out.dtype == np.uint8
    assert resize_frames(frames, (32, 64)) is frames
    flat = np.full((4, 32, 64, 3), 77, np.uint8)
    assert (resize_frames(flat, (10, 20)) == 77).all()
    # each frame is resized on its own: the second frame's output depends on the second frame only
    np.testing.assert_array_equal(resize_frames(frames[:, 1:2], (16, 24)), out[:, 1:2])


@pytest.fixture(scope="module")
def tiny_nets(tmp_path_factory) -> dict:
    from gaia2.evaluation.features import write_tiny_networks

    return write_tiny_networks(str(tmp_path_factory.mktemp("protocol_nets")))


def test_the_measuring_stage_follows_the_protocol_settings(tiny_nets, tokenizer_shards, latent_shards):
    """Every frame (frames_per_video "all") resized to frame_sizes for FDD (FID takes the same path); FVD clips of
    fvd_clip_frames, two per camera, resized likewise: equal to the networks on frames picked and resized by
    hand, and different from what the defaults give."""
    from gaia2.evaluation.features import TINY_RESOLUTIONS, load_extractor
    from pipelines.evaluation.measure import MeasureVideos, Settings
    from pipelines.evaluation.samples import ShardIndex, real_video, resize_frames

    index = ShardIndex(tokenizer_shards, "val")
    key = index.keys()[0]
    video = real_video(index, key).frames                                   # (N, F, H, W, 3)
    n, f = video.shape[:2]
    nets = {"fdd": tiny_nets["fdd"], "fvd": tiny_nets["fvd"]}
    res = {m: list(TINY_RESOLUTIONS[m]) for m in nets}
    protocol = Settings(networks=nets, resolutions=res, frames_per_video="all", clips_per_video=2,
                        fvd_clip_frames=8, frame_sizes={"fdd": [16, 28], "fvd": [16, 24]})
    out = MeasureVideos(protocol.to_json(), tokenizer_shards, latent_shards, "val").measure(
        key, "real", "", [], ["fdd", "fvd"])
    assert out["fdd"].shape[0] == n * f and out["fvd"].shape[0] == n * 2
    np.testing.assert_array_equal(out["fdd.camera"], np.repeat(np.arange(n), f))

    fdd = load_extractor("fdd", nets["fdd"], resolution=TINY_RESOLUTIONS["fdd"])
    by_hand = fdd.extract(resize_frames(video.reshape(-1, *video.shape[2:]), (16, 28)))
    np.testing.assert_allclose(out["fdd"], by_hand, rtol=1e-4, atol=1e-5)
    unresized = fdd.extract(video.reshape(-1, *video.shape[2:]))
    assert np.abs(out["fdd"] - unresized).max() > 1e-3                     # the size took effect

    fvd = load_extractor("fvd", nets["fvd"], resolution=TINY_RESOLUTIONS["fvd"], clip_frames=8)
    starts = [0, f - 8]                                                     # two clips spread over the window
    clips = np.stack([video[c, s:s + 8] for c in range(n) for s in starts])
    np.testing.assert_allclose(out["fvd"], fvd.extract(resize_frames(clips, (16, 24))), rtol=1e-4, atol=1e-4)

    default = MeasureVideos(Settings(networks=nets, resolutions=res).to_json(), tokenizer_shards, latent_shards,
                            "val").measure(key, "real", "", [], ["fdd", "fvd"])
    assert default["fdd"].shape[0] == n * 4 and default["fvd"].shape[0] == n   # 4 frames, one 16-frame clip
    with pytest.raises(ValueError, match=r"\(B, 8, H, W, 3\)"):
        fvd.extract(video[:1, :16])                                         # the extractor checks the length


def test_fvd_clip_length_and_frame_size_are_part_of_the_cache_key(tiny_nets, tmp_path):
    from jobs.evaluate import EvaluateConfig, Measure, Networks
    from jobs.evaluate_run import Evaluation

    def fingerprints(**measure) -> dict:
        cfg = EvaluateConfig(networks=Networks(fdd=tiny_nets["fdd"], fvd=tiny_nets["fvd"],
                                               resolutions={"fdd": [56, 112], "fvd": [64, 64]}),
                             measure=Measure(**measure))
        cfg.job.metrics = "fdd,fvd"
        ev = Evaluation(cfg)
        return ev.fingerprints(ev.settings())

    base = fingerprints()
    assert "length" not in base["fvd"] and "size" not in base["fvd"]          # older caches stay valid
    longer, sized, every = fingerprints(fvd_clip_frames=8), fingerprints(frame_sizes={"fvd": [16, 24]}), \
        fingerprints(frames_per_video="all")
    assert longer["fvd"] != base["fvd"] and longer["fdd"] == base["fdd"] and "length=8" in longer["fvd"]
    assert sized["fvd"] != base["fvd"] and sized["fdd"] == base["fdd"] and "size=16x24" in sized["fvd"]
    assert every["fdd"] != base["fdd"] and "frames=all" in every["fdd"]


def test_shards_at_another_frame_rate_are_refused_before_generating(tokenizer_shards, latent_shards,
                                                                    serve_models, tiny_nets, tmp_path, capsys):
    """The nuscenes preset on the fixture shards (not 12 Hz): one error line naming protocol.frame_rate, with
    the sample's rate and the way out; nothing is generated."""
    from jobs.evaluate import main

    argv = ["--preset", "nuscenes", "--world-model", serve_models[0], "--tokenizer", serve_models[1],
            "--shards", tokenizer_shards, "--latents", latent_shards, "--workdir", str(tmp_path),
            "--fdd-net", tiny_nets["fdd"], "--fid-net", tiny_nets["fid"], "--fvd-net", tiny_nets["fvd"]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "protocol.frame_rate: the nuscenes-val-multiview protocol's videos are at 12 Hz" in err
    assert "--set protocol.frame_rate=null" in err and "Traceback" not in err
    assert not (tmp_path / "evaluations").exists()


def test_the_nuscenes_preset_runs_end_to_end_on_a_cpu(tiny_nets, tokenizer_shards, latent_shards, serve_models,
                                                      ray_session, tmp_path, capsys):
    """The nuscenes preset through the job on the fixture shards, sized for a CPU (the fixture's val split is one
    clip: 3 of its windows; its own frame rate; small networks): FDD over every frame of every camera, FVD over
    one clip per camera resized to the protocol's (here small) size, and a report whose protocol names the
    preset and each setting changed from it."""
    from jobs.evaluate import main
    from pipelines.evaluation.samples import ShardIndex

    index = ShardIndex(tokenizer_shards, "val")
    rate = json.loads(index.members(index.keys()[0], ("json",))["json"])["frame_rate"]
    out = tmp_path / "eval"
    argv = ["--preset", "nuscenes", "--world-model", serve_models[0], "--tokenizer", serve_models[1],
            "--shards", tokenizer_shards, "--latents", latent_shards, "--workdir", str(tmp_path), "--out", str(out),
            "--fdd-net", tiny_nets["fdd"], "--fvd-net", tiny_nets["fvd"], "--metrics", "fdd,fvd", "--steps", "3"]
    for setting in ("job.windows_per_clip=3", f"protocol.frame_rate={rate}", "bootstrap=0",
                    "generation.precision=fp32", "generation.device=cpu", "generation.num_gpus=0",
                    "generation.concurrency=1", "generation.num_cpus=1", "measure.num_gpus=0",
                    "measure.concurrency=1", "measure.num_cpus=1", "measure.frame_sizes.fvd=[24, 48]",
                    "networks.resolutions={fdd: [56, 112], fvd: [64, 64]}"):
        argv += ["--set", setting]
    assert main(argv) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(out / "evaluation.json") as f:
        report = json.load(f)
    protocol = report["protocol"]
    frames = len(json.loads(index.members(index.keys()[0], ("json",))["json"])["timestamps"])
    assert last["samples"] == 3 and last["fdd"]["n_real"] == 3 * 5 * frames      # every frame of 5 cameras
    assert last["fvd"]["n"] == 3 * 5 and last["fvd"]["value"] > 0                 # one clip per camera
    assert (protocol["name"], protocol["preset"], protocol["frame_rate"]) == ("nuscenes-val-multiview",
                                                                              "nuscenes", rate)
    assert protocol["metrics"]["fvd"]["frame_size"] == [24, 48] and protocol["metrics"]["fdd"]["frames_per_camera"] \
        == "all"
    changed = {d.split(":")[0] for d in protocol["deviations"]}
    assert changed == {"job.windows_per_clip", "job.sampler_steps", "measure.frame_sizes", "networks.resolutions",
                       "protocol.frame_rate", "samples"} and not protocol["conforms"]
