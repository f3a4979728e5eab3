"""The evaluation job end to end on the session's tiny shards and models: every metric with its interval and
counts, FID through the job equal to torchmetrics' FID on the same frames, the real-feature cache, checkpoints
(metrics against training step), tags on registered versions, promotion, and the errors a user gets."""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch

ALL = ("fdd", "fid", "fvd", "fvmd", "agent_iou", "action_speed_spearman", "val_loss")


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict:
    """Tiny random feature networks of the real classes, saved and loaded the way real ones are."""
    from gaia2.evaluation.agent_iou import write_tiny_segmenter
    from gaia2.evaluation.features import write_tiny_networks

    root = tmp_path_factory.mktemp("eval_nets")
    paths = write_tiny_networks(str(root))
    paths["segmenter"] = write_tiny_segmenter(str(root / "segmenter"))
    return paths


def _args(nets: dict, tokenizer_shards: str, latent_shards: str, tokenizer: str, work, *extra) -> list[str]:
    return ["--tokenizer", tokenizer, "--shards", tokenizer_shards, "--latents", latent_shards, "--workdir", str(work),
            "--fdd-net", nets["fdd"], "--fid-net", nets["fid"], "--fvd-net", nets["fvd"], "--segmenter",
            nets["segmenter"], "--steps", "3", *extra]


def _run(capsys, argv: list[str]) -> tuple[dict, str]:
    from jobs.evaluate import main

    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]), out


@pytest.fixture(scope="module")
def evaluated(ray_session, serve_models, tokenizer_shards, latent_shards, nets, tmp_path_factory):
    """One evaluation of the tiny world model on 3 samples with every metric (2 frames per camera for FDD / FID)."""
    from jobs.evaluate import main

    wm, tok = serve_models
    work = tmp_path_factory.mktemp("eval_work")
    out = work / "eval"
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(_args(nets, tokenizer_shards, latent_shards, tok, work, "--world-model", wm, "--samples", "3",
                          "--out", str(out), "--set", "bootstrap=50", "--set", "measure.frames_per_video=2")) == 0
    lines = buf.getvalue().strip().splitlines()
    with open(out / "evaluation.json") as f:
        report = json.load(f)
    return {"last": json.loads(lines[-1]), "text": buf.getvalue(), "report": report, "work": work, "out": out}


def test_the_last_line_has_every_metric_with_its_interval_and_count(evaluated):
    last = evaluated["last"]
    for name in ALL:
        m = last[name]
        assert {"value", "low", "high", "n"} <= set(m), name
        assert isinstance(m["n"], int) and m["n"] > 0, name
    for name in ("fdd", "fid", "fvd", "fvmd"):
        assert last[name]["value"] > 0 and last[name]["n_real"] == last[name]["n_fake"] > 0
    assert last["fdd"]["n"] == 3 * 5 * 2        # 2 frames of each of the 5 generated cameras of 3 samples
    assert last["fvd"]["n"] == 3 * 5 and last["fvmd"]["tracker"] == "lucas-kanade"
    assert 0.0 <= last["agent_iou"]["value"] <= 1.0 and last["samples"] == 3
    assert np.isfinite(last["val_loss"]["value"]) and last["val_loss"]["by_tau"]
    # 3 samples are too few for an interval (a bootstrap needs 8): said, not invented.
    assert last["fdd"]["low"] is None and "[no interval]" in evaluated["text"]


