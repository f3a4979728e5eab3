"""Training losses of the video tokenizer (GAIA-2 sections 2.1.3 and 4).

total = 0.2 L1 + 2.0 L2 + 0.1 LPIPS + 0.1 DINO distillation + 1e-6 KL (the paper's weights).

Pretrained networks are never downloaded: the DINOv2 model is read from a local
``save_pretrained`` directory, and LPIPS's torchvision backbone from the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file>``); a missing file is an error that names the path.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, model_validator
from torch import Tensor, nn

from gaia2.config.base import StrictModel

# ImageNet statistics: DINOv2's image processor normalises with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LpipsNet = Literal["alex", "vgg", "squeeze"]


class LossWeights(StrictModel):
    """Weights of the tokenizer's loss terms; a weight of 0 removes its term (nothing is built for it)."""
    l1: float = Field(0.2, ge=0)
    l2: float = Field(2.0, ge=0)
    lpips: float = Field(0.1, ge=0)
    dino: float = Field(0.1, ge=0, description="DINOv2 distillation (1 - cosine similarity)")
    kl: float = Field(1e-6, ge=0, description="KL to N(0, I), per latent element")
    dino_path: str | None = Field(None, description="local DINOv2 directory (save_pretrained layout); "
                                                    "the paper uses DINOv2-Large")
    lpips_net: LpipsNet = Field("alex", description="LPIPS backbone; its torchvision weights must be cached")
    lpips_torch_home: str | None = Field(None, description="torch home whose hub/checkpoints holds the LPIPS "
                                                           "backbone; null = torch's default ($TORCH_HOME)")

    @model_validator(mode="after")
    def _check(self) -> "LossWeights":
        if self.dino > 0 and self.dino_path is None:
            raise ValueError(f"dino_path: required when the dino weight is non-zero (dino={self.dino}); "
                             f"give a local DINOv2 directory or set dino to 0")
        return self


def kl_divergence(mean: Tensor, log_std: Tensor) -> Tensor:
    """KL(N(mean, exp(log_std)^2) || N(0, 1)) per element, averaged over all elements -> scalar.

    Closed form: 0.5 * (mean^2 + sigma^2 - 1) - log sigma.
    """
    if mean.shape != log_std.shape:
        raise ValueError(f"kl_divergence: mean {tuple(mean.shape)} and log_std {tuple(log_std.shape)} differ")
    return (0.5 * (mean.square() + torch.exp(2 * log_std) - 1) - log_std).mean()


