"""Tokenizer losses: closed forms, hand examples, and the real loading paths of LPIPS and DINOv2 exercised
on tiny randomly initialised networks saved where the real ones would be (nothing is downloaded)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from gaia2.tokenizer.losses import (DinoDistillLoss, LossWeights, LPIPSLoss, TokenizerLoss, kl_divergence,
                                    lpips_backbone_cache_path)

DINO_HIDDEN = 32


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A torch hub cache holding a randomly initialised torchvision AlexNet under torchvision's file name."""
    from torchvision.models import alexnet

    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(0)
    state = alexnet(weights=None).state_dict()
    # LPIPS uses only alexnet.features; the 58M classifier weights are saved as stride-0 views of one
    # value so the file stays small (torch.save keeps views) yet loads strictly into the full AlexNet.
    for key in state:
        if key.startswith("classifier."):
            state[key] = torch.zeros(1).expand(state[key].shape)
    target = home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    return home


@pytest.fixture
def no_download(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a download was attempted: {url}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def dino_path(tmp_path_factory) -> str:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=DINO_HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       patch_size=4, image_size=32)
    path = tmp_path_factory.mktemp("dinov2")
    Dinov2Model(cfg).save_pretrained(path)
    return str(path)


def video(b=1, t=16, h=32, w=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def test_kl_closed_form_against_hand_values():
    mean = torch.tensor([1.0, 0.0, 0.5, 0.0])
    log_std = torch.tensor([0.0, math.log(2.0), -1.0, 0.0])
    # 0.5 (mu^2 + sigma^2 - 1) - log sigma, element by element
    hand = [0.5, 1.5 - math.log(2.0), 0.5 * (0.25 + math.exp(-2.0) - 1) + 1.0, 0.0]
    assert kl_divergence(mean, log_std).item() == pytest.approx(sum(hand) / 4, rel=1e-6)
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0


def test_l1_l2_weighting_on_hand_example():
    loss = TokenizerLoss(LossWeights(lpips=0, dino=0, kl=0), latent_dim=4)
    assert loss.lpips is None and loss.dino is None   # weight 0: not even constructed
    target = torch.zeros(1, 3, 1, 1, 2)
    recon = torch.tensor([1.0, -3.0, 0.0, 0.0, 0.0, 2.0]).view(1, 3, 1, 1, 2)
    latents = torch.zeros(1, 4, 1, 1, 1)
    total, parts = loss(target, recon, latents, latents, latents)
    assert set(parts) == {"l1", "l2"}
    assert parts["l1"].item() == pytest.approx(6 / 6)
    assert parts["l2"].item() == pytest.approx(14 / 6)
    assert total.item() == pytest.approx(0.2 * 1.0 + 2.0 * 14 / 6)


def test_lpips_from_tmp_cache(torch_home, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    assert lpips_backbone_cache_path("alex") == torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    loss = LPIPSLoss("alex")
    x = video(b=2, t=2)
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    recon = video(b=2, t=2, seed=1).requires_grad_()
    value = loss(x, recon)
    assert value.item() > 1e-4
    value.backward()
    assert recon.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.frozen.training   # dropout in lpips' linear layers stays off
    assert loss(x, recon).item() == pytest.approx(value.item())


def test_lpips_missing_cache_names_the_path(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(expected))):
        LPIPSLoss("alex")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "hub" / "checkpoints" / "vgg16-"))):
        LPIPSLoss("vgg")


def test_dino_loss_zero_when_projection_matches_target(dino_path):
    loss = DinoDistillLoss(dino_path, latent_dim=DINO_HIDDEN)
    with torch.no_grad():
        loss.proj.weight.copy_(torch.eye(DINO_HIDDEN))
        loss.proj.bias.zero_()
    x = video(b=2, t=16)
    target = loss.target_features(x, (2, 8, 8))   # (B, D, T', H', W')
    assert target.shape == (2, DINO_HIDDEN, 2, 8, 8)
    assert loss(x, target).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(x, -target).item() == pytest.approx(2.0, abs=1e-5)


def test_dino_target_is_linear_in_time_and_bilinear_in_space(dino_path):
    loss = DinoDistillLoss(dino_path, latent_dim=4)
    x = video(b=1, t=16)
    frames = x[0].permute(1, 0, 2, 3)   # (T, 3, H, W)
    per_frame = loss.frame_features(frames)   # (T, D, 8, 8): 32 / patch 4
    target = loss.target_features(x, (2, 8, 8))
    # 8 frames per latent: latent i sits between frames 8i + 3 and 8i + 4.
    torch.testing.assert_close(target[0, :, 0], 0.5 * (per_frame[3] + per_frame[4]))
    torch.testing.assert_close(target[0, :, 1], 0.5 * (per_frame[11] + per_frame[12]))
    # Reference: trilinear interpolation of all frames' features to a coarser latent grid.
    reference = F.interpolate(per_frame.permute(1, 0, 2, 3)[None], size=(2, 4, 4), mode="trilinear",
                              align_corners=False)
    torch.testing.assert_close(loss.target_features(x, (2, 4, 4)), reference)
    # Frames not a multiple of the patch size are resized to the nearest multiple (30 -> 32).
    assert loss.frame_features(frames[:2, :, :30, :30]).shape == (2, DINO_HIDDEN, 8, 8)


def test_dino_gradient_reaches_projection_only(dino_path):
    loss = DinoDistillLoss(dino_path, latent_dim=4)
    latents = torch.randn(1, 4, 2, 8, 8, requires_grad=True)
    loss(video(t=16), latents).backward()
    assert loss.proj.weight.grad.abs().sum() > 0 and latents.grad.abs().sum() > 0
    assert loss.trainable_parameters() == list(loss.proj.parameters())
    assert all(p.grad is None and not p.requires_grad for p in loss.frozen.parameters())


def test_missing_dino_path_is_a_config_error(tmp_path):
    with pytest.raises(ValidationError, match="dino_path"):
        LossWeights()
    with pytest.raises(ValidationError, match="dino_path"):
        LossWeights(dino=0.1, dino_path=None)
    assert LossWeights(dino=0).dino_path is None
    with pytest.raises(FileNotFoundError, match="dino_path"):
        DinoDistillLoss(str(tmp_path / "absent"), latent_dim=4)


def test_total_is_weighted_sum_of_parts(torch_home, dino_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    weights = LossWeights(dino_path=dino_path)
    loss = TokenizerLoss(weights, latent_dim=4)
    x = video(b=1, t=16)
    recon = video(b=1, t=16, seed=2).requires_grad_()
    mean = torch.randn(1, 4, 2, 4, 4, requires_grad=True)
    log_std = torch.full_like(mean, -1.0)
    latents = mean + log_std.exp() * torch.randn_like(mean)
    total, parts = loss(x, recon, mean, log_std, latents)
    assert set(parts) == {"l1", "l2", "lpips", "dino", "kl"}
    expected = sum(getattr(weights, name) * value for name, value in parts.items())
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(value.item() > 0 for value in parts.values())
    total.backward()
    assert recon.grad.abs().sum() > 0 and mean.grad.abs().sum() > 0
    assert [p for p in loss.parameters() if p.requires_grad] == loss.trainable_parameters()
    assert set(loss.trainable_state_dict()) == {"dino.proj.weight", "dino.proj.bias"}
