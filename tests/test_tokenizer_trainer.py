"""The tokenizer's training step without Ray: learning, exact resume, the GAN stage, schedules, evaluation."""

from __future__ import annotations

import copy

import pytest
import torch

from gaia2.optim import warmup_cooldown_lr
from gaia2.tokenizer.train_config import train_config
from gaia2.tokenizer.trainer import TokenizerTrainer
from tests.helpers import through_a_checkpoint

NO_PRETRAINED = {"loss": {"dino": 0, "lpips": 0}}


def _cfg(**overrides):
    from gaia2.config.base import deep_merge

    base = deep_merge(NO_PRETRAINED, {"model": {"dim": 32, "heads": 2}, "data": {"batch_size": 2},
                                      "schedule": {"steps": 6}, "gan": {"steps": 0}})
    return train_config("tiny", overrides=deep_merge(base, overrides))


def _clips(n=2, t=32, seed=0):
    """Smooth moving colour blobs (learnable), uint8 (n, t, 32, 64, 3)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 64), indexing="ij")
    out = []
    for _ in range(n):
        colour = torch.rand(3, generator=g)
        cx, cy, v = torch.rand(3, generator=g)
        frames = []
        for k in range(t):
            blob = torch.exp(-(((x - cx - 0.01 * v * k) ** 2) + (y - cy) ** 2) / 0.05)
            frames.append(blob[..., None] * colour * 255)
        out.append(torch.stack(frames))
    return torch.stack(out).round().clamp(0, 255).to(torch.uint8)


def test_training_reduces_the_loss_on_a_fixed_batch():
    trainer = TokenizerTrainer(_cfg(schedule={"steps": 40}, optim={"warmup_steps": 2}))
    clips = _clips(t=24)
    first = float(trainer.train_step(clips)["loss"])
    for _ in range(38):
        last = float(trainer.train_step(clips)["loss"])
    assert last < 0.5 * first


def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    cfg = _cfg()
    batches = [_clips(seed=i) for i in range(6)]
    straight = TokenizerTrainer(cfg)
    losses = [float(straight.train_step(b)["loss"]) for b in batches]

    first = TokenizerTrainer(cfg)
    for b in batches[:3]:
        first.train_step(b)
    resumed = through_a_checkpoint(first, TokenizerTrainer(cfg), tmp_path)
    assert resumed.step == 3
    again = [float(resumed.train_step(b)["loss"]) for b in batches[3:]]
    assert again == losses[3:]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.model.state_dict().values(), resumed.ema.model.state_dict().values()):
        assert torch.equal(a, b)


def test_learning_rate_follows_the_warmup_cooldown_schedule():
    cfg = _cfg(schedule={"steps": 6}, optim={"lr": 1e-3, "final_lr": 1e-4, "warmup_steps": 2, "cooldown_steps": 2})
    trainer = TokenizerTrainer(cfg)
    lrs = [trainer.train_step(_clips(seed=i))["lr"] for i in range(6)]
    assert lrs == [warmup_cooldown_lr(s, 6, 1e-3, 2, 2, 1e-4) for s in range(6)]
    assert trainer.optimizer.param_groups[0]["lr"] == lrs[-1]


def test_weight_decay_skips_biases_and_norms():
    trainer = TokenizerTrainer(_cfg())
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    n = sum(p.numel() for p in trainer.model.parameters())
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == n


def test_gan_stage_freezes_the_encoder_and_trains_decoder_and_discriminator(tmp_path):
    cfg = _cfg(schedule={"steps": 2}, gan={"steps": 3, "lr": 1e-3, "disc_lr": 1e-3})
    trainer = TokenizerTrainer(cfg)
    for i in range(2):
        out = trainer.train_step(_clips(seed=i))
        assert "gan_g" not in out
    assert trainer.stage == "gan"
    encoder = copy.deepcopy(trainer.model.encoder.state_dict())
    decoder = copy.deepcopy(trainer.model.decoder.state_dict())
    out = trainer.train_step(_clips(seed=2))
    assert {"gan_g", "gan_d", "l1", "l2"} <= set(out) and "kl" not in out
    assert out["lr"] == 1e-3
    for k, v in trainer.model.encoder.state_dict().items():
        assert torch.equal(v, encoder[k]), k
    assert any(not torch.equal(v, decoder[k]) for k, v in trainer.model.decoder.state_dict().items())
    disc = copy.deepcopy(trainer.disc.state_dict())

    # Resume inside the GAN stage: discriminator and both optimisers come back.
    resumed = through_a_checkpoint(trainer, TokenizerTrainer(cfg), tmp_path)
    straight = float(trainer.train_step(_clips(seed=3))["loss"])
    assert resumed.stage == "gan"
    for k, v in resumed.disc.state_dict().items():
        assert torch.equal(v, disc[k]), k
    assert float(resumed.train_step(_clips(seed=3))["loss"]) == straight
    assert any(not torch.equal(v, disc[k]) for k, v in trainer.disc.state_dict().items())


def test_crops_are_contiguous_windows_of_the_clip():
    trainer = TokenizerTrainer(_cfg())
    t = torch.arange(40, dtype=torch.uint8).view(1, 40, 1, 1, 1).expand(3, 40, 2, 2, 3)
    crops = trainer.crop(t)
    assert crops.shape == (3, 24, 2, 2, 3)
    for c in crops:
        start = int(c[0, 0, 0, 0])
        assert torch.equal(c[:, 0, 0, 0], torch.arange(start, start + 24, dtype=torch.uint8))
    with pytest.raises(ValueError, match="T >= 24"):
        trainer.crop(t[:, :16])


def test_evaluation_uses_the_ema_model_and_rolls_over_long_clips():
    trainer = TokenizerTrainer(_cfg())
    clips = _clips(n=3, t=44)   # 44 frames -> 40 evaluated (5 latents, rolling window of 3)
    video, recon = trainer.reconstruct(clips)
    assert video.shape == recon.shape == (3, 3, 40, 32, 64)
    m = trainer.evaluate([clips[:2], clips[2:]]).compute()
    assert m["clips"] == 3 and m["gain_db"] == pytest.approx(m["psnr"] - m["baseline_psnr"])
    assert trainer.evaluate([clips[:2], clips[2:]], max_clips=2).compute()["clips"] == 2


def test_pretrained_loss_terms_train_their_projection(tmp_path):
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone

    save_random_lpips_backbone(str(tmp_path / "torch"))
    dino = save_random_dinov2(str(tmp_path / "dino"))
    cfg = _cfg(loss={"dino": 0.1, "lpips": 0.1, "dino_path": dino, "lpips_torch_home": str(tmp_path / "torch")})
    trainer = TokenizerTrainer(cfg)
    proj = trainer.loss.dino.proj.weight.detach().clone()
    out = trainer.train_step(_clips())
    assert {"lpips", "dino", "kl", "l1", "l2"} <= set(out)
    assert not torch.equal(proj, trainer.loss.dino.proj.weight)
    assert set(trainer.stateful()["model"].state_dict()) >= {"dino_proj.weight", "dino_proj.bias"}
    resumed = through_a_checkpoint(trainer, TokenizerTrainer(cfg), tmp_path)
    assert torch.equal(resumed.loss.dino.proj.weight, trainer.loss.dino.proj.weight)
    m = trainer.evaluate([_clips()]).compute()
    assert "lpips" in m
