"""Video tokenizer architecture: shapes, chunk independence, rolling-window decoding, paper sizes."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from gaia2.config.base import ConfigError
from gaia2.tokenizer import Tokenizer, TokenizerConfig, describe, rolling_windows, tokenizer_config

# 16 x 16 frames (2 x 2 latent grid) keep the rolling-window tests to a fraction of a second.
SMALL = {"height": 16, "width": 16}


def make_model(seed: int = 0, **overrides) -> Tokenizer:
    """Tiny tokenizer with random (not identity-at-init) blocks, so that attention really mixes tokens."""
    torch.manual_seed(seed)
    model = Tokenizer(tokenizer_config("tiny", overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def video(b: int, t: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def test_tiny_forward_backward_shapes() -> None:
    torch.manual_seed(0)
    cfg = tokenizer_config("tiny")
    model = Tokenizer(cfg).train()
    x = video(2, cfg.frames, cfg.height, cfg.width)
    recon, mean, log_std = model(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == x.shape == (2, 3, 24, 32, 64)
    assert mean.shape == log_std.shape == (2, 16, 3, 4, 8)
    (recon - x).pow(2).mean().add(mean.pow(2).mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Zero-init makes blocks start as identity, but the input convs must already learn.
    assert model.encoder.patch.conv.weight.grad.abs().sum() > 0
    assert model.decoder.up_out.conv.weight.grad.abs().sum() > 0


def test_init_blocks_start_as_identity() -> None:
    model = Tokenizer(tokenizer_config("tiny", SMALL))
    block = model.decoder.blocks1[0]
    x = torch.randn(1, 3, 2, 2, model.cfg.dim)
    assert torch.equal(block(x), x)


def test_encode_chunks_independently() -> None:
    model = make_model()
    x = video(1, 16, 16, 16)
    with torch.no_grad():
        mean, log_std = model.encode(x)
        m0, s0 = model.encode(x[:, :, :8])
        m1, s1 = model.encode(x[:, :, 8:])
        assert mean.shape == (1, 16, 2, 2, 2)
        torch.testing.assert_close(mean, torch.cat([m0, m1], dim=2), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(log_std, torch.cat([s0, s1], dim=2), rtol=1e-5, atol=1e-5)
        # Changing the second chunk changes only the second latent.
        y = x.clone()
        y[:, :, 8:] = -y[:, :, 8:]
        mean_y, _ = model.encode(y)
    torch.testing.assert_close(mean_y[:, :, 0], mean[:, :, 0])
    assert (mean_y[:, :, 1] - mean[:, :, 1]).abs().max() > 1e-3


def test_encode_rejects_bad_shapes() -> None:
    model = make_model(**SMALL)
    with pytest.raises(ValueError, match="multiple of the temporal factor 8"):
        model.encode(video(1, 12, 16, 16))
    with pytest.raises(ValueError, match="height 20 is not divisible by the spatial factor 8"):
        model.encode(video(1, 8, 20, 16))


def test_decode_three_latents_gives_24_frames() -> None:
    model = make_model(**SMALL)
    z = torch.randn(2, 16, 3, 2, 2)
    with torch.no_grad():
        out = model.decode(z)
        assert out.shape == (2, 3, 24, 16, 16)
        # Joint decoding: the first latent's frames depend on the last latent.
        z2 = z.clone()
        z2[:, :, 2] += 1.0
        assert (model.decode(z2)[:, :, :8] - out[:, :, :8]).abs().max() > 1e-4


def test_rolling_windows_table() -> None:
    assert rolling_windows(9, 3) == [(0, 0), (0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (6, 2)]
    assert [s for s, _ in rolling_windows(10, 3)] == [0, 0, 1, 2, 3, 4, 5, 6, 7, 7]
    assert rolling_windows(3, 3) == [(0, 0), (0, 1), (0, 2)]
    assert rolling_windows(2, 3) == [(0, 0), (0, 1)]
    # Window of 4: one past latent and two future ones.
    assert rolling_windows(6, 4) == [(0, 0), (0, 1), (1, 1), (2, 1), (2, 2), (2, 3)]
    with pytest.raises(ValueError):
        rolling_windows(0, 3)


@pytest.mark.parametrize("n", [9, 10])
def test_rolling_decode_uses_documented_context(n: int) -> None:
    model = make_model(**SMALL)
    z = torch.randn(1, 16, n, 2, 2)
    with torch.no_grad():
        out = model.decode_video(z)
        assert out.shape == (1, 3, 8 * n, 16, 16)
        for i, (start, pos) in enumerate(rolling_windows(n, 3)):
            ref = model.decode(z[:, :, start:start + 3])[:, :, 8 * pos:8 * pos + 8]
            torch.testing.assert_close(out[:, :, 8 * i:8 * i + 8], ref, rtol=1e-5, atol=1e-5)
        # Latent 5 is context only for the windows of latents 4, 5 and 6.
        z2 = z.clone()
        z2[:, :, 5] += 1.0
        out2 = model.decode_video(z2)
    changed = [(out2[:, :, 8 * i:8 * i + 8] - out[:, :, 8 * i:8 * i + 8]).abs().max().item() > 1e-4
               for i in range(n)]
    assert changed == [i in (4, 5, 6) for i in range(n)]


def test_rolling_decode_of_one_window_equals_joint_decode() -> None:
    model = make_model(**SMALL)
    with torch.no_grad():
        for n in (1, 2, 3):
            z = torch.randn(1, 16, n, 2, 2)
            torch.testing.assert_close(model.decode_video(z), model.decode(z))


def test_sample_latents_is_reparameterised_gaussian() -> None:
    mean = torch.full((4, 16, 3, 8, 8), 0.5)
    log_std = torch.full_like(mean, -1.0)
    z = Tokenizer.sample_latents(mean, log_std, torch.Generator().manual_seed(0))
    eps = (z - mean) / torch.exp(torch.tensor(-1.0))
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1.0) < 0.05
    same = Tokenizer.sample_latents(mean, log_std, torch.Generator().manual_seed(0))
    assert torch.equal(z, same)


def test_blocks_keep_their_parameter_names_and_match_the_written_out_factorisation() -> None:
    """Saved tokenizers load by these names. Reference: spatial attention over each frame's H*W tokens,
    temporal attention over each position's T tokens, then the MLP; each pre-norm and residual."""
    from einops import rearrange

    from gaia2.tokenizer.blocks import SpaceTimeBlock, SpatialBlock

    torch.manual_seed(0)
    sp, st = SpatialBlock(16, 2, 2.0), SpaceTimeBlock(16, 2, 2.0)
    assert [k for k in sp.state_dict() if k.endswith("weight")] == [
        "norm1.weight", "attn.qkv.weight", "attn.proj.weight", "norm2.weight", "mlp.fc1.weight", "mlp.fc2.weight"]
    assert [k.split(".")[0] for k in st.state_dict() if k.endswith("weight")] == [
        "norm_s", "attn_s", "attn_s", "norm_t", "attn_t", "attn_t", "norm_m", "mlp", "mlp"]
    x = torch.randn(2, 3, 4, 5, 16)
    b, _, h, _, _ = x.shape
    with torch.no_grad():
        r = rearrange(x, "b t h w c -> (b t) (h w) c")
        r = r + sp.attn(sp.norm1(r))
        r = r + sp.mlp(sp.norm2(r))
        torch.testing.assert_close(sp(x), rearrange(r, "(b t) (h w) c -> b t h w c", b=b, h=h))
        r = rearrange(x, "b t h w c -> (b t) (h w) c")
        r = r + st.attn_s(st.norm_s(r))
        r = rearrange(r, "(b t) (h w) c -> (b h w) t c", b=b, h=h)
        r = r + st.attn_t(st.norm_t(r))
        r = r + st.mlp(st.norm_m(r))
        torch.testing.assert_close(st(x), rearrange(r, "(b h w) t c -> b t h w c", b=b, h=h))


