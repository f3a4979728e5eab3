"""``gaia2 describe world-model``: parameter counts, token count and FLOPs of a preset, on the meta device."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from gaia2.world_model.inputs import example_inputs
from gaia2.world_model.model import WorldModel
from gaia2.world_model.train_config import train_config


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(preset: str) -> dict[str, Any]:
    """Build the preset on the meta device (no memory, no compute) and report:

    - parameters: total, per child module, per block (one block's share) and module counts;
    - the training sample: latent shape (T, N, H, W) x L and its token count T*N*H*W;
    - FLOPs of one training sample: the forward pass counted by ``torch.utils.flop_counter`` (matmuls and
      attention, including the conditioning encoders), and a training step as 3x forward (forward +
      backward); with activation checkpointing the backward recomputes the forward, so the hardware
      executes 4x forward, which MFU does not count.
    """
    training = train_config(preset)   # the preset's training decides activation checkpointing
    cfg = training.model
    with torch.device("meta"):
        model = WorldModel(cfg)
        inputs = example_inputs(cfg, batch=1, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        v = model(**inputs)
    if tuple(v.shape) != tuple(inputs["x"].shape):
        raise RuntimeError(f"describe: model output {tuple(v.shape)} differs from its input {tuple(inputs['x'].shape)}")
    forward = int(counter.get_total_flops())
    breakdown = {name: count_params(child) for name, child in model.named_children()}
    return {
        "preset": cfg.preset,
        "params": count_params(model),
        "params_breakdown": breakdown,
        "params_per_block": count_params(model.blocks[0]),
        "block_breakdown": {name: count_params(child) for name, child in model.blocks[0].named_children()},
        "modules": dict(Counter(type(m).__name__ for m in model.modules())),
        "sample_shape": {"T": cfg.latent_steps, "N": cfg.cameras, "H": cfg.height, "W": cfg.width,
                         "L": cfg.latent_dim},
        "tokens": cfg.tokens,
        "flops_forward_per_sample": forward,
        "flops_per_training_step_per_sample": 3 * forward,
        "flops_executed_per_training_step_per_sample": (4 if training.workers.activation_checkpointing else 3) * forward,
    }
