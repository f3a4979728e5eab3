"""The tokenizer's Ray Train job end to end: training from shards, worker failure and job restart resume
at the same step and data position with the same losses, one MLflow run, export and registration,
and configuration errors before any work."""

from __future__ import annotations

import os

import pytest

from gaia2.config.base import ConfigError, deep_merge
from gaia2.tokenizer.train_config import train_config

STEPS, GAN_STEPS, CKPT = 6, 2, 4


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone

    root = tmp_path_factory.mktemp("pretrained")
    save_random_lpips_backbone(str(root / "torch"))
    return {"dino_path": save_random_dinov2(str(root / "dino")), "lpips_torch_home": str(root / "torch")}


def _cfg(shards, standins, **extra):
    overrides = {
        "model": {"dim": 32, "heads": 2},
        "loss": standins,
        "data": {"shards": shards, "batch_size": 2, "shuffle_buffer": 8, "val_samples": 4},
        "schedule": {"steps": STEPS, "log_every": 1, "val_every": 100, "checkpoint_every": CKPT, "preview_clips": 2},
        "gan": {"steps": GAN_STEPS},
        "workers": {"max_failures": 1},
    }
    return train_config("tiny", overrides=deep_merge(overrides, extra))


def _run(cfg, name, workdir, fail_at_step=None):
    from jobs.specs import SPECS
    from jobs.train_driver import run

    return run(SPECS["tokenizer"], cfg.model_copy(update={"job": cfg.job.model_copy(update={
        "name": name, "workdir": workdir, "fail_at_step": fail_at_step})}))


def _losses(workdir, run_id):
    """step -> every logged value of ``loss`` at that step (a replayed step logs twice)."""
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri

    history = MlflowClient(tracking_uri(workdir)).get_metric_history(run_id, "loss")
    out: dict[int, list[float]] = {}
    for m in history:
        out.setdefault(m.step, []).append(m.value)
    return out


def _runs(workdir, name):
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri

    client = MlflowClient(tracking_uri(workdir))
    exp = client.get_experiment_by_name("tokenizer")
    return [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == name]


@pytest.fixture(scope="module")
def straight(ray_session, tokenizer_shards, standins, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("straight"))
    return _run(_cfg(tokenizer_shards, standins), "straight", work), work


def test_uninterrupted_run_trains_exports_and_registers(straight):
    import mlflow

    from gaia2.tokenizer.export import load_tokenizer
    from jobs.registry import resolve_model_uri
    from jobs.tracking import tracking_uri

    outcome, work = straight
    losses = _losses(work, outcome.run_id)
    assert sorted(losses) == list(range(1, STEPS + GAN_STEPS + 1))
    assert all(len(v) == 1 for v in losses.values())
    assert {"val_psnr", "val_ssim", "val_lpips", "val_baseline_psnr"} <= set(outcome.metrics)
    run = _runs(work, "straight")
    assert len(run) == 1 and run[0].data.params["schedule.steps"] == str(STEPS)
    assert run[0].data.metrics["gan_d"] > 0   # the GAN stage ran
    model = load_tokenizer(outcome.export_dir)
    assert model.cfg.dim == 32
    mlflow.set_tracking_uri(tracking_uri(work))
    registered = resolve_model_uri(f"models:/{outcome.model_name}@candidate")
    assert load_tokenizer(registered).cfg == model.cfg
    artifacts = mlflow.artifacts.list_artifacts(run_id=outcome.run_id, artifact_path="reconstructions")
    assert [a.path for a in artifacts] == [f"reconstructions/step-{STEPS + GAN_STEPS:08d}.mp4"]


def test_worker_failure_resumes_at_the_checkpoint_with_the_same_losses(straight, tokenizer_shards, standins,
                                                                        tmp_path):
    reference = _losses(straight[1], straight[0].run_id)
    work = str(tmp_path)
    outcome = _run(_cfg(tokenizer_shards, standins), "crashy", work, fail_at_step=CKPT + 1)
    losses = _losses(work, outcome.run_id)
    assert len(losses[CKPT + 1]) == 2   # logged before the crash and again after the replay
    for step, values in losses.items():
        assert values == pytest.approx([reference[step][0]] * len(values), rel=1e-6, abs=1e-7), step
    runs = _runs(work, "crashy")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert metrics["resumed_from_step"] == CKPT
    # Data position: CKPT batches of epoch 0 had been consumed (the split is longer than CKPT batches).
    assert metrics["resumed_epoch"] == 0 and metrics["resumed_batch"] == CKPT


def test_restarting_the_job_under_its_name_resumes_it(straight, tokenizer_shards, standins, tmp_path):
    reference = _losses(straight[1], straight[0].run_id)
    work = str(tmp_path)
    cfg = _cfg(tokenizer_shards, standins, workers={"max_failures": 0})
    with pytest.raises(Exception):
        _run(cfg, "restarted", work, fail_at_step=CKPT + 1)   # no retries left: the job fails
    outcome = _run(cfg, "restarted", work)                    # the same name: resumes from step CKPT
    losses = _losses(work, outcome.run_id)
    for step, values in losses.items():
        assert values == pytest.approx([reference[step][0]] * len(values), rel=1e-6, abs=1e-7), step
    assert sorted(losses) == list(range(1, STEPS + GAN_STEPS + 1))
    runs = _runs(work, "restarted")
    assert len(runs) == 1 and runs[0].data.metrics["resumed_from_step"] == CKPT
    assert os.path.isfile(os.path.join(outcome.export_dir, "model.safetensors"))


@pytest.mark.parametrize("overrides, field", [
    ({"model": {"frames": 20}}, "frames: 20 is not a multiple of the temporal factor 8"),
    ({"model": {"height": 36}}, "height: 36 is not divisible by the spatial factor 8"),
    ({"loss": {"dino_path": None}}, "dino_path: required when the dino weight is non-zero"),
    ({"model": {"frames": 32}}, "model.frames: 32 frames per clip, but the shards' windows have only 24"),
    ({"loss": {"lpips_torch_home": "/nonexistent"}}, "loss.lpips_torch_home"),
    ({"loss": {"dino_path": "/nonexistent"}}, "loss.dino_path"),
    ({"workers": {"strategy": "fsdp"}}, "workers.strategy: the tokenizer trains with ddp"),
])
def test_bad_configuration_fails_before_any_work_naming_the_field(tokenizer_shards, standins, tmp_path, capsys,
                                                                   overrides, field):
    from jobs.cli import main

    config = tmp_path / "bad.yaml"
    import yaml

    config.write_text(yaml.safe_dump(deep_merge({"loss": standins}, overrides)))
    code = main(["train", "tokenizer", "--shards", tokenizer_shards, "--config", str(config),
                 "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and field in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "work")   # nothing started


def test_unknown_preset_and_missing_shards_are_config_errors(tmp_path, capsys):
    from jobs.cli import main

    assert main(["train", "tokenizer", "--preset", "huge", "--shards", str(tmp_path)]) == 2
    assert "preset: unknown preset 'huge'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.shards: "):
        from jobs.specs import SPECS

        SPECS["tokenizer"].preflight(train_config("tiny", overrides={"loss": {"dino": 0, "lpips": 0}, "data": {"shards": str(tmp_path)}}))
