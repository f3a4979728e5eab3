"""How a model is spread over the Ray Train workers, beside the jobs and outside the model code.

``parallelizer(workers, precision, world, device, find_unused)`` returns the function a trainer applies
to each module it trains or keeps a copy of (``gaia2`` trainers take it as ``parallelize``):
- activation checkpointing (``workers.activation_checkpointing``): every block of every ``blocks*``
  list inside a trained module is recomputed in backward (torch's ``checkpoint_wrapper``, non-reentrant;
  state-dict keys are unchanged);
- ``ddp``: a trained module is replicated with gradients all-reduced (``ray.train.torch.prepare_model``);
  a frozen one (the EMA copy) is left as it is;
- ``fsdp``: FSDP2 (``fully_shard``) on each block and then the whole module, trained or frozen (so the EMA
  update stays local), bf16 compute with fp32 gradient reduction on GPUs when ``precision`` is bf16.
Checkpoints are the same for both (``jobs/checkpoint.py``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def _block_lists(module: nn.Module) -> list[nn.ModuleList]:
    """The ``nn.ModuleList``s named ``blocks*`` inside ``module``: the transformer blocks of the tokenizer's
    encoder (``blocks``) and decoder (``blocks1``, ``blocks2``) and of the world model (``blocks``)."""
    return [child for name, child in module.named_modules()
            if isinstance(child, nn.ModuleList) and name.rsplit(".", 1)[-1].startswith("blocks")]


def blocks_of(module: nn.Module) -> list[nn.Module]:
    return [block for blocks in _block_lists(module) for block in blocks]


def apply_activation_checkpointing(module: nn.Module) -> nn.Module:
    """Wrap each block (once) so that its activations are recomputed in backward."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (CheckpointImpl, CheckpointWrapper,
                                                                             checkpoint_wrapper)

    for blocks in _block_lists(module):
        for i, block in enumerate(blocks):
            if not isinstance(block, CheckpointWrapper):
                blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    return module


def fsdp_shard(module: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """FSDP2 over all ranks of the default process group: each block is a unit, then the rest (in place)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy()
    if precision == "bf16" and device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in blocks_of(module):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(module, mesh=mesh, mp_policy=mp)
    return module


def parallelizer(workers: Any, precision: str, world: int, device: torch.device,
                 find_unused: bool = False) -> Callable[[nn.Module], nn.Module]:
    """-> ``parallelize(module)``: the module to call in the forward pass. ``find_unused``: DDP looks for
    parameters that get no gradient in a step (a conditioning input absent from the data)."""

    def parallelize(module: nn.Module) -> nn.Module:
        trained = any(p.requires_grad for p in module.parameters())
        if workers.activation_checkpointing and trained:
            apply_activation_checkpointing(module)
        if workers.strategy == "fsdp":
            return fsdp_shard(module, precision, device)
        if world > 1 and trained:
            import ray.train.torch

            return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"find_unused_parameters": find_unused})
        return module

    return parallelize


def reshard(modules: dict) -> None:
    """After a forward with no backward (validation), FSDP2 keeps the root's parameters gathered; shard
    them again so the next step (and the EMA update) meets sharded parameters."""
    from torch.distributed.fsdp import FSDPModule

    for part in modules.values():
        module = part if isinstance(part, nn.Module) else part[0]
        if isinstance(module, FSDPModule):
            module.reshard()
