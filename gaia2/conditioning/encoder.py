"""All conditioning of the world model in one module: raw inputs -> cross-attention tokens + action.

Token layout along K (the same for every sample of a batch; N = the batch's cameras, A = its slots,
V = the metadata variables):

    0            the learned always-on null token (a fully dropped sample still attends to something)
    1 .. V       metadata, one token per variable (always attended; dropped or unknown = id 0)
    V+1 .. V+N   CLIP embedding of each camera
    V+N+1        scenario embedding (masked when dropped, absent from the batch, or invalid for the sample)
    V+N+2 ..     agents, camera-major: N * A tokens, different at every step

The first V+N+2 tokens do not depend on time and are broadcast over T. Masked tokens are exactly
zero. Variables for conditioning dropout (``VARIABLES``), each dropped on its own (paper §4): speed,
curvature, each metadata variable by its vocabulary name, agents, CLIP, scenario. A keep mask is
{name: (B,) bool}, True = conditioned on. Dropped = the component's learned null embedding (speed,
curvature), id 0 = unknown (a metadata variable), tokens masked out (agents, CLIP, scenario): the same
values an inference request produces by leaving the variable out (NaN speed / curvature, metadata
unknown, no valid agent, NaN CLIP rows, no or a NaN scenario).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from gaia2.conditioning.action import COMPONENTS, ActionEncoder
from gaia2.conditioning.agents import AgentEncoder
from gaia2.conditioning.dropout import ConditioningDropout, camera_dropout
from gaia2.conditioning.embeddings import EMBED_STD, ClipProjection, ScenarioProjection
from gaia2.conditioning.metadata import MetadataEncoder
from gaia2.conditioning.config import ConditioningConfig
from gaia2.schema.metadata import METADATA_KEYS

VARIABLES: tuple[str, ...] = (*COMPONENTS, *METADATA_KEYS, "agents", "clip", "scenario")
REQUIRED_KEYS: tuple[str, ...] = ("action", "agents", "agents_valid", "metadata", "clip")
OPTIONAL_KEYS: tuple[str, ...] = ("scenario", "scenario_valid", "camera_valid")


@dataclass
class ConditioningOutput:
    tokens: Tensor   # (B, T, K, C): cross-attention context of step t is tokens[:, t]
    mask: Tensor     # (B, T, K) bool, True = attend
    action: Tensor   # (B, T, C): added to the flow-time embedding, drives adaptive layer norm


class ConditioningEncoder(nn.Module):
    """cond (see ``gaia2/world_model`` spec) -> ConditioningOutput.

    cond keys: "action" (B, T, 2) float raw speed m/s, curvature 1/m; "agents" (B, T, N, A, 13)
    float (NaN = missing feature); "agents_valid" (B, T, N, A) bool; "metadata" (B, V) long;
    "clip" (B, N, D_clip) float (a camera's row of NaN = unknown = dropped for that camera); optional
    "scenario" (B, D_scenario) float (absent, or a NaN row = dropped),
    "scenario_valid" (B,) bool (which samples have a scenario vector; absent = all that give one) and
    "camera_valid" (B, N) bool (padding cameras of smaller rigs: their CLIP and agent tokens are
    masked; absent = all valid).

    Init (each sub-encoder, via ``embeddings.init_weights``): linears Xavier-uniform with zero bias,
    tables and learned null / missing vectors N(0, 0.02^2).
    """

    def __init__(self, cfg: ConditioningConfig, dim: int) -> None:
        """``dim``: C, the width of every token and of the action embedding (the world model's)."""
        super().__init__()
        self.cfg, self.dim = cfg, dim
        self.action = ActionEncoder(dim)
        self.agents = AgentEncoder(dim, cfg.max_cameras, cfg.max_agents, cfg.feature_dropout)
        self.metadata = MetadataEncoder(dim)
        self.clip = ClipProjection(cfg.clip_dim, dim, cfg.max_cameras)
        self.scenario = ScenarioProjection(cfg.scenario_dim, dim)
        self.null_token = nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.null_token, std=EMBED_STD)
        self.dropout = ConditioningDropout(cfg.p_each, cfg.p_all)

    @staticmethod
    def num_tokens(num_cameras: int, num_agents: int) -> int:
        """K for a batch of N cameras and A agent slots: 1 + V + N + 1 + N * A."""
        return 1 + len(METADATA_KEYS) + num_cameras + 1 + num_cameras * num_agents

    def sample_keep(self, batch_size: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Training-time conditioning dropout: {name: (B,) bool} for every name of ``VARIABLES``."""
        return self.dropout.sample(batch_size, VARIABLES, generator, device)

    def sample_camera_keep(self, batch_size: int, num_cameras: int, generator: torch.Generator | None = None,
                           valid: Tensor | None = None, device: torch.device | str | None = None) -> Tensor:
        """Training-time camera dropout at ``cfg.camera_dropout``: (B, N) bool, >= 1 camera kept per sample."""
        return camera_dropout(batch_size, num_cameras, self.cfg.camera_dropout, generator, valid, device)

    @staticmethod
    def unconditional_keep(batch_size: int, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Every variable dropped: the unconditional prediction of classifier-free guidance."""
        return {name: torch.zeros(batch_size, dtype=torch.bool, device=device) for name in VARIABLES}

    def _resolve_keep(self, keep: Mapping[str, Tensor] | None, b: int, device: torch.device) -> dict[str, Tensor]:
        """A partial keep dict -> one (B,) bool per variable (missing names are kept)."""
        keep = dict(keep or {})
        unknown = sorted(set(keep) - set(VARIABLES))
        if unknown:
            raise ValueError(f"ConditioningEncoder: unknown keep variable(s) {unknown}; allowed {list(VARIABLES)}")
        out = {}
        for name in VARIABLES:
            mask = keep.get(name)
            if mask is None:
                mask = torch.ones(b, dtype=torch.bool, device=device)
            elif mask.shape != (b,) or mask.dtype != torch.bool:
                raise ValueError(f"ConditioningEncoder: keep[{name!r}] must be a ({b},) bool tensor, "
                                 f"got {tuple(mask.shape)} {mask.dtype}")
            out[name] = mask.to(device)
        return out

    def forward(self, cond: Mapping[str, Tensor], keep: Mapping[str, Tensor] | None = None,
                generator: torch.Generator | None = None) -> ConditioningOutput:
        """keep None = nothing dropped (inference); ``generator`` drives the agent dropouts in training."""
        missing = [k for k in REQUIRED_KEYS if k not in cond]
        unknown = sorted(set(cond) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if missing or unknown:
            raise ValueError(f"ConditioningEncoder: cond is missing {missing} / has unknown keys {unknown}; "
                             f"required {list(REQUIRED_KEYS)}, optional {list(OPTIONAL_KEYS)}")
        action, agents, clip = cond["action"], cond["agents"], cond["clip"]
        if action.ndim != 3:
            raise ValueError(f"ConditioningEncoder: action must be (B, T, 2), got {tuple(action.shape)}")
        b, t = action.shape[:2]
        if agents.ndim != 5 or agents.shape[:2] != (b, t):
            raise ValueError(f"ConditioningEncoder: agents must be ({b}, {t}, N, A, 13) like action's (B, T), "
                             f"got {tuple(agents.shape)}")
        n = agents.shape[2]
        if clip.ndim != 3 or clip.shape[:2] != (b, n):
            raise ValueError(f"ConditioningEncoder: clip must be ({b}, {n}, D_clip) like agents' (B, N), "
                             f"got {tuple(clip.shape)}")
        device = action.device
        keep = self._resolve_keep(keep, b, device)
        camera_valid = cond.get("camera_valid")
        if camera_valid is not None and (camera_valid.shape != (b, n) or camera_valid.dtype != torch.bool):
            raise ValueError(f"ConditioningEncoder: camera_valid must be ({b}, {n}) bool, "
                             f"got {tuple(camera_valid.shape)} {camera_valid.dtype}")

        action_emb = self.action(action, torch.stack([keep[c] for c in COMPONENTS], 1))      # (B, T, C)
        agent_tok, agent_mask = self.agents(agents, cond["agents_valid"], keep["agents"], camera_valid, generator)
        meta = self.metadata(cond["metadata"], torch.stack([keep[k] for k in METADATA_KEYS], 1))   # (B, V, C)
        clip_known = ~torch.isnan(clip).any(-1)                                              # (B, N)
        clip_tok = self.clip(clip.nan_to_num(0.0))                                           # (B, N, C)
        clip_mask = keep["clip"][:, None] & clip_known
        if camera_valid is not None:
            clip_mask = clip_mask & camera_valid
        if "scenario" in cond:
            scenario = cond["scenario"]
            scen = self.scenario(scenario.nan_to_num(0.0))                                   # (B, 1, C)
            scen_mask = keep["scenario"][:, None] & ~torch.isnan(scenario).any(-1, keepdim=True)
            valid = cond.get("scenario_valid")
            if valid is not None:
                if valid.shape != (b,) or valid.dtype != torch.bool:
                    raise ValueError(f"ConditioningEncoder: scenario_valid must be ({b},) bool, "
                                     f"got {tuple(valid.shape)} {valid.dtype}")
                scen_mask = scen_mask & valid[:, None]
        else:
            scen = torch.zeros(b, 1, self.dim, dtype=clip_tok.dtype, device=device)
            scen_mask = torch.zeros(b, 1, dtype=torch.bool, device=device)

        null = self.null_token.to(clip_tok.dtype).expand(b, 1, -1)
        static = torch.cat([null, meta, clip_tok, scen], dim=1)                               # (B, S, C)
        static_mask = torch.cat([torch.ones(b, 1 + meta.shape[1], dtype=torch.bool, device=device),
                                 clip_mask, scen_mask], dim=1)                                # (B, S)
        static = torch.where(static_mask[..., None], static, torch.zeros((), dtype=static.dtype, device=device))
        s = static.shape[1]
        tokens = torch.cat([static[:, None].expand(b, t, s, -1), agent_tok.to(static.dtype)], dim=2)  # (B, T, K, C)
        mask = torch.cat([static_mask[:, None].expand(b, t, s), agent_mask], dim=2)                  # (B, T, K)
        return ConditioningOutput(tokens=tokens, mask=mask, action=action_emb)