def test_paper_describe_matches_paper() -> None:
    d = describe("paper")
    assert abs(d["encoder_params"] / 85e6 - 1) < 0.10, d["encoder_params"]
    assert abs(d["decoder_params"] / 200e6 - 1) < 0.10, d["decoder_params"]
    assert d["input_shape"] == [24, 448, 960, 3]
    assert d["latent_shape"] == [3, 14, 30, 64]
    assert d["compression"] == 384
    assert d["encoder_modules"]["SpatialBlock"] == 24
    assert d["decoder_modules"]["SpaceTimeBlock"] == 16 + 8
    assert d["encoder_modules"]["Attention"] == 24 and d["decoder_modules"]["Attention"] == 48
    for part in ("encoder", "decoder", "discriminator"):
        assert sum(d[f"{part}_breakdown"].values()) == d[f"{part}_params"], part
    assert list(d["encoder_breakdown"]) == ["patch", "down", "blocks", "out_down", "norm", "to_moments"]
    # 24 spatial blocks of width 512: attention 4 * 512^2 + MLP 8 * 512^2 weights (+ biases, norms) each.
    assert abs(d["encoder_breakdown"]["blocks"] / (24 * 12 * 512 ** 2) - 1) < 0.01
    assert d["discriminator_params"] == 12_181_633


def test_tiny_describe() -> None:
    d = describe("tiny")
    assert d["latent_shape"] == [3, 4, 8, 16] and d["compression"] == 96


@pytest.mark.parametrize("overrides, field", [
    ({"frames": 20}, "frames"),
    ({"height": 36}, "height"),
    ({"width": 60}, "width"),
    ({"decoder_out_stride": (2, 2, 2)}, "decoder_out_stride"),
    ({"dim": 66}, "dim"),
])
def test_config_errors_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}: "):
        tokenizer_config("tiny", overrides)
    with pytest.raises(ValidationError, match=f"{field}: "):
        TokenizerConfig(**overrides)


def test_config_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match="latent_channels"):
        tokenizer_config("tiny", {"latent_channels": 8})
