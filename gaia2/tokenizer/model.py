"""The GAIA-2 video tokenizer: Gaussian-latent encoder, joint decoder, rolling-window decoding."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn

from gaia2.nn import MLP
from gaia2.tokenizer.blocks import Attention
from gaia2.tokenizer.config import TokenizerConfig, tokenizer_config
from gaia2.tokenizer.decoder import Decoder
from gaia2.tokenizer.encoder import Encoder


def rolling_windows(num_latents: int, window: int) -> list[tuple[int, int]]:
    """For each latent i, ``(start, i - start)``: the decoder window ``[start, start + window)`` that
    decodes latent i's frames, and i's position in it.

    Each latent gets ``(window - 1) // 2`` past and the rest future latents as context (1 and 1 for
    a window of 3); at the ends the window is shifted inwards so it stays full, e.g. 9 latents,
    window 3: starts 0, 0, 1, 2, 3, 4, 5, 6, 6. With ``num_latents <= window`` all latents share
    one window of ``num_latents``.
    """
    if num_latents < 1 or window < 1:
        raise ValueError(f"rolling_windows: need num_latents >= 1 and window >= 1, got {num_latents}, {window}")
    if num_latents <= window:
        return [(0, i) for i in range(num_latents)]
    past = (window - 1) // 2
    out = []
    for i in range(num_latents):
        start = min(max(i - past, 0), num_latents - window)
        out.append((start, i - start))
    return out


class Tokenizer(nn.Module):
    """video (B, 3, T, H, W) in [-1, 1] <-> latents (B, L, T/8, H/s, W/s); s = ``cfg.spatial_factor``."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.init_weights()

    def init_weights(self) -> None:
        """All initialisation lives here. Linear layers: Xavier-uniform weights, zero bias. The
        output projections of every attention and MLP are zeroed so each transformer block starts
        as the identity (DiT-style); LayerNorms start at (1, 0); convolutions keep PyTorch's
        default (Kaiming-uniform)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Attention):
                nn.init.zeros_(m.proj.weight)
            elif isinstance(m, MLP):
                nn.init.zeros_(m.fc2.weight)

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """video (B, 3, T, H, W) in [-1, 1], T a multiple of 8 -> (mean, log_std), each (B, L, T/8, H/s, W/s).

        Each 8-frame chunk is encoded independently of the others.
        """
        return self.encoder(video)

    @staticmethod
    def sample_latents(mean: Tensor, log_std: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample mean + exp(log_std) * eps, eps ~ N(0, I); shapes as ``encode``'s.

        The paper samples in training and in inference alike, so there is no deterministic mode.
        """
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + log_std.exp() * eps

    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, L, T', H', W') -> video (B, 3, 8T', sH', sW'), all T' latents decoded jointly."""
        return self.decoder(latents)

    def decode_video(self, latents: Tensor) -> Tensor:
        """Any number of latents (B, L, N, H', W') -> video (B, 3, 8N, sH', sW') by rolling window.

        Latent i's 8 frames come from decoding the window ``rolling_windows(N, decoder_window)[i]``
        (one past and one future latent as context for the paper's window of 3) and keeping the
        window's frames at i's position. Windows shared by several latents are decoded once.
        """
        n = latents.shape[2]
        window = self.cfg.decoder_window
        plan = rolling_windows(n, window)
        f = self.cfg.temporal_factor
        size = min(n, window)
        starts = sorted({start for start, _ in plan})
        decoded = {s: self.decode(latents[:, :, s:s + size]) for s in starts}   # (B, 3, 8 * size, H, W)
        chunks = [decoded[start][:, :, pos * f:(pos + 1) * f] for start, pos in plan]
        return torch.cat(chunks, dim=2)

    def forward(self, video: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: video (B, 3, T, H, W) -> (reconstruction (B, 3, T, H, W), mean, log_std);
        the sampled latents are decoded jointly (T/8 should be ``decoder_window``)."""
        mean, log_std = self.encode(video)
        return self.decode(self.sample_latents(mean, log_std, generator)), mean, log_std


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_breakdown(module: nn.Module) -> dict[str, int]:
    """Parameters per direct child, in definition order (e.g. ``blocks`` holds all transformer blocks)."""
    return {name: count_params(child) for name, child in module.named_children()}


def describe(preset: str) -> dict[str, Any]:
    """Build the preset's tokenizer and GAN discriminator on the meta device (no memory, no compute) and
    report their sizes (total, per child module, module types) and shapes; the latent shape comes from
    running ``encode`` and ``decode`` on meta tensors."""
    from gaia2.tokenizer.discriminator import Discriminator3D, discriminator_config

    cfg = tokenizer_config(preset)
    with torch.device("meta"):
        model = Tokenizer(cfg)
        disc = Discriminator3D(discriminator_config(preset))
        video = torch.empty(1, 3, cfg.frames, cfg.height, cfg.width)
        with torch.no_grad():
            mean, _ = model.encode(video)
            recon = model.decode(mean)
    if tuple(recon.shape) != tuple(video.shape):
        raise RuntimeError(f"describe: decoder gives {tuple(recon.shape)} for input {tuple(video.shape)}")
    latent_shape = [mean.shape[2], mean.shape[3], mean.shape[4], mean.shape[1]]   # (T', H', W', L)
    input_shape = [cfg.frames, cfg.height, cfg.width, 3]
    return {
        "preset": cfg.preset,
        "encoder_params": count_params(model.encoder),
        "decoder_params": count_params(model.decoder),
        "discriminator_params": count_params(disc),
        "encoder_breakdown": param_breakdown(model.encoder),
        "decoder_breakdown": param_breakdown(model.decoder),
        "discriminator_breakdown": param_breakdown(disc),
        "encoder_modules": dict(Counter(type(m).__name__ for m in model.encoder.modules())),
        "decoder_modules": dict(Counter(type(m).__name__ for m in model.decoder.modules())),
        "input_shape": input_shape,
        "latent_shape": latent_shape,
        "compression": math.prod(input_shape) / math.prod(latent_shape),
    }
