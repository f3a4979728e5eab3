"""Dynamic agents -> one cross-attention token per (camera, box slot) and latent step (paper section 2.2.3).

Input features per slot (layout of ``gaia2.schema.sample.AGENT_FEATURE_NAMES``): 2D box x1 y1 x2 y2
in [0, 1], 3D centre in the camera frame (m), size l w h (m), sin / cos of the yaw, category id
(``gaia2.schema.metadata.AGENT_CATEGORIES``, stored as float). Each of the 13 dimensions is embedded
on its own (continuous: a Linear(1, d) each; category: an embedding table), the 13 embeddings are
concatenated and a one-hidden-layer MLP maps them to C; a learned camera-slot embedding says which
camera the box is seen in.

A feature given as NaN is *missing*: it takes that dimension's learned "missing" embedding, the
same one feature dropout trains, so at inference a caller can condition on, e.g., 2D boxes only by
setting the 3D dimensions to NaN.

Training-time dropout (only in ``train()`` mode, drawn from the generator passed in):
- feature dropout: each feature dimension of each (step, camera, slot) is missing with p = 0.3;
- instance dropout (``instance_dropout``): per sample and camera, a random number of agents is kept.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gaia2.conditioning.dropout import uniform
from gaia2.conditioning.embeddings import EMBED_STD, init_weights
from gaia2.schema.metadata import AGENT_CATEGORIES
from gaia2.schema.sample import AGENT_FEATURES

CONTINUOUS = AGENT_FEATURES - 1    # the last dimension is the category id
CATEGORY = AGENT_FEATURES - 1
# Centre (m, signed, up to ~100) and size (m, up to ~20) are log-compressed, sign(x) log(1 + |x|),
# so that a Linear(1, d) sees O(1) inputs over the whole range; box corners and sin/cos already are.
LOG_DIMS = slice(4, 10)


def instance_dropout(valid: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """valid (B, T, N, A) bool -> keep (B, T, N, A) bool, a subset of valid (paper section 2.2.3).

    Per sample and camera: draw a step t uniformly, count the valid slots c there, draw n uniformly
    in {0, ..., c} and keep, at every step, the first n valid slots (slots are ordered nearest
    first by the data pipeline). n is constant over time; slots are not tracked across steps.
    Draws: one U[0, 1) per (sample, camera) for t, then one per (sample, camera) for n.
    """
    if valid.ndim != 4 or valid.dtype != torch.bool:
        raise ValueError(f"instance_dropout: valid must be (B, T, N, A) bool, got {tuple(valid.shape)} {valid.dtype}")
    b, t, n, _ = valid.shape
    device = valid.device
    step = (uniform((b, n), generator, device) * t).long().clamp(max=t - 1)             # (B, N)
    count = valid.sum(-1).gather(1, step[:, None, :]).squeeze(1)                       # (B, N) valid at that step
    keep_n = torch.minimum((uniform((b, n), generator, device) * (count + 1)).long(), count)   # uniform on 0..c
    rank = valid.long().cumsum(-1) - 1                                                 # (B, T, N, A) index among valid
    return valid & (rank < keep_n[:, None, :, None])


class AgentEncoder(nn.Module):
    """features (B, T, N, A, 13), valid (B, T, N, A) bool -> tokens (B, T, N*A, C), mask (B, T, N*A) bool.

    Token n*A + a is slot a of camera n. ``mask`` = valid, and ``keep`` (B,) (conditioning dropout
    of the whole variable), and ``camera_valid`` (B, N) (padding cameras), and, in training, the
    instance dropout; masked tokens are exactly zero. ``feature_dim`` d (default max(8, C // 8)) is
    the width of each dimension's embedding. N <= num_cameras_max, A <= max_agents.
    Init: linears Xavier-uniform (the per-dimension Linear(1, d) too), tables and the "missing"
    embeddings N(0, 0.02^2).
    """

    def __init__(self, dim: int, num_cameras_max: int, max_agents: int, feature_dropout: float = 0.3,
                 feature_dim: int | None = None) -> None:
        super().__init__()
        if dim < 1 or num_cameras_max < 1 or max_agents < 1:
            raise ValueError(f"AgentEncoder: dim, num_cameras_max and max_agents must be >= 1, "
                             f"got {dim}, {num_cameras_max}, {max_agents}")
        if not 0.0 <= feature_dropout <= 1.0:
            raise ValueError(f"AgentEncoder: feature_dropout must be in [0, 1], got {feature_dropout}")
        d = feature_dim if feature_dim is not None else max(8, dim // 8)
        if d < 1:
            raise ValueError(f"AgentEncoder: feature_dim must be >= 1, got {d}")
        self.num_cameras_max, self.max_agents, self.feature_dropout = num_cameras_max, max_agents, feature_dropout
        # CONTINUOUS independent Linear(1, d), stored stacked: row i is Linear i's weight / bias.
        self.continuous_weight = nn.Parameter(torch.empty(CONTINUOUS, d))
        self.continuous_bias = nn.Parameter(torch.zeros(CONTINUOUS, d))
        self.category = nn.Embedding(len(AGENT_CATEGORIES), d)
        self.missing = nn.Parameter(torch.empty(AGENT_FEATURES, d))   # one per feature dimension
        self.fc1 = nn.Linear(AGENT_FEATURES * d, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.camera = nn.Embedding(num_cameras_max, dim)
        init_weights(self)
        bound = math.sqrt(6.0 / (1 + d))   # Xavier-uniform of a (d, 1) Linear weight
        nn.init.uniform_(self.continuous_weight, -bound, bound)
        nn.init.normal_(self.missing, std=EMBED_STD)

    def embed(self, features: Tensor, missing: Tensor) -> Tensor:
        """features (..., 13) finite, missing (..., 13) bool -> (..., C), no camera embedding."""
        x = features[..., :CONTINUOUS]
        x = torch.cat([x[..., :LOG_DIMS.start], torch.sign(x[..., LOG_DIMS]) * torch.log1p(x[..., LOG_DIMS].abs()),
                       x[..., LOG_DIMS.stop:]], dim=-1)
        cont = x[..., None] * self.continuous_weight + self.continuous_bias          # (..., 12, d)
        cat = self.category(features[..., CATEGORY].round().long())[..., None, :]    # (..., 1, d)
        emb = torch.cat([cont, cat], dim=-2)                                          # (..., 13, d)
        emb = torch.where(missing[..., None], self.missing.to(emb.dtype), emb)
        return self.fc2(F.gelu(self.fc1(emb.flatten(-2)), approximate="tanh"))

    def forward(self, features: Tensor, valid: Tensor, keep: Tensor | None = None,
                camera_valid: Tensor | None = None, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        if features.ndim != 5 or features.shape[-1] != AGENT_FEATURES:
            raise ValueError(f"AgentEncoder: agents must be (B, T, N, A, {AGENT_FEATURES}), got {tuple(features.shape)}")
        b, t, n, a, _ = features.shape
        if valid.shape != (b, t, n, a) or valid.dtype != torch.bool:
            raise ValueError(f"AgentEncoder: agents_valid must be ({b}, {t}, {n}, {a}) bool, "
                             f"got {tuple(valid.shape)} {valid.dtype}")
        if n > self.num_cameras_max:
            raise ValueError(f"AgentEncoder: {n} cameras, more than num_cameras_max {self.num_cameras_max}")
        if a > self.max_agents:
            raise ValueError(f"AgentEncoder: {a} agent slots, more than max_agents {self.max_agents}")
        missing = torch.isnan(features)
        features = features.float().nan_to_num(0.0)   # a missing value must not reach any product (NaN * 0 = NaN)
        mask = valid
        if self.training:
            if self.feature_dropout > 0:
                missing = missing | (uniform(features.shape, generator, features.device) < self.feature_dropout)
            mask = mask & instance_dropout(valid, generator)
        if keep is not None:
            if keep.shape != (b,):
                raise ValueError(f"AgentEncoder: keep must be ({b},), got {tuple(keep.shape)}")
            mask = mask & keep[:, None, None, None]
        if camera_valid is not None:
            if camera_valid.shape != (b, n):
                raise ValueError(f"AgentEncoder: camera_valid must be ({b}, {n}), got {tuple(camera_valid.shape)}")
            mask = mask & camera_valid[:, None, :, None]
        tokens = self.embed(features, missing)                                          # (B, T, N, A, C)
        tokens = tokens + self.camera(torch.arange(n, device=features.device))[:, None, :]   # (N, 1, C)
        tokens = torch.where(mask[..., None], tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
        return rearrange(tokens, "b t n a c -> b t (n a) c"), rearrange(mask, "b t n a -> b t (n a)")
