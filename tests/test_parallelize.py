"""Parallelism applied from the jobs, outside the model code: activation checkpointing of every transformer
block (same gradients, same state-dict keys), and the resource check that keeps a training job from
starving its data pipeline."""

from __future__ import annotations

import pytest
import torch

from gaia2.conditioning import VARIABLES

from gaia2.config.base import ConfigError
from jobs.parallelize import apply_activation_checkpointing, blocks_of
from jobs.resources import fit_workers


def _gradients(model, loss_fn):
    loss_fn(model).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _same_gradients_with_checkpointing(build, loss_fn):
    plain = build()
    wrapped = build()
    wrapped.load_state_dict(plain.state_dict())
    keys = list(plain.state_dict())
    apply_activation_checkpointing(wrapped)
    apply_activation_checkpointing(wrapped)   # idempotent: blocks are wrapped once
    assert list(wrapped.state_dict()) == keys   # checkpoints and exports are unchanged
    a, b = _gradients(plain, loss_fn), _gradients(wrapped, loss_fn)
    assert len(a) == len(b) > 0
    for (name, ga), gb in zip(a.items(), b.values()):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6, msg=name)
    return wrapped


def test_activation_checkpointing_of_the_tokenizer_gives_the_same_gradients():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    from gaia2.tokenizer import Tokenizer
    from gaia2.tokenizer.config import tokenizer_config

    cfg = tokenizer_config("tiny", overrides={"dim": 32, "heads": 2, "height": 16, "width": 16})

    def build():
        torch.manual_seed(0)
        return Tokenizer(cfg).train()

    video = torch.rand(1, 3, 24, 16, 16) * 2 - 1

    def loss(model):
        recon, _, _ = model(video, generator=torch.Generator().manual_seed(0))
        return recon.square().mean()

    wrapped = _same_gradients_with_checkpointing(build, loss)
    blocks = blocks_of(wrapped)
    assert blocks and all(isinstance(b, CheckpointWrapper) for b in blocks)


def test_activation_checkpointing_of_the_world_model_gives_the_same_gradients():
    from gaia2.world_model.config import world_model_config
    from gaia2.world_model.inputs import example_inputs
    from gaia2.world_model.model import WorldModel

    cfg = world_model_config("tiny", overrides={
        "dim": 32, "heads": 2, "depth": 2, "cameras": 2, "height": 2, "width": 3, "latent_steps": 3, "latent_dim": 8,
        "conditioning": {"max_cameras": 3, "max_agents": 3, "clip_dim": 8, "scenario_dim": 8}})
    inputs = example_inputs(cfg, batch=1, generator=torch.Generator().manual_seed(5))
    keep = {k: torch.ones(1, dtype=torch.bool) for k in VARIABLES}

    def build():
        torch.manual_seed(0)
        model = WorldModel(cfg).eval()   # no dropout: both passes see the same conditioning
        with torch.no_grad():   # off the zero initialisation, so every parameter has a gradient
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        return model

    _same_gradients_with_checkpointing(build, lambda m: m(**inputs, keep=keep).square().mean())


class Workers:
    """The fields of ``WorkersConfig`` the check reads."""

    def __init__(self, num_workers, cpus_per_worker, use_gpu=False):
        self.num_workers, self.cpus_per_worker, self.use_gpu = num_workers, cpus_per_worker, use_gpu

    def model_copy(self, update):
        return Workers(update.get("num_workers", self.num_workers), update.get("cpus_per_worker", self.cpus_per_worker),
                       self.use_gpu)


def test_workers_that_fit_are_left_alone():
    workers, note = fit_workers(Workers(1, 1), 0.5, {"CPU": 2.0}, local=True)
    assert workers.cpus_per_worker == 1 and note == ""


def test_on_a_local_machine_workers_are_sized_to_leave_the_data_pipeline_room():
    workers, note = fit_workers(Workers(2, 8), 0.5, {"CPU": 2.0}, local=True)
    assert workers.cpus_per_worker == 0.75 and "workers.cpus_per_worker" in note
    assert 2 * workers.cpus_per_worker + 0.5 <= 2.0


@pytest.mark.parametrize("workers, cluster, local, field", [
    (Workers(4, 8), {"CPU": 16.0}, False, "workers.num_workers x workers.cpus_per_worker"),
    (Workers(8, 1), {"CPU": 2.0}, True, "workers.num_workers x workers.cpus_per_worker"),
    (Workers(2, 1, use_gpu=True), {"CPU": 16.0, "GPU": 1.0}, False, "workers.num_workers: 2 workers with "
                                                                    "workers.use_gpu need 2 GPUs"),
])
def test_workers_that_cannot_fit_are_a_config_error_naming_the_fields(workers, cluster, local, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        fit_workers(workers, 0.5, cluster, local=local)
