"""The world model's Ray Train job end to end on latent shards: training, logging by tau bucket and task,
validation against the constant-velocity baseline, export and registration, resume after a worker
failure at the same step and data position with the same losses in one MLflow run, and config errors."""

from __future__ import annotations

import os

import pytest

from gaia2.config.base import deep_merge
from gaia2.world_model.train_config import train_config

STEPS, CKPT = 6, 4


SCENARIO_DIM = 8


@pytest.fixture(scope="module")
def scenario_table(latent_shards, tmp_path_factory) -> str:
    """Scenario vectors for two thirds of the latent shards' samples (the rest train as scenario-dropped)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = pq.read_table(os.path.join(latent_shards, "manifest.parquet"), columns=["key"]).column("key").to_pylist()
    kept = [k for i, k in enumerate(sorted(keys)) if i % 3]
    vectors = np.random.default_rng(0).normal(size=(len(kept), SCENARIO_DIM)).astype(np.float32)
    path = str(tmp_path_factory.mktemp("scenario") / "scenario.parquet")
    pq.write_table(pa.table({"key": kept, "embedding": list(vectors)}), path)
    return path


def _cfg(shards, scenario=None, **extra):
    overrides = {
        "model": {"latent_steps": 3, "dim": 32, "heads": 2, "depth": 1,
                  "conditioning": {"max_agents": 4, "scenario_dim": SCENARIO_DIM}},
        "data": {"shards": shards, "batch_size": 2, "shuffle_buffer": 8, "val_samples": 4, "scenario": scenario},
        "schedule": {"steps": STEPS, "log_every": 1, "val_every": 100, "checkpoint_every": CKPT},
        "workers": {"max_failures": 1},
    }
    return train_config("tiny", overrides=deep_merge(overrides, extra))


def _history(workdir, run_id, key="loss"):
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri

    out: dict[int, list[float]] = {}
    for m in MlflowClient(tracking_uri(workdir)).get_metric_history(run_id, key):
        out.setdefault(m.step, []).append(m.value)
    return out


def _run(workdir, run_id):
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri

    return MlflowClient(tracking_uri(workdir)).get_run(run_id)


def _train(cfg, name, workdir, fail_at_step=None):
    from jobs.specs import SPECS
    from jobs.train_driver import run

    return run(SPECS["world-model"], cfg.model_copy(update={"job": cfg.job.model_copy(update={
        "name": name, "workdir": workdir, "fail_at_step": fail_at_step})}))


def _same_losses(losses, reference, rel=1e-6, abs=1e-7):
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step, values in losses.items():
        assert values == pytest.approx([reference[step][0]] * len(values), rel=rel, abs=abs), step


@pytest.fixture(scope="module")
def straight(ray_session, latent_shards, scenario_table, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("wm-straight"))
    return _train(_cfg(latent_shards, scenario_table), "wm-straight", work), work


def test_training_logs_exports_and_registers(straight):
    import mlflow
    import yaml

    from gaia2.world_model.export import load_world_model
    from jobs.registry import resolve_model_uri
    from jobs.tracking import tracking_uri

    outcome, work = straight
    losses = _history(work, outcome.run_id)
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(len(v) == 1 for v in losses.values())
    metrics = _run(work, outcome.run_id).data.metrics
    assert any(k.startswith("loss_tau_") for k in metrics) and any(k.startswith("loss_task_") for k in metrics)
    assert metrics["tokens_per_s"] > 0
    assert {"val_loss", "val_baseline_loss", "val_improvement"} <= set(outcome.metrics)
    exported = load_world_model(outcome.export_dir)
    assert exported.cfg.dim == 32
    # The registered model is the export directory behind an installed loader: nothing pickled in it.
    mlflow.set_tracking_uri(tracking_uri(work))
    uri = f"models:/{outcome.model_name}@candidate"
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    files = [os.path.join(d, f) for d, _, names in os.walk(local) for f in names]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".cloudpickle"))]
    with open(os.path.join(local, "MLmodel")) as f:
        assert yaml.safe_load(f)["flavors"]["python_function"]["loader_module"] == "jobs.registry"
    assert load_world_model(resolve_model_uri(uri)).cfg == exported.cfg
    assert mlflow.pyfunc.load_model(uri) is not None


def test_training_uses_the_measured_latent_statistics_and_the_scenario_table(straight, latent_shards):
    """The shards' measured statistics fill the config, are logged, and travel with the export; the scenario
    table's coverage is logged."""
    from gaia2.export import read_meta
    from gaia2.flow.stats import read_stats

    outcome, work = straight
    stats = read_stats(latent_shards)
    meta = read_meta(outcome.export_dir)
    assert meta["latent_mean"] == stats.mean and meta["latent_std"] == stats.std
    params = _run(work, outcome.run_id).data.params
    assert params["flow.latent_std"] == str(stats.std)
    assert 0.5 < float(params["scenario_coverage_train"]) < 0.8