def test_fid_through_the_job_equals_torchmetrics_on_the_same_frames(evaluated, nets, tokenizer_shards):
    """Decoding, batching and the actor pool change nothing: torchmetrics' FID with the same Inception weights on
    the same frames (the job's 2 evenly spread frames of every real and generated camera, decoded here with decord
    directly) agrees within 1 %."""
    import decord
    from torchmetrics.image.fid import FrechetInceptionDistance

    from pipelines.evaluation.samples import frame_indices

    out = evaluated["out"]
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=nets["fid"], antialias=False)
    gens = sorted(glob.glob(str(out / "generations" / "*" / "*" / "spec.json")))
    assert len(gens) == 3

    def frames(data: bytes) -> torch.Tensor:
        vr = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0))
        return torch.from_numpy(vr.get_batch(list(range(len(vr)))).asnumpy()).permute(0, 3, 1, 2)

    members = {}
    for tar in glob.glob(os.path.join(tokenizer_shards, "val", "*.tar")):
        with tarfile.open(tar) as t:
            for info in t:
                members[info.name] = t.extractfile(info).read()
    for spec in gens:
        folder = os.path.dirname(spec)
        key = os.path.basename(folder)
        with open(spec) as f:
            cameras = [c["name"] for c in json.load(f)["rig"]["cameras"]]
        for cam in cameras:
            with open(os.path.join(folder, "cameras", f"{cam}.mp4"), "rb") as f:
                fake = frames(f.read())
            real = frames(members[f"{key}.{cam}.mp4"])
            pick = torch.from_numpy(frame_indices(min(len(fake), len(real)), 2))
            fid.update(real[pick], real=True)
            fid.update(fake[pick], real=False)
    expected = float(fid.compute())
    print(f"FID through the job {evaluated['last']['fid']['value']:.6g}, torchmetrics {expected:.6g}")
    assert evaluated["last"]["fid"]["value"] == pytest.approx(expected, rel=0.01)


