"""Linear projections of external embeddings (CLIP, scenario) and the shared weight init.

CLIP image embeddings (training) or CLIP text embeddings (inference) and the external scenario
vector each enter the world model as cross-attention tokens through one learned linear layer
(paper section 2.2.3).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EMBED_STD = 0.02   # embedding-table rows: N(0, 0.02^2), as GPT-2 / DiT label embeddings


def init_weights(module: nn.Module) -> None:
    """The conditioning encoders' init, in one place: every nn.Linear Xavier-uniform with zero bias
    (unit-variance inputs give unit-variance outputs), every nn.Embedding N(0, 0.02^2).

    Learned null / missing vectors are initialised by their owners (also N(0, 0.02^2)). The world
    model may zero its own projections of these tokens; that is its choice, not done here.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=EMBED_STD)


class ClipProjection(nn.Module):
    """clip (B, N, D_clip) -> (B, N, C): a learned linear projection per embedding, plus a learned
    camera-slot embedding (which of the rig's cameras the embedding describes) when
    ``max_cameras`` > 0, so that tokens of different cameras stay distinguishable in cross-attention.
    """

    def __init__(self, d_clip: int, dim: int, max_cameras: int = 0) -> None:
        super().__init__()
        if d_clip < 1 or dim < 1 or max_cameras < 0:
            raise ValueError(f"ClipProjection: need d_clip, dim >= 1 and max_cameras >= 0, "
                             f"got {d_clip}, {dim}, {max_cameras}")
        self.d_clip = d_clip
        self.proj = nn.Linear(d_clip, dim)
        self.camera = nn.Embedding(max_cameras, dim) if max_cameras else None
        init_weights(self)

    def forward(self, clip: Tensor) -> Tensor:
        if clip.ndim != 3 or clip.shape[-1] != self.d_clip:
            raise ValueError(f"ClipProjection: clip must be (B, N, {self.d_clip}), got {tuple(clip.shape)}")
        out = self.proj(clip)                                   # (B, N, C)
        if self.camera is not None:
            n = clip.shape[1]
            if n > self.camera.num_embeddings:
                raise ValueError(f"ClipProjection: {n} cameras, more than max_cameras {self.camera.num_embeddings}")
            out = out + self.camera(torch.arange(n, device=clip.device))   # (N, C) broadcast over B
        return out


class ScenarioProjection(nn.Module):
    """scenario (B, D_scenario) -> (B, 1, C): one cross-attention token from a learned linear layer."""

    def __init__(self, d_scenario: int, dim: int) -> None:
        super().__init__()
        if d_scenario < 1 or dim < 1:
            raise ValueError(f"ScenarioProjection: need d_scenario, dim >= 1, got {d_scenario}, {dim}")
        self.d_scenario = d_scenario
        self.proj = nn.Linear(d_scenario, dim)
        init_weights(self)

    def forward(self, scenario: Tensor) -> Tensor:
        if scenario.ndim != 2 or scenario.shape[-1] != self.d_scenario:
            raise ValueError(f"ScenarioProjection: scenario must be (B, {self.d_scenario}), "
                             f"got {tuple(scenario.shape)}")
        return self.proj(scenario)[:, None, :]