def test_worker_failure_resumes_with_the_same_losses(straight, latent_shards, scenario_table, tmp_path):
    reference = _history(straight[1], straight[0].run_id)
    work = str(tmp_path)
    outcome = _train(_cfg(latent_shards, scenario_table), "wm-crashy", work, fail_at_step=CKPT + 1)
    losses = _history(work, outcome.run_id)
    assert len(losses[CKPT + 1]) == 2
    _same_losses(losses, reference)
    metrics = _run(work, outcome.run_id).data.metrics
    assert metrics["resumed_from_step"] == CKPT and metrics["resumed_epoch"] == 0 and metrics["resumed_batch"] == CKPT


def test_a_corrupt_latest_checkpoint_is_skipped_and_the_job_resumes_from_the_one_before(
        straight, latent_shards, scenario_table, tmp_path):
    """The job fails after its step-4 checkpoint; that checkpoint is then damaged in storage. Running the job
    again warns naming it and resumes from step 2, with the uninterrupted run's losses."""
    import glob

    reference = _history(straight[1], straight[0].run_id)
    work = str(tmp_path)
    cfg = _cfg(latent_shards, scenario_table, schedule={"checkpoint_every": 2}, workers={"max_failures": 0})
    with pytest.raises(Exception):
        _train(cfg, "wm-corrupt", work, fail_at_step=CKPT + 1)
    latest = os.path.join(work, "ray_results", "wm-corrupt", f"checkpoint-{CKPT:08d}")
    shard = sorted(glob.glob(os.path.join(latest, "*.distcp")))[0]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    outcome = _train(cfg, "wm-corrupt", work)
    run = _run(work, outcome.run_id)
    skipped = run.data.tags["gaia2.skipped_checkpoints"]
    assert f"checkpoint-{CKPT:08d}" in skipped and "corrupt" in skipped
    assert run.data.tags["gaia2.resumed_from"].endswith("checkpoint-00000002")
    assert run.data.metrics["resumed_from_step"] == 2
    _same_losses(_history(work, outcome.run_id), reference)


@pytest.fixture(scope="module")
def two_workers(ray_session, latent_shards, tmp_path_factory):
    """An uninterrupted run of two DDP workers (gloo, fractional CPUs: two cores hold both and Ray Data)."""
    work = str(tmp_path_factory.mktemp("wm-ddp2"))
    return _train(_cfg(latent_shards, workers={"num_workers": 2}), "wm-ddp2", work), work


