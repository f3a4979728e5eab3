"""How a model is distributed over the Ray Train workers, beside the jobs and outside the model code.

``ddp``: the model replicated, gradients all-reduced (``ray.train.torch.prepare_model``); for presets
that fit one device. ``fsdp``: FSDP2 (``fully_shard``) on each transformer block and then the whole
model, parameters sharded over all workers, bf16 compute with fp32 gradient reduction when asked; the
EMA copy is sharded the same way so that its update stays local. FSDP checkpoints are sharded:
every rank writes its shard with ``torch.distributed.checkpoint`` into its own directory and Ray Train
merges them into one checkpoint.
"""

from __future__ import annotations

import os

import torch
from torch import nn


def fsdp_shard(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """FSDP2 over all ranks of the default process group: each ``model.blocks[i]`` is a unit, then the rest."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy()
    if precision == "bf16" and device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def wrapper(strategy: str, precision: str, world: int, device: torch.device):
    """-> a function applied to the model (and, for FSDP, to its EMA copy) before training."""
    if strategy == "fsdp":
        return lambda m: fsdp_shard(m, precision, device)
    if world > 1:
        import ray.train.torch

        return ray.train.torch.prepare_model
    return lambda m: m


def save_sharded(state: dict, extra: dict, directory: str, rank: int) -> None:
    """Tensors of ``state`` (DTensor shards) with DCP, and this rank's non-tensor ``extra`` (step, RNG, data
    position) as ``extra-<rank>.pt``; all ranks call it, each with its own ``directory``."""
    import torch.distributed.checkpoint as dcp

    dcp.save(state, checkpoint_id=directory)
    torch.save(extra, os.path.join(directory, f"extra-{rank}.pt"))


def load_sharded(state: dict, directory: str, rank: int) -> dict:
    """Fill ``state`` (sharded tensors, in place) from a merged DCP checkpoint; returns this rank's extra."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner

    # Partial: a fresh optimizer's state dict lists (zero) state for every parameter, while the saved one
    # has state only for parameters that ever had a gradient (e.g. not for an input the data never has).
    dcp.load(state, checkpoint_id=directory, planner=DefaultLoadPlanner(allow_partial_load=True))
    return torch.load(os.path.join(directory, f"extra-{rank}.pt"), weights_only=False)


def full_state_from_sharded(directory: str) -> dict:
    """A merged DCP checkpoint -> one full state dict on the CPU, without a process group (for export)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "full.pt")
        dcp_to_torch_save(directory, path)
        return torch.load(path, map_location="cpu", weights_only=False)