def _frames(video: Tensor, name: str) -> Tensor:
    """video (B, 3, T, H, W) -> frames (B*T, 3, H, W)."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"{name}: expected video (B, 3, T, H, W), got {tuple(video.shape)}")
    return rearrange(video, "b c t h w -> (b t) c h w")


def lpips_backbone_cache_path(net: LpipsNet, torch_home: str | None = None) -> Path:
    """Where torchvision's hub loader looks for LPIPS's ImageNet backbone:
    ``<hub dir>/checkpoints/<file name of the weights' URL>``; the hub dir is ``<torch_home>/hub`` when
    ``torch_home`` is given, else ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``).

    lpips builds ``torchvision.models.<net>(pretrained=True)``, which torchvision maps to the
    ``IMAGENET1K_V1`` weights of alexnet, vgg16 or squeezenet1_1.
    """
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    weights = {"alex": AlexNet_Weights, "vgg": VGG16_Weights, "squeeze": SqueezeNet1_1_Weights}
    if net not in weights:
        raise ValueError(f"lpips_net: unknown net {net!r}; choose one of {sorted(weights)}")
    url = weights[net].IMAGENET1K_V1.url
    hub = Path(torch_home) / "hub" if torch_home else Path(torch.hub.get_dir())
    return hub / "checkpoints" / os.path.basename(url)


class _Frozen(nn.Module):
    """A frozen pretrained network stays in eval mode (no dropout) even when the loss is put in train mode."""

    frozen: nn.Module

    def train(self, mode: bool = True) -> "_Frozen":
        super().train(mode)
        self.frozen.eval()
        return self


class LPIPSLoss(_Frozen):
    """LPIPS (v0.1, with the package's shipped linear layers) between videos, averaged over frames.

    The backbone is read from the torch hub cache only; if its file is absent this raises
    ``FileNotFoundError`` naming the expected path before lpips could try to download it.
    """

    def __init__(self, net: LpipsNet, torch_home: str | None = None) -> None:
        super().__init__()
        import lpips

        path = lpips_backbone_cache_path(net, torch_home)
        if not path.is_file():
            raise FileNotFoundError(
                f"lpips_net={net!r}: torchvision backbone weights not cached at {path}; put the file there "
                f"(lpips_torch_home={torch_home!r}, TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}) "
                f"- nothing is downloaded")
        # torchvision reads <hub dir>/checkpoints/<file>. set_dir is process-global and, once called,
        # shadows $TORCH_HOME, so the previous override (normally None: "use $TORCH_HOME") is put back.
        previous = torch.hub._hub_dir
        torch.hub.set_dir(str(path.parent.parent))
        try:
            with warnings.catch_warnings():
                # torchvision's "pretrained is deprecated" warning comes from inside lpips.
                warnings.simplefilter("ignore", UserWarning)
                self.frozen = lpips.LPIPS(net=net, pretrained=True, verbose=False)
        finally:
            torch.hub._hub_dir = previous
        self.frozen.requires_grad_(False)
        self.frozen.eval()

    def forward(self, video: Tensor, recon: Tensor) -> Tensor:
        """video, recon (B, 3, T, H, W) in [-1, 1] -> scalar mean LPIPS over the B*T frames."""
        if video.shape != recon.shape:
            raise ValueError(f"LPIPSLoss: video {tuple(video.shape)} and recon {tuple(recon.shape)} differ")
        return self.frozen(_frames(recon, "recon"), _frames(video, "video")).mean()


def _check_dino_dir(path: Path) -> None:
    """Fail early, naming the path, instead of transformers' hub-lookup errors."""
    if not path.is_dir():
        raise FileNotFoundError(f"dino_path {str(path)!r} is not a directory; expected a DINOv2 model "
                                f"written by save_pretrained (config.json + model.safetensors)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"dino_path {str(path)!r} lacks config.json")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != "dinov2":
        raise ValueError(f"dino_path {str(path)!r}: config.json has model_type {model_type!r}, expected 'dinov2'")


class DinoDistillLoss(_Frozen):
    """DINOv2 distillation in latent space: 1 - cos(proj(latent), DINO feature), averaged over latents.

    Target: the frames' DINOv2 patch features (CLS dropped) on their patch grid, linearly
    interpolated in time to the latent rate and bilinearly in space to the latent grid. With
    ``align_corners=False`` latent i of T' sits at frame position (i + 0.5) T / T' - 0.5, i.e. the
    middle of its frames (between frames 3 and 4 of each 8), so only two frames per latent are
    encoded by DINOv2.

    ``proj`` (Linear L -> DINO hidden size) is trainable and belongs with the tokenizer: pass its
    parameters (``trainable_parameters()``) to the tokenizer's optimiser and checkpoint them with it.
    The DINOv2 model is frozen and in eval mode.
    """

    def __init__(self, path: str, latent_dim: int) -> None:
        super().__init__()
        from transformers import Dinov2Model

        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        root = Path(path)
        _check_dino_dir(root)
        model, info = Dinov2Model.from_pretrained(str(root), local_files_only=True, output_loading_info=True)
        # transformers fills absent weights with random values and only logs it; a random teacher
        # would silently train the latents towards noise.
        bad = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
        if bad:
            raise ValueError(f"dino_path {str(root)!r}: checkpoint lacks or mis-shapes weights {bad[:8]}")
        self.frozen = model.requires_grad_(False).eval()
        self.patch_size = int(model.config.patch_size)
        self.hidden_size = int(model.config.hidden_size)
        self.proj = nn.Linear(latent_dim, self.hidden_size)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.proj.parameters())

    @torch.no_grad()
    def frame_features(self, frames: Tensor) -> Tensor:
        """frames (N, 3, H, W) in [-1, 1] -> DINOv2 patch features (N, D, H/p, W/p), float32.

        Frames are first resized (bilinear) to the nearest multiple of the patch size p.
        """
        p = self.patch_size
        h, w = (max(p, round(s / p) * p) for s in frames.shape[-2:])
        x = frames.float()
        if (h, w) != tuple(frames.shape[-2:]):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.pixel_mean) / self.pixel_std
        dtype = next(self.frozen.parameters()).dtype
        tokens = self.frozen(pixel_values=x.to(dtype)).last_hidden_state   # (N, 1 + h/p * w/p, D)
        patches = tokens[:, 1:]   # drop CLS
        if patches.shape[1] != (h // p) * (w // p):
            raise RuntimeError(f"DINOv2 returned {patches.shape[1]} patch tokens for a {h // p}x{w // p} grid")
        return rearrange(patches.float(), "n (h w) d -> n d h w", h=h // p)

    @torch.no_grad()
    def target_features(self, video: Tensor, latent_grid: tuple[int, int, int]) -> Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> DINOv2 targets (B, D, T', H', W') on ``latent_grid`` (T', H', W')."""
        b, _, t, _, _ = video.shape
        t_lat, h_lat, w_lat = latent_grid
        # Linear interpolation in time (align_corners=False), as F.interpolate would do it, but
        # only the two frames around each latent's position are run through DINOv2.
        pos = ((torch.arange(t_lat, dtype=torch.float64) + 0.5) * t / t_lat - 0.5).clamp(0, t - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=t - 1)
        frac = (pos - lo).float().to(video.device).view(1, 1, t_lat, 1, 1)
        needed = sorted(set(lo.tolist()) | set(hi.tolist()))
        feats = self.frame_features(_frames(video[:, :, needed], "video"))   # (B*len(needed), D, h, w)
        feats = F.interpolate(feats, size=(h_lat, w_lat), mode="bilinear", align_corners=False)
        feats = rearrange(feats, "(b t) d h w -> b d t h w", b=b)
        index = {frame: i for i, frame in enumerate(needed)}
        lo_i = torch.tensor([index[i] for i in lo.tolist()], device=video.device)
        hi_i = torch.tensor([index[i] for i in hi.tolist()], device=video.device)
        return (1 - frac) * feats[:, :, lo_i] + frac * feats[:, :, hi_i]

    def forward(self, video: Tensor, latents: Tensor) -> Tensor:
        """video (B, 3, T, H, W) in [-1, 1], latents (B, L, T', H', W') -> scalar 1 - mean cosine similarity."""
        if latents.ndim != 5 or latents.shape[0] != video.shape[0]:
            raise ValueError(f"DinoDistillLoss: expected latents (B, L, T', H', W') with B={video.shape[0]}, "
                             f"got {tuple(latents.shape)}")
        target = self.target_features(video, tuple(latents.shape[2:]))   # (B, D, T', H', W')
        pred = self.proj(rearrange(latents, "b l t h w -> b t h w l"))   # (B, T', H', W', D)
        target = rearrange(target, "b d t h w -> b t h w d").to(pred.dtype)
        return 1 - F.cosine_similarity(pred, target, dim=-1).mean()


class TokenizerLoss(nn.Module):
    """Weighted sum of the tokenizer's training losses.

    Only terms with a non-zero weight are built and computed. The DINO term's projection is the only
    trainable part: add ``trainable_parameters()`` to the tokenizer's optimiser. The frozen LPIPS and
    DINOv2 networks are submodules (moved by ``.to``), so they appear in ``state_dict()``; checkpoint
    ``trainable_state_dict()`` instead to keep them out.
    """

    def __init__(self, weights: LossWeights, latent_dim: int) -> None:
        super().__init__()
        if not any(getattr(weights, n) > 0 for n in ("l1", "l2", "lpips", "dino", "kl")):
            raise ValueError("TokenizerLoss: every loss weight is 0")
        self.weights = weights
        self.lpips = LPIPSLoss(weights.lpips_net, weights.lpips_torch_home) if weights.lpips > 0 else None
        # The validator guarantees dino_path is set when the dino weight is non-zero.
        self.dino = DinoDistillLoss(weights.dino_path, latent_dim) if weights.dino > 0 else None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.dino.trainable_parameters() if self.dino is not None else []

    def trainable_state_dict(self) -> dict[str, Tensor]:
        return {f"dino.proj.{k}": v for k, v in self.dino.proj.state_dict().items()} if self.dino else {}

    def _pixel_terms(self, video: Tensor, recon: Tensor) -> dict[str, Tensor]:
        w = self.weights
        parts: dict[str, Tensor] = {}
        if w.l1 > 0:
            parts["l1"] = F.l1_loss(recon, video)
        if w.l2 > 0:
            parts["l2"] = F.mse_loss(recon, video)
        if self.lpips is not None:
            parts["lpips"] = self.lpips(video, recon)
        return parts

    def reconstruction(self, video: Tensor, recon: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The pixel-space terms only (L1, L2, LPIPS), as in the decoder's GAN fine-tune, where the
        encoder is frozen and the latent terms (DINO, KL) have nothing to train -> (total, detached parts).

        Returns a zero total (and no parts) when all three weights are 0."""
        if video.shape != recon.shape:
            raise ValueError(f"TokenizerLoss: video {tuple(video.shape)} and recon {tuple(recon.shape)} differ")
        parts = self._pixel_terms(video, recon)
        total = sum((getattr(self.weights, name) * value for name, value in parts.items()), recon.new_zeros(()))
        return total, {name: value.detach() for name, value in parts.items()}

    def forward(self, video: Tensor, recon: Tensor, mean: Tensor, log_std: Tensor,
                latents: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """video, recon (B, 3, T, H, W) in [-1, 1]; mean, log_std, latents (B, L, T', H', W')
        -> (total, {term: unweighted value}); total = sum of weight * value over the computed terms.

        The returned parts are detached (for logging); no ``.item()`` is done here.
        """
        if video.shape != recon.shape:
            raise ValueError(f"TokenizerLoss: video {tuple(video.shape)} and recon {tuple(recon.shape)} differ")
        if not mean.shape == log_std.shape == latents.shape:
            raise ValueError(f"TokenizerLoss: mean {tuple(mean.shape)}, log_std {tuple(log_std.shape)} and "
                             f"latents {tuple(latents.shape)} must have one shape")
        w = self.weights
        parts = self._pixel_terms(video, recon)
        if self.dino is not None:
            parts["dino"] = self.dino(video, latents)
        if w.kl > 0:
            parts["kl"] = kl_divergence(mean, log_std)
        total = sum(getattr(w, name) * value for name, value in parts.items())
        return total, {name: value.detach() for name, value in parts.items()}