@pytest.mark.parametrize("strategy, rel", [("ddp", 1e-6), ("fsdp", 1e-5)])
def test_two_workers_resume_after_a_failure_with_the_uninterrupted_losses(two_workers, latent_shards, tmp_path,
                                                                          strategy, rel):
    """Two workers, DDP (the tiny model's scenario projection gets no gradient: DDP must expect that) or FSDP2
    (sharded parameters, EMA and optimizer state), crash at step 5 and resume from the step-4 checkpoint
    with the uninterrupted two-worker DDP run's losses; FSDP's export is gathered from the shards."""
    import torch

    from gaia2.world_model.export import load_world_model

    reference = _history(two_workers[1], two_workers[0].run_id)
    work = str(tmp_path)
    cfg = _cfg(latent_shards, workers={"num_workers": 2, "strategy": strategy})
    outcome = _train(cfg, f"wm-{strategy}2-crashy", work, fail_at_step=CKPT + 1)
    files = os.listdir(outcome.checkpoint)
    assert {"extra-0.json", "extra-1.json", ".metadata"} <= set(files) and not any(f.endswith(".pt") for f in files)
    losses = _history(work, outcome.run_id)
    assert len(losses[CKPT + 1]) == 2
    _same_losses(losses, reference, rel=rel, abs=rel / 10)
    assert _run(work, outcome.run_id).data.metrics["resumed_from_step"] == CKPT
    exported, expected = load_world_model(outcome.export_dir), load_world_model(two_workers[0].export_dir)
    for (name, a), b in zip(exported.state_dict().items(), expected.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=rel * 10, atol=rel, msg=name)


@pytest.mark.parametrize("overrides, field", [
    ({"model": {"latent_steps": 6}}, "model: the shards' latents are (T, L, H, W) = (3, 16, 4, 8)"),
    ({"model": {"cameras": 6}}, "model.cameras: 6"),
    ({"model": {"conditioning": {"clip_dim": 32}}}, "model.conditioning.clip_dim: 32"),
    ({"flow": {"p_scratch": 0.5}}, "p_scratch + p_context + p_inpaint: must sum to 1"),
    # the paper's statistics belong to the paper's tokenizer, not to the one that wrote these latents
    ({"flow": {"latent_mean": 0.0, "latent_std": 0.32}},
     "flow.latent_mean / flow.latent_std: the config normalises latents with mean 0, std 0.32, but the tokenizer "
     "that wrote"),
    ({"flow": {"latent_mean": 0.0}}, "latent_mean and latent_std: give both, or neither"),
    ({"data": {"scenario": "SCENARIO"}, "model": {"conditioning": {"scenario_dim": 4}}},
     "holds 8-dimensional embeddings, the model takes model.conditioning.scenario_dim = 4"),
    ({"data": {"scenario": "MISSING"}}, "data.scenario: "),
])
def test_bad_configuration_fails_before_any_work(latent_shards, scenario_table, tmp_path, capsys, overrides, field):
    import yaml

    from jobs.cli import main

    if overrides.get("data", {}).get("scenario"):
        overrides = deep_merge(overrides, {"data": {"scenario": {"SCENARIO": scenario_table,
                                                                 "MISSING": str(tmp_path / "no.parquet")}[
            overrides["data"]["scenario"]]}})
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(deep_merge({"model": {"latent_steps": 3}}, overrides)))
    code = main(["train", "world-model", "--shards", latent_shards, "--config", str(config),
                 "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and field in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "work")


def test_workers_that_leave_no_room_for_the_data_fail_at_once_naming_the_fields(ray_session, latent_shards, tmp_path,
                                                                                capsys):
    """Eight workers on this session's two CPUs: too many even at the smallest size, so the job stops before
    the MLflow run or Ray Train start, instead of waiting forever for CPUs."""
    from jobs.cli import main

    code = main(["train", "world-model", "--shards", latent_shards, "--set", "model.latent_steps=3",
                 "--set", "model.conditioning.max_agents=4", "--workers", "8", "--batch-size", "1",
                 "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and "workers.num_workers x workers.cpus_per_worker" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "work")


def test_latent_shards_without_measured_statistics_are_refused_naming_the_command(latent_shards, tmp_path, capsys):
    """Latent shards written before statistics were measured: the job says how to measure them."""
    import shutil

    from jobs.cli import main

    old = str(tmp_path / "old-latents")
    shutil.copytree(latent_shards, old, ignore=shutil.ignore_patterns("latent_stats.json"))
    code = main(["train", "world-model", "--shards", old, "--set", "model.latent_steps=3",
                 "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and f"gaia2 latents stats {old}" in err and "Traceback" not in err
