"""The world model's Ray Train job end to end on latent shards: training, logging by tau bucket and task,
validation against the constant-velocity baseline, export and registration, resume after a worker
failure at the same step and data position with the same losses in one MLflow run, and config errors."""

from __future__ import annotations

import os

import pytest

from gaia2.config.base import deep_merge
from gaia2.world_model.train_config import train_config

STEPS, CKPT = 6, 4


def _cfg(shards, **extra):
    overrides = {
        "model": {"frames": 3, "dim": 32, "heads": 2, "depth": 1, "max_agents": 4},
        "data": {"shards": shards, "batch_size": 2, "shuffle_buffer": 8, "val_samples": 4},
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


@pytest.fixture(scope="module")
def straight(ray_session, latent_shards, tmp_path_factory):
    from jobs.train_world_model import run

    work = str(tmp_path_factory.mktemp("wm-straight"))
    return run(_cfg(latent_shards), "wm-straight", work), work


def test_training_logs_exports_and_registers(straight):
    import mlflow

    from gaia2.world_model.export import load_world_model
    from jobs.tracking import tracking_uri

    outcome, work = straight
    losses = _history(work, outcome.run_id)
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(len(v) == 1 for v in losses.values())
    metrics = _run(work, outcome.run_id).data.metrics
    assert any(k.startswith("loss_tau_") for k in metrics) and any(k.startswith("loss_task_") for k in metrics)
    assert metrics["tokens_per_s"] > 0
    assert {"val_loss", "val_baseline_loss", "val_improvement"} <= set(outcome.metrics)
    assert load_world_model(outcome.export_dir).cfg.dim == 32
    mlflow.set_tracking_uri(tracking_uri(work))
    assert mlflow.pyfunc.load_model(f"models:/{outcome.model_name}@candidate") is not None


def test_worker_failure_resumes_with_the_same_losses(straight, latent_shards, tmp_path):
    from jobs.train_world_model import run

    reference = _history(straight[1], straight[0].run_id)
    work = str(tmp_path)
    outcome = run(_cfg(latent_shards), "wm-crashy", work, fail_at_step=CKPT + 1)
    losses = _history(work, outcome.run_id)
    assert len(losses[CKPT + 1]) == 2
    for step, values in losses.items():
        assert values == pytest.approx([reference[step][0]] * len(values), rel=1e-6, abs=1e-7), step
    metrics = _run(work, outcome.run_id).data.metrics
    assert metrics["resumed_from_step"] == CKPT and metrics["resumed_epoch"] == 0 and metrics["resumed_batch"] == CKPT


@pytest.mark.parametrize("overrides, field", [
    ({"model": {"frames": 6}}, "model: the shards' latents are (T, L, H, W) = (3, 16, 4, 8)"),
    ({"model": {"cameras": 6}}, "model.cameras: 6"),
    ({"model": {"clip_dim": 32}}, "model.clip_dim: 32"),
    ({"flow": {"p_scratch": 0.5}}, "p_scratch + p_context + p_inpaint: must sum to 1"),
])
def test_bad_configuration_fails_before_any_work(latent_shards, tmp_path, capsys, overrides, field):
    import yaml

    from jobs.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(deep_merge({"model": {"frames": 3}}, overrides)))
    code = main(["train", "world-model", "--shards", latent_shards, "--config", str(config),
                 "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and field in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "work")


def test_fsdp_sharded_checkpoints_resume_and_export(straight, latent_shards, tmp_path):
    """FSDP2 (one worker here, gloo on the CPU): sharded checkpoints written with torch.distributed.checkpoint,
    resumed after a worker failure with the losses of the unsharded run, and gathered for the export."""
    import torch

    from gaia2.world_model.export import load_world_model
    from jobs.train_world_model import run

    reference = _history(straight[1], straight[0].run_id)
    work = str(tmp_path)
    outcome = run(_cfg(latent_shards, workers={"strategy": "fsdp"}), "wm-fsdp", work, fail_at_step=CKPT + 1)
    assert not os.path.exists(os.path.join(outcome.checkpoint, "state.pt"))   # sharded, not one state file
    assert any(name.endswith(".distcp") for name in os.listdir(outcome.checkpoint))
    losses = _history(work, outcome.run_id)
    assert len(losses[CKPT + 1]) == 2
    for step, values in losses.items():
        assert values == pytest.approx([reference[step][0]] * len(values), rel=1e-5, abs=1e-6), step
    assert _run(work, outcome.run_id).data.metrics["resumed_from_step"] == CKPT
    exported, straight_model = load_world_model(outcome.export_dir), load_world_model(straight[0].export_dir)
    for (name, a), b in zip(exported.state_dict().items(), straight_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
