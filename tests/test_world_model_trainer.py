"""The world model's training step without Ray: learning, exact resume, schedule, evaluation and its baseline."""

from __future__ import annotations

import pytest
import torch

from gaia2.optim import warmup_cosine_lr
from gaia2.world_model.inputs import example_inputs
from gaia2.world_model.train_config import train_config
from gaia2.world_model.trainer import WorldModelTrainer, present_relative
from tests.helpers import through_a_checkpoint

MODEL = {"dim": 32, "heads": 2, "depth": 1, "cameras": 2, "height": 2, "width": 3, "latent_steps": 3, "latent_dim": 4,
         "conditioning": {"max_cameras": 3, "max_agents": 3, "clip_dim": 8, "scenario_dim": 8}}


def _cfg(**extra):
    from gaia2.config.base import deep_merge

    return train_config("tiny", overrides=deep_merge({"model": MODEL, "schedule": {"steps": 20},
                                                      "optim": {"warmup_steps": 2},
                                                      "flow": {"latent_mean": 0.0, "latent_std": 0.32}}, extra))


def _batch(cfg, seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    inp = example_inputs(cfg.model, batch=b, generator=g, scenario=False)
    # Latents with structure to learn: a per-channel offset plus a smooth ramp over time.
    ramp = torch.linspace(-1, 1, cfg.model.latent_steps).view(1, -1, 1, 1, 1, 1)
    latents = 0.3 * ramp + 0.1 * torch.arange(cfg.model.latent_dim).view(1, 1, 1, -1, 1, 1) + 0.02 * inp["x"]
    return {"latents": latents, "timestamps": torch.arange(cfg.model.latent_steps).float().expand(b, -1) * 0.27,
            **{k: v for k, v in inp["cond"].items()}, **inp["camera"]}


def test_training_reduces_the_flow_loss():
    cfg = _cfg(schedule={"steps": 60})
    trainer = WorldModelTrainer(cfg)
    batch = _batch(cfg)
    before = trainer.evaluate([batch])["loss"]
    for _ in range(60):
        trainer.train_step(batch)
    trainer.ema.model.load_state_dict(trainer.model.state_dict())   # evaluate the trained weights themselves
    after = trainer.evaluate([batch])
    assert after["loss"] < 0.8 * before
    assert after["baseline_loss"] > 0 and after["improvement"] == pytest.approx(1 - after["loss"] / after["baseline_loss"])


def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    cfg = _cfg()
    batches = [_batch(cfg, seed=i) for i in range(6)]
    straight = WorldModelTrainer(cfg)
    losses = [float(straight.train_step(b)["loss"]) for b in batches]
    first = WorldModelTrainer(cfg)
    for b in batches[:3]:
        first.train_step(b)
    resumed = through_a_checkpoint(first, WorldModelTrainer(cfg), tmp_path)
    assert [float(resumed.train_step(b)["loss"]) for b in batches[3:]] == losses[3:]
    for a, b in zip(straight.ema.model.state_dict().values(), resumed.ema.model.state_dict().values()):
        assert torch.equal(a, b)


def test_learning_rate_is_warmup_then_cosine():
    cfg = _cfg(schedule={"steps": 6}, optim={"lr": 1e-3, "final_lr": 1e-4, "warmup_steps": 2})
    trainer = WorldModelTrainer(cfg)
    lrs = [trainer.train_step(_batch(cfg, seed=i))["lr"] for i in range(6)]
    assert lrs == [warmup_cosine_lr(s, 6, 1e-3, 2, 1e-4) for s in range(6)]


def test_loss_is_logged_by_tau_bucket_and_task():
    cfg = _cfg()
    out = WorldModelTrainer(cfg).train_step(_batch(cfg, b=4))
    assert out["tau_count"].sum() == 4 and out["task_count"].sum() == 4
    assert out["tau_sum"].shape == (4,) and out["task_sum"].shape == (3,)


def test_baseline_is_the_best_constant_velocity():
    """The per-channel mean target is the L2-optimal constant; the reported baseline equals its loss."""
    cfg = _cfg()
    trainer = WorldModelTrainer(cfg)
    batch = _batch(cfg, b=3)
    got = trainer.evaluate([batch])["baseline_loss"]
    # Recompute with the same draws: evaluate() seeds its generator with 0.
    rng = torch.Generator().manual_seed(0)
    _, _, _, _, target, mask = trainer._objective(trainer.ema.model.eval(), batch, rng, dropout=False)
    m = mask.expand_as(target)
    per_channel = []
    for c in range(target.shape[3]):
        per_channel.append(target[:, :, :, c][m[:, :, :, c]])
    means = torch.stack([v.mean() for v in per_channel])
    want = sum(((v - mu) ** 2).sum() for v, mu in zip(per_channel, means)) / sum(len(v) for v in per_channel)
    assert got == pytest.approx(float(want), rel=1e-6)
    worse = sum(((v - mu - 0.1) ** 2).sum() for v, mu in zip(per_channel, means)) / sum(len(v) for v in per_channel)
    assert float(worse) > got


def test_timestamps_are_relative_to_the_last_context_step():
    ts = torch.tensor([[0.0, 0.4, 0.8], [0.0, 0.4, 0.8]])
    rel = present_relative(ts, torch.tensor([0, 2]))
    torch.testing.assert_close(rel, torch.tensor([[0.0, 0.4, 0.8], [-0.4, 0.0, 0.4]]))


def test_per_camera_timestamps_keep_their_offsets_around_the_present():
    grid = torch.tensor([[0.0, 0.4, 0.8]]).repeat(2, 1)                       # (B, T)
    offsets = torch.tensor([[0.0, 0.02], [0.01, 0.03]])                        # (B, N) trigger offsets
    ts = grid[:, :, None] + offsets[:, None, :]                                # (B, T, N)
    rel = present_relative(ts, torch.tensor([0, 2]))
    # the present is the last context step's time averaged over the cameras; each camera keeps its offset
    want = grid - grid.gather(1, torch.tensor([[0], [1]]))       # two context steps: step 1 is the present
    want = want[:, :, None] + (offsets - offsets.mean(1, keepdim=True))[:, None, :]
    torch.testing.assert_close(rel, want)


def test_per_channel_latent_statistics_normalise_each_channel():
    cfg = _cfg()
    mean = [0.5 * c for c in range(cfg.model.latent_dim)]
    std = [1.0 + c for c in range(cfg.model.latent_dim)]
    trainer = WorldModelTrainer(_cfg(flow={"latent_mean": mean, "latent_std": std}))
    batch = _batch(cfg, b=2)
    latents = torch.tensor(mean).view(1, 1, 1, -1, 1, 1) + torch.tensor(std).view(1, 1, 1, -1, 1, 1) * torch.randn(
        batch["latents"].shape, generator=torch.Generator().manual_seed(0))
    batch["latents"] = latents
    rng = torch.Generator().manual_seed(1)
    _, _, _, _, target, mask = trainer._objective(trainer.model.eval(), batch, rng, dropout=False)
    # target = x_normalised - eps: recover x_normalised from the same noise draw
    rng = torch.Generator().manual_seed(1)
    eps = torch.randn(latents.shape, generator=rng)
    x = target + eps
    torch.testing.assert_close(x, (latents - torch.tensor(mean).view(1, 1, 1, -1, 1, 1))
                               / torch.tensor(std).view(1, 1, 1, -1, 1, 1))
    with pytest.raises(ValueError, match="latent_mean"):
        WorldModelTrainer(_cfg(flow={"latent_mean": None, "latent_std": None}))
    from gaia2.config.base import ConfigError
    with pytest.raises(ConfigError, match="flow.latent_mean: 3 channels"):
        _cfg(flow={"latent_mean": [0.0] * 3, "latent_std": [1.0] * 3})
