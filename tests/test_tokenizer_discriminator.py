"""3-D GAN discriminator: shapes, blur pooling, spectral norm, softplus losses, learnability."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gaia2.config.base import ConfigError
from gaia2.tokenizer.discriminator import (
    BlurPool3d,
    Discriminator3D,
    blur_kernel_3d,
    discriminator_config,
    discriminator_loss,
    generator_adversarial_loss,
    paper,
    tiny,
)
from gaia2.tokenizer import train_config


def noise_video(b: int = 2, t: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def smooth_video(b: int = 2, t: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Low-frequency moving sinusoids in [-1, 1]: random phase and direction per clip and channel."""
    g = torch.Generator().manual_seed(seed)
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    freq = torch.rand(b, 3, 3, generator=g) * 0.3 + 0.05          # (B, 3 channels, 3 axes), rad/pixel
    phase = torch.rand(b, 3, generator=g) * 2 * math.pi
    arg = (freq[..., 0, None, None, None] * tt + freq[..., 1, None, None, None] * yy
           + freq[..., 2, None, None, None] * xx + phase[..., None, None, None])
    return torch.sin(arg)


def test_paper_gan_settings_and_presets() -> None:
    gan = train_config.paper().gan   # the paper's fine-tune: weight 0.1, discriminator lr 1e-5 (section 4)
    assert gan.weight == 0.1 and gan.disc_lr == 1e-5
    p = paper()
    assert p.base_channels == 64 and p.multipliers == (2, 4, 8, 8) and p.leaky_slope == 0.2
    assert p.stage_channels == (128, 256, 512, 512) and p.downsample_factor == 16
    assert tiny().multipliers == p.multipliers
    with pytest.raises(ConfigError, match="multipliers"):
        discriminator_config("tiny", {"multipliers": []})
    with pytest.raises(ConfigError, match="multipliers"):
        discriminator_config("tiny", {"multipliers": [2, 0]})
    with pytest.raises(ConfigError, match="base_chanels"):
        discriminator_config("tiny", {"base_chanels": 8})


def test_output_shape_and_gradient() -> None:
    torch.manual_seed(0)
    disc = Discriminator3D(tiny()).train()
    x = noise_video().requires_grad_(True)
    logits = disc(x)
    # 8 frames: 8 -> 4 -> 2 -> 1 -> 1 (a length-1 time axis is padded, not dropped); 32 -> 2 in space.
    assert logits.shape == (2, 1, 1, 2, 2)
    generator_adversarial_loss(logits).backward()
    # The generator's loss must reach the video (it trains the decoder through the discriminator).
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in disc.named_parameters():
        assert p.grad is not None, name
    # Odd lengths round up at every stage: 5 -> 3 -> 2 -> 1 -> 1, 20 -> 10 -> 5 -> 3 -> 2.
    assert disc(noise_video(1, 5, 20, 36)).shape == (1, 1, 1, 2, 3)


def test_rejects_bad_input() -> None:
    disc = Discriminator3D(tiny())
    with pytest.raises(ValueError, match=r"expected video \(B, 3, T, H, W\)"):
        disc(torch.zeros(1, 4, 8, 16, 16))
    with pytest.raises(ValueError, match="expected video"):
        disc(torch.zeros(3, 8, 16, 16))


def test_blur_kernel() -> None:
    k = blur_kernel_3d()
    assert k.shape == (3, 3, 3)
    torch.testing.assert_close(k.sum(), torch.tensor(1.0))
    for dim in range(3):
        torch.testing.assert_close(k, k.flip(dim))
    torch.testing.assert_close(k, k.permute(1, 0, 2))
    torch.testing.assert_close(k, k.permute(2, 1, 0))
    # Closed form: centre 2*2*2/64, corner 1/64.
    assert k[1, 1, 1].item() == pytest.approx(8 / 64) and k[0, 0, 0].item() == pytest.approx(1 / 64)


def test_blur_pool_constant_and_reference() -> None:
    pool = BlurPool3d(2)
    const = torch.full((1, 2, 5, 7, 6), 0.37)
    out = pool(const)
    assert out.shape == (1, 2, 3, 4, 3)
    torch.testing.assert_close(out, torch.full_like(out, 0.37))
    # A length-1 time axis stays length 1.
    assert pool(torch.zeros(1, 2, 1, 4, 4)).shape == (1, 2, 1, 2, 2)
    # Reference values. Output i is centred on input 2i. An impulse on an even site (2, 2, 2) lands
    # on output (1, 1, 1) alone with the centre weight 8/64; one on an odd site (3, 3, 3) is split
    # equally between the 8 outputs {1, 2}^3 with the corner weight 1/64.
    x = torch.zeros(1, 2, 7, 7, 7)
    x[0, 1, 2, 2, 2] = 1.0
    out = pool(x)
    assert out[0, 1, 1, 1, 1].item() == pytest.approx(8 / 64)
    assert out[0, 1].sum().item() == pytest.approx(8 / 64)
    assert out[0, 0].abs().sum().item() == 0.0                  # depthwise: channels do not mix
    x = torch.zeros(1, 2, 7, 7, 7)
    x[0, 0, 3, 3, 3] = 1.0
    expected = torch.zeros(4, 4, 4)
    expected[1:3, 1:3, 1:3] = 1 / 64
    torch.testing.assert_close(pool(x)[0, 0], expected)
    # Anti-aliasing: the Nyquist checkerboard (+1/-1 every sample) is removed entirely in the interior.
    idx = torch.arange(9)
    checker = (-1.0) ** (idx[:, None, None] + idx[None, :, None] + idx[None, None, :])
    out = pool(checker[None, None].expand(1, 2, 9, 9, 9).contiguous())
    torch.testing.assert_close(out[..., 1:-1, 1:-1, 1:-1], torch.zeros_like(out[..., 1:-1, 1:-1, 1:-1]))