def test_the_run_is_tracked_with_plots_grid_videos_and_the_report(evaluated):
    import mlflow
    from mlflow import MlflowClient

    from jobs.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(str(evaluated["work"])))
    client = MlflowClient()
    run = client.get_run(evaluated["last"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "evaluation"
    for name in ALL:
        assert name in run.data.metrics and f"{name}_n" in run.data.metrics
    assert any(k.startswith("val_loss_tau_") for k in run.data.metrics)
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/grid.png", "evaluation/val_loss_by_tau.png", "evaluation/evaluation.json",
            "evaluation/protocol.json"} <= listed
    videos = client.list_artifacts(run.info.run_id, "evaluation/videos")
    assert len(videos) == 3 and all(v.path.endswith(".mp4") for v in videos)
    assert run.data.tags["gaia2.eval.tracker"] == "lucas-kanade"
    protocol = evaluated["report"]["protocol"]
    assert run.data.tags["gaia2.eval.protocol"] == protocol["digest"]
    assert (run.data.tags["gaia2.eval.protocol.name"], run.data.tags["gaia2.eval.protocol.conforms"]) == \
        ("gaia2-tiny", "false")
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/evaluation/protocol.json") == protocol


def test_the_report_says_which_protocol_the_figures_follow(evaluated):
    """The tiny preset's protocol with this run's settings: --samples 3 and 2 frames per camera are deviations
    from it, named; per distance the frames, clip length and sizes the networks saw."""
    protocol = evaluated["report"]["protocol"]
    assert (protocol["name"], protocol["preset"], protocol["samples"], protocol["split"]) == ("gaia2-tiny", "tiny",
                                                                                              3, "val")
    assert len(protocol["digest"]) == 16 and not protocol["conforms"]
    assert protocol["deviations"] == ["job.samples: 3 (the protocol's None)", "job.sampler_steps: 3 (the protocol's "
                                      "10)", "measure.frames_per_video: 2 (the protocol's 4)"]
    assert len(protocol["cameras"]) == 5 and protocol["citations"] == []
    metrics = protocol["metrics"]
    assert set(metrics) == {"fdd", "fid", "fvd", "fvmd"}
    assert metrics["fdd"] == {"frame_size": None, "network_resolution": [56, 112], "frames_per_camera": 2}
    assert metrics["fvd"] == {"frame_size": None, "network_resolution": [64, 64], "clip_frames": 16,
                              "clips_per_camera": 1}
    assert metrics["fid"]["network_resolution"] == [299, 299] and metrics["fvmd"]["clip_frames"] == 16


def test_another_model_reuses_the_real_features_and_a_rerun_redoes_nothing(evaluated, nets, tokenizer_shards,
                                                                             latent_shards, serve_models, tmp_path,
                                                                             capsys):
    from gaia2.flow.stats import read_stats
    from gaia2.world_model.config import tiny
    from gaia2.world_model.export import save_world_model
    from gaia2.world_model.model import WorldModel

    stats = read_stats(latent_shards)
    torch.manual_seed(99)
    model = WorldModel(tiny())
    with torch.no_grad():   # a random model's zero-initialised output layers predict nothing: perturb every weight
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    other = save_world_model(str(tmp_path / "other"), model, extra={"latent_mean": stats.mean, "latent_std": stats.std})
    argv = _args(nets, tokenizer_shards, latent_shards, serve_models[1], evaluated["work"], "--world-model", other,
                 "--samples", "3", "--out", str(tmp_path / "eval"), "--set", "bootstrap=50",
                 "--set", "measure.frames_per_video=2", "--metrics", "fdd,fvmd,action")
    last, text = _run(capsys, argv)
    with open(tmp_path / "eval" / "evaluation.json") as f:
        counts = json.load(f)["counts"]
    assert counts["real_measured"] == 0 and counts["real_reused"] == 3 and counts["fake_measured"] == 3
    assert last["fdd"]["value"] != evaluated["last"]["fdd"]["value"]
    again, text = _run(capsys, argv)
    with open(tmp_path / "eval" / "evaluation.json") as f:
        counts = json.load(f)["counts"]
    assert "generating" not in text and counts["fake_measured"] == 0 and counts["real_measured"] == 0
    assert again["fdd"]["value"] == last["fdd"]["value"] and again["run_id"] == last["run_id"]


def _latent_batches(latent_shards: str, split: str, n: int, batch: int = 2):
    from pipelines.evaluation.samples import ShardIndex
    from pipelines.world_model.train_data import MEMBERS, to_samples

    index = ShardIndex(latent_shards, split)
    keys = index.keys()[:n]
    for start in range(0, len(keys), batch):
        raw = [index.members(k, MEMBERS) for k in keys[start:start + batch]]
        arrays = to_samples({m: np.asarray([r[m] for r in raw], dtype=object) for m in MEMBERS}, 5, 4)
        yield {k: torch.as_tensor(v) for k, v in arrays.items()}


def _trainer(latent_shards: str, **optim):
    from gaia2.flow.stats import read_stats
    from gaia2.world_model.train_config import train_config
    from gaia2.world_model.trainer import WorldModelTrainer

    stats = read_stats(latent_shards)
    cfg = train_config("tiny", overrides={"flow": {"latent_mean": stats.mean, "latent_std": stats.std},
                                          "optim": {"warmup_steps": 1, **optim}})
    torch.manual_seed(5)
    return WorldModelTrainer(cfg), cfg


def test_checkpoints_of_a_run_give_metrics_against_training_step(nets, tokenizer_shards, latent_shards, serve_models,
                                                                 ray_session, tmp_path, capsys):
    """The paper's Fig. 13 in one run: each checkpoint exported once, evaluated, logged at its step, plotted."""
    import mlflow
    from mlflow import MlflowClient

    from jobs import checkpoint
    from jobs.tracking import tracking_uri

    trainer, cfg = _trainer(latent_shards, ema_decay=0.0)   # EMA = the weights: the curve moves in a few steps
    run_dir = tmp_path / "wm-run"
    batches = list(_latent_batches(latent_shards, "train", 8))
    for step in (0, 6):
        while trainer.step < step:
            trainer.train_step(batches[trainer.step % len(batches)])
        checkpoint.save(str(run_dir / f"checkpoint-{step:08d}"), trainer, 0, 1, {"epoch": 0, "batch": step},
                        cfg.model_dump(mode="json"))
    work = tmp_path / "work"
    last, text = _run(capsys, _args(nets, tokenizer_shards, latent_shards, serve_models[1], work, "--checkpoints",
                                    str(run_dir), "--samples", "3", "--metrics", "loss,fvmd", "--out",
                                    str(tmp_path / "eval")))
    assert [s["step"] for s in last["by_step"]] == [0, 6]
    losses = [s["val_loss"] for s in last["by_step"]]
    assert losses[1] < losses[0]          # trained: a lower validation loss on the same draws
    assert "step-00000000 (step 0)" in text and "step-00000006 (step 6)" in text
    mlflow.set_tracking_uri(tracking_uri(str(work)))
    client = MlflowClient()
    history = client.get_metric_history(last["run_id"], "val_loss")
    assert sorted(m.step for m in history) == [0, 6]
    listed = {a.path for a in client.list_artifacts(last["run_id"], "evaluation")}
    assert "evaluation/metrics_by_step.png" in listed
    # Exported once: a rerun reuses the exports and every measurement.
    _, again = _run(capsys, _args(nets, tokenizer_shards, latent_shards, serve_models[1], work, "--checkpoints",
                                  str(run_dir), "--samples", "3", "--metrics", "loss,fvmd", "--out",
                                  str(tmp_path / "eval")))
    assert "generating" not in again


def test_promotion_moves_the_alias_only_beyond_the_intervals(latent_shards, tokenizer_shards, serve_models,
                                                            ray_session, nets, tmp_path, capsys):
    """v1 (random) takes the empty alias; v2 (trained) beats it on the validation loss beyond the intervals and
    takes it; v1 evaluated again does not take it back. Each version carries its scores as tags."""
    import mlflow
    from mlflow import MlflowClient

    from gaia2.world_model.export import save_world_model
    from jobs.registry import log_and_register
    from jobs.tracking import mlflow_run

    work = tmp_path / "work"
    trainer, cfg = _trainer(latent_shards)
    batches = list(_latent_batches(latent_shards, "train", 16))
    random_dir = save_world_model(str(tmp_path / "v1"), trainer.model, extra={
        "latent_mean": cfg.flow.latent_mean, "latent_std": cfg.flow.latent_std})
    for i in range(30):
        trainer.train_step(batches[i % len(batches)])
    trained_dir = save_world_model(str(tmp_path / "v2"), trainer.model, extra={
        "latent_mean": cfg.flow.latent_mean, "latent_std": cfg.flow.latent_std})
    name = "gaia2-world-model-evaltest"
    with mlflow_run("world-model", str(work), "register"):
        assert log_and_register(random_dir, name, "world_model") == 1
        assert log_and_register(trained_dir, name, "world_model") == 2
    def args(samples: int = 16) -> list[str]:
        return ["--tokenizer", serve_models[1], "--shards", tokenizer_shards, "--latents", latent_shards, "--workdir",
                str(work), "--split", "train", "--samples", str(samples), "--metrics", "loss", "--promote",
                "champion", "--by", "val_loss"]
    common = args()
    first, _ = _run(capsys, ["--world-model", f"models:/{name}/1", "--out", str(tmp_path / "e1"), *common])
    assert first["promotion"]["moved"] and "held no version" in first["promotion"]["decision"]
    assert first["val_loss"]["low"] is not None
    second, text = _run(capsys, ["--world-model", f"models:/{name}/2", "--out", str(tmp_path / "e2"), *common])
    assert second["promotion"]["moved"], second["promotion"]
    assert "beyond the 95% intervals" in second["promotion"]["decision"] and "from tags of run" in text
    third, _ = _run(capsys, ["--world-model", f"models:/{name}/1", "--out", str(tmp_path / "e3"), *common])
    assert not third["promotion"]["moved"] and "not better" in third["promotion"]["decision"]
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    tags = client.get_model_version(name, "2").tags
    assert float(tags["gaia2.eval.val_loss"]) == pytest.approx(second["val_loss"]["value"])
    assert float(tags["gaia2.eval.val_loss.low"]) < float(tags["gaia2.eval.val_loss.high"])
    # Another protocol (12 samples): the holder's tags do not count, so the holder is evaluated in the same run
    # (and its tags then record this protocol).
    fourth, text = _run(capsys, ["--world-model", f"models:/{name}/1", "--out", str(tmp_path / "e4"),
                                 *args(12)])
    assert "[the version @champion held]" in text and not fourth["promotion"]["moved"]
    assert "from tags" not in fourth["promotion"]["decision"] and fourth["val_loss"]["n"] == 12
    assert client.get_model_version(name, "2").tags["gaia2.eval.val_loss.n"] == "12"


def test_a_video_that_cannot_be_read_is_a_counted_failure_not_a_failed_job(tokenizer_shards, latent_shards,
                                                                          tmp_path):
    """The measuring stage turns each unreadable video into a failed row naming it; the others are measured."""
    from pipelines.evaluation.measure import MeasureVideos, Settings, unpack
    from pipelines.evaluation.samples import ShardIndex

    key = ShardIndex(tokenizer_shards, "val").keys()[0]
    stage = MeasureVideos(Settings().to_json(), tokenizer_shards, latent_shards, "val")
    rows = {"key": np.array([key, "no-such-key", key], dtype=object),
            "side": np.array(["real", "real", "fake"], dtype=object),
            "tag": np.array(["real", "real", "m"], dtype=object),
            "folder": np.array(["", "", str(tmp_path / "missing")], dtype=object),
            "cameras": np.array(["", "", ""], dtype=object), "wants": np.array(["fvmd,action"] * 3, dtype=object)}
    out = stage(rows)
    assert list(out["status"]) == ["ok", "failed", "failed"]
    assert "no-such-key" in out["detail"][1] and "not in the shards" in out["detail"][1]
    assert "spec.json" in out["detail"][2]
    arrays = unpack(out["result"][0])
    assert arrays["fvmd"].shape[0] == len(arrays["cameras"]) and arrays["motion"].shape == (2,)


@pytest.mark.parametrize("extra,needle", [
    (["--metrics", "fdd"], "networks.fdd: fdd needs a DINOv2"),
    (["--metrics", "fvmd,bogus"], "metrics are a comma list"),
    (["--metrics", "loss", "--promote", "champion"], "job.promote / job.by: give both"),
    (["--metrics", "loss", "--promote", "champion", "--by", "fdd"], "job.by: 'fdd' is not one of the metrics"),
    (["--metrics", "fid", "--fid-net", "/nonexistent/inception.pth"], "networks.fid: '/nonexistent/inception.pth' does not exist"),
])
def test_bad_configuration_is_one_error_line_naming_the_field(extra, needle, latent_shards, tokenizer_shards,
                                                              serve_models, tmp_path, capsys):
    from jobs.evaluate import main

    argv = ["--world-model", f"models:/gaia2-world-model-nothing@x", "--tokenizer", serve_models[1], "--shards",
            tokenizer_shards, "--latents", latent_shards, "--workdir", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_a_model_whose_samples_all_fail_is_an_error_naming_the_first_failure(ray_session, serve_models,
                                                                             tokenizer_shards, latent_shards,
                                                                             tmp_path, capsys):
    """Rolling out with 3 context latents of 3-latent samples cannot work: one error line says why, no report of NaNs."""
    from jobs.evaluate import main

    argv = ["--world-model", serve_models[0], "--tokenizer", serve_models[1], "--shards", tokenizer_shards,
            "--latents", latent_shards, "--workdir", str(tmp_path), "--samples", "1", "--mode", "rollout",
            "--metrics", "fvmd", "--steps", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "none of the 1 samples could be generated and measured" in err and "3 context steps" in err
