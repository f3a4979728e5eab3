"""Validation flow loss: the trainer's objective and numbers, by tau bucket and task, seeded, with an interval, and
lower for a trained (exported) model than at initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gaia2.evaluation.flow_loss import SampleLosses, sample_losses, summarise, validation_loss
from gaia2.world_model.export import load_world_model, save_world_model
from gaia2.world_model.trainer import TAU_EDGES, WorldModelTrainer
from tests.test_world_model_trainer import _batch, _cfg


@pytest.fixture(scope="module")
def setup():
    cfg = _cfg()
    return cfg, WorldModelTrainer(cfg), [_batch(cfg, seed=i, b=4) for i in range(3)]


def test_agrees_with_the_trainers_validation(setup):
    cfg, trainer, batches = setup
    for seed, limit in ((0, None), (5, 6)):
        want = trainer.evaluate(batches, max_samples=limit, seed=seed)
        got = validation_loss(trainer.ema.model, batches, cfg.flow, seed=seed, max_samples=limit)
        assert got["val_loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert got["samples"] == want["samples"] == (limit or 12)


def test_buckets_and_tasks_average_back_to_the_loss(setup):
    cfg, trainer, batches = setup
    samples = sample_losses(trainer.ema.model, batches, cfg.flow, seed=2)
    result = summarise(samples)
    flat = result.metrics()
    assert set(result.by_tau) <= {f"{a:.2f}_{b:.2f}" for a, b in zip(TAU_EDGES, TAU_EDGES[1:])}
    assert sum(result.tau_samples.values()) == sum(result.task_samples.values()) == result.n_samples == 12
    for losses, weights in ((result.by_tau, result.tau_elements), (result.by_task, result.task_elements)):
        mean = sum(losses[k] * weights[k] for k in losses) / sum(weights.values())
        assert mean == pytest.approx(result.value, rel=1e-9)
    assert flat["val_loss"] == result.value and flat["samples"] == 12.0
    assert all(flat[f"val_loss_tau_{k}"] == v for k, v in result.by_tau.items())
    assert all(flat[f"val_loss_task_{k}"] == v for k, v in result.by_task.items())
    # Per-sample values: each sample's own masked MSE; a bucket pools its samples' squared errors.
    k = next(iter(result.by_tau))
    lo, hi = (float(v) for v in k.split("_"))
    sel = (samples.tau >= lo) & (samples.tau < hi)
    assert result.by_tau[k] == pytest.approx(samples.sse[sel].sum() / samples.elements[sel].sum())
    # From scratch every sample has the same number of elements: the buckets' sample-weighted mean is the loss.
    scratch = summarise(sample_losses(trainer.ema.model, batches, cfg.flow, seed=2, task="scratch"))
    assert set(scratch.by_task) == {"scratch"}
    mean = sum(scratch.by_tau[k] * scratch.tau_samples[k] for k in scratch.by_tau) / scratch.n_samples
    assert mean == pytest.approx(scratch.value, rel=1e-9)


def test_deterministic_for_a_seed_with_an_interval(setup):
    cfg, trainer, batches = setup
    a = validation_loss(trainer.ema.model, batches, cfg.flow, seed=4)
    assert validation_loss(trainer.ema.model, batches, cfg.flow, seed=4) == a
    assert validation_loss(trainer.ema.model, batches, cfg.flow, seed=5)["val_loss"] != a["val_loss"]
    assert a["val_loss_low"] <= a["val_loss"] <= a["val_loss_high"] and a["val_loss_low"] < a["val_loss_high"]
    few = validation_loss(trainer.ema.model, batches, cfg.flow, seed=4, max_samples=5)
    assert "val_loss_low" not in few and few["samples"] == 5.0
    # Gathered from two workers and summarised once: the same as one pass.
    whole = sample_losses(trainer.ema.model, batches, cfg.flow, seed=4)
    parts = SampleLosses.concat([SampleLosses(*(getattr(whole, f)[s] for f in ("sse", "elements", "tau", "task")))
                                 for s in (slice(0, 7), slice(7, None))])
    assert summarise(parts, seed=4).metrics() == a
    with pytest.raises(ValueError, match="task must be one of"):
        sample_losses(trainer.ema.model, batches, cfg.flow, task="rollout")
    with pytest.raises(ValueError, match="no validation samples"):
        sample_losses(trainer.ema.model, [], cfg.flow)


def test_a_trained_model_has_a_lower_validation_loss(setup, tmp_path):
    cfg, _, batches = setup
    trainer = WorldModelTrainer(cfg)
    before = validation_loss(trainer.model, batches, cfg.flow, seed=1)["val_loss"]
    for _ in range(20):
        trainer.train_step(batches[0])
    path = save_world_model(str(tmp_path / "world_model"), trainer.model)
    trained = load_world_model(path)
    after = validation_loss(trained, batches, cfg.flow, seed=1)
    assert after["val_loss"] < 0.8 * before
    torch.testing.assert_close(torch.tensor(after["val_loss"]),
                               torch.tensor(validation_loss(trainer.model, batches, cfg.flow, seed=1)["val_loss"]))
    assert math.isfinite(after["val_loss_tau_" + next(k[len("val_loss_tau_"):] for k in after
                                                     if k.startswith("val_loss_tau_"))])
    assert np.isfinite(list(after.values())).all()
