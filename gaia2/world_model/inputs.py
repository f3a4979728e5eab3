"""Example inputs of the world model's forward pass, with the right shapes and plausible values: for
``describe`` (on the meta device), tests and benchmarks."""

from __future__ import annotations

import torch
from torch import Tensor

from gaia2.schema.metadata import AGENT_CATEGORIES, VOCABULARY, vocabulary_sizes
from gaia2.schema.sample import AGENT_FEATURES
from gaia2.world_model.config import WorldModelConfig


def example_inputs(cfg: WorldModelConfig, batch: int = 1, device: str | torch.device = "cpu",
                   generator: torch.Generator | None = None, scenario: bool = True) -> dict:
    """Keyword arguments of ``WorldModel.forward`` for ``batch`` samples of the config's training shape:
    ``x``, ``tau``, ``cond``, ``timestamps``, ``camera``. Random where the device allows (not on meta)."""
    b, t, n = batch, cfg.latent_steps, cfg.cameras
    device = torch.device(device)
    meta = device.type == "meta"

    def rand(*shape: int) -> Tensor:
        if meta:
            return torch.empty(*shape, device=device)
        return torch.rand(*shape, generator=generator).to(device)

    def randn(*shape: int) -> Tensor:
        if meta:
            return torch.empty(*shape, device=device)
        return torch.randn(*shape, generator=generator).to(device)

    a = cfg.conditioning.max_agents
    agents = rand(b, t, n, a, AGENT_FEATURES)
    if not meta:
        agents[..., -1] = torch.randint(0, len(AGENT_CATEGORIES), (b, t, n, a), generator=generator).float()
    sizes = vocabulary_sizes()
    metadata = (torch.zeros(b, len(VOCABULARY), dtype=torch.long, device=device) if meta else
                torch.stack([torch.randint(0, sizes[k], (b,), generator=generator) for k in VOCABULARY], 1).to(device))
    cond = {
        "action": rand(b, t, 2) * torch.tensor([30.0, 0.02], device=device),
        "agents": agents,
        "agents_valid": (rand(b, t, n, a) < 0.5) if not meta else torch.ones(b, t, n, a, dtype=torch.bool,
                                                                             device=device),
        "metadata": metadata,
        "clip": randn(b, n, cfg.conditioning.clip_dim),
    }
    if scenario:
        cond["scenario"] = randn(b, cfg.conditioning.scenario_dim)
    extrinsics = torch.eye(4, device=device).expand(b, n, 4, 4).clone() if not meta else torch.empty(
        b, n, 4, 4, device=device)
    return {
        "x": randn(b, t, n, cfg.latent_dim, cfg.height, cfg.width),
        "tau": rand(b, t),
        "cond": cond,
        # per camera: the grid time plus a trigger offset of up to 20 ms (the cameras are not synchronous)
        "timestamps": ((torch.arange(t, device=device, dtype=torch.float32) * 0.4 - 0.4 * (t - 1))[None, :, None]
                       + 0.02 * rand(b, 1, n)) if not meta else torch.empty(b, t, n, device=device),
        "camera": {"intrinsics": rand(b, n, 4), "extrinsics": extrinsics, "distortion": randn(b, n, 5) * 0.01},
    }