def spectral_convs(disc: nn.Module) -> list[tuple[str, nn.Conv3d]]:
    return [(n, m) for n, m in disc.named_modules() if isinstance(m, nn.Conv3d)]


def test_spectral_norm_on_every_conv() -> None:
    torch.manual_seed(0)
    disc = Discriminator3D(tiny()).train()
    convs = spectral_convs(disc)
    # stem + (conv, skip) per stage + head
    assert len(convs) == 1 + 2 * len(tiny().multipliers) + 1
    for name, conv in convs:
        assert parametrize.is_parametrized(conv, "weight"), name
        assert type(conv.parametrizations.weight[0]).__name__ == "_SpectralNorm", name
    x = noise_video()
    with torch.no_grad():
        # One power iteration per training forward, refining the 15 done at registration.
        for _ in range(30):
            disc(x)
    disc.eval()   # reading .weight in eval mode uses the stored power-iteration vectors without updating
    for name, conv in convs:
        w = conv.weight.detach().reshape(conv.out_channels, -1)
        sigma = torch.linalg.matrix_norm(w, ord=2).item()
        assert sigma == pytest.approx(1.0, abs=2e-2), name
        # The raw (unnormalised) weight is not already unit-norm: the normalisation is doing the work.
        raw = conv.parametrizations.weight.original.detach().reshape(conv.out_channels, -1)
        assert abs(torch.linalg.matrix_norm(raw, ord=2).item() - 1.0) > 0.05, name


def test_losses_closed_forms() -> None:
    zeros = torch.zeros(2, 1, 1, 2, 2)
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert generator_adversarial_loss(zeros).item() == pytest.approx(math.log(2))
    real = torch.tensor([[-1.5, 0.3], [2.0, 4.0]])
    fake = torch.tensor([[0.7, -2.0, 1.1]])
    # softplus(-x) = -log sigmoid(x), softplus(x) = -log(1 - sigmoid(x)).
    expected = (-torch.log(torch.sigmoid(real))).mean() + (-torch.log(1 - torch.sigmoid(fake))).mean()
    torch.testing.assert_close(discriminator_loss(real, fake), expected)
    torch.testing.assert_close(generator_adversarial_loss(fake), (-torch.log(torch.sigmoid(fake))).mean())
    # softplus(x) - softplus(-x) = x: swapping which side a logit is on shifts the loss by its mean.
    torch.testing.assert_close(discriminator_loss(fake, real) - discriminator_loss(real, fake),
                               real.mean() - fake.mean())
    # A confident, correct discriminator has loss near 0; the generator then has a large loss.
    big = torch.full((4,), 30.0)
    assert discriminator_loss(big, -big).item() < 1e-10
    assert generator_adversarial_loss(-big).item() == pytest.approx(30.0, rel=1e-6)


def test_discriminator_learns_smooth_vs_noise() -> None:
    torch.manual_seed(0)
    disc = Discriminator3D(tiny()).train()
    # Faster than the paper preset's gan.disc_lr (1e-5) so that a handful of steps is enough.
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    eval_real, eval_fake = smooth_video(seed=100), noise_video(seed=100)

    def held_out_loss() -> float:
        disc.eval()
        with torch.no_grad():
            loss = discriminator_loss(disc(eval_real), disc(eval_fake)).item()
        disc.train()
        return loss

    before = held_out_loss()
    for step in range(15):
        loss = discriminator_loss(disc(smooth_video(seed=step)), disc(noise_video(seed=step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert before == pytest.approx(2 * math.log(2), abs=0.3)    # untrained: near chance
    assert after < 0.5 * before
    disc.eval()
    with torch.no_grad():
        assert disc(eval_real).mean() > disc(eval_fake).mean()


def test_paper_parameter_count() -> None:
    with torch.device("meta"):
        disc = Discriminator3D(paper())
    n = sum(p.numel() for p in disc.parameters())
    # Closed form: 3x3x3 convs 3->64, 64->128, 128->256, 256->512, 512->512, 512->1 with biases;
    # 1x1x1 skips 64->128 ... 512->512 with biases; instance-norm affine (2 per channel per stage).
    widths = [3, 64, 128, 256, 512, 512]
    convs = sum(27 * a * b + b for a, b in zip(widths[:-1], widths[1:])) + 27 * 512 + 1
    skips = sum(a * b + b for a, b in zip(widths[1:-1], widths[2:]))
    norms = sum(2 * c for c in widths[2:])
    assert n == convs + skips + norms
    print(f"paper discriminator parameters: {n:,}")
