"""The world model: shapes, identity at initialisation, attention masks, QK-norm, the paper preset's size."""

from __future__ import annotations

import pytest
import torch

from gaia2.config.base import ConfigError
from gaia2.world_model.block import SpaceTimeBlock
from gaia2.world_model.config import world_model_config
from gaia2.world_model.inputs import example_inputs
from gaia2.world_model.model import WorldModel

SMALL = {"dim": 32, "heads": 2, "depth": 2, "cameras": 3, "height": 2, "width": 3, "latent_steps": 3, "latent_dim": 8,
         "conditioning": {"max_cameras": 4, "max_agents": 4, "clip_dim": 8, "scenario_dim": 8}}


def small(**extra):
    return world_model_config("tiny", overrides={**SMALL, **extra})


def _perturbed(model: WorldModel, seed: int = 0) -> WorldModel:
    """Give every parameter (the zero-initialised ones included) a random value, so masks and data flow
    can be tested on a model that is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def test_output_has_the_input_shape_and_starts_at_zero():
    cfg = small()
    model = WorldModel(cfg).eval()
    inputs = example_inputs(cfg, batch=2, generator=torch.Generator().manual_seed(0))
    v = model(**inputs)
    assert v.shape == inputs["x"].shape
    assert torch.count_nonzero(v) == 0   # zero-initialised output projection: v = 0 before training


def test_every_block_is_the_identity_at_initialisation():
    cfg = small()
    block = WorldModel(cfg).blocks[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 3, 2, 3, 32, generator=g)
    pos = torch.randn(2, 3, 3, 2, 3, 32, generator=g)
    cond = torch.randn(2, 3, 32, generator=g)
    tokens = torch.randn(2, 3, 5, 32, generator=g)
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    for blk in WorldModel(cfg).blocks:
        assert torch.equal(blk(x, pos, cond, tokens, mask), x)
    assert isinstance(block, SpaceTimeBlock)


def test_dropped_cameras_do_not_influence_the_others():
    cfg = small()
    model = _perturbed(WorldModel(cfg)).eval()
    inputs = example_inputs(cfg, batch=1, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[True, False, True]])
    v1 = model(**inputs, camera_mask=mask)
    inputs["x"][:, :, 1] += 5.0   # change only the dropped camera's latents
    v2 = model(**inputs, camera_mask=mask)
    torch.testing.assert_close(v1[:, :, [0, 2]], v2[:, :, [0, 2]])
    v3 = model(**inputs)          # without the mask camera 1 does influence the others
    assert not torch.allclose(v3[:, :, [0, 2]], v1[:, :, [0, 2]])


def test_spatial_attention_mixes_cameras_and_temporal_attention_mixes_steps():
    cfg = small()
    model = _perturbed(WorldModel(cfg)).eval()
    inputs = example_inputs(cfg, batch=1, generator=torch.Generator().manual_seed(3))
    v1 = model(**inputs)
    inputs["x"][:, 0, 0, :, 0, 0] += 1.0   # one token: step 0, camera 0, cell (0, 0)
    v2 = model(**inputs)
    changed = (v2 - v1).abs().amax(dim=(3,))   # (B, T, N, H, W)
    assert bool((changed[:, 2, 2] > 1e-6).all())   # another step and camera


def test_qk_norm_bounds_the_logits():
    from gaia2.world_model.layers import QKNormAttention

    attn = QKNormAttention(32, 2, 1e-6)
    x = torch.randn(1, 5, 32) * 1e4   # huge activations: RMS-normalised q and k keep the softmax finite
    assert torch.isfinite(attn(x)).all()


def test_gradients_reach_every_trainable_parameter_after_a_step():
    cfg = small()
    model = _perturbed(WorldModel(cfg)).train()
    inputs = example_inputs(cfg, batch=2, generator=torch.Generator().manual_seed(4))
    # the null speed and curvature embeddings are used by samples 1 and 0
    keep = {"speed": torch.tensor([True, False]), "curvature": torch.tensor([False, True])}
    model(**inputs, keep=keep).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or
                                                                               not torch.any(p.grad != 0))]
    assert missing == []


def test_paper_preset_size_and_tokens():
    from gaia2.world_model.describe import describe

    d = describe("paper")
    assert abs(d["params"] / 8.4e9 - 1) < 0.10, d["params"]
    assert d["tokens"] == 12_600 and d["sample_shape"] == {"T": 6, "N": 5, "H": 14, "W": 30, "L": 64}
    assert d["modules"]["SpaceTimeBlock"] == 22 and d["modules"]["QKNormAttention"] == 66
    assert sum(d["params_breakdown"].values()) == d["params"]
    # Per block: 3 attentions (4 C^2) + MLP (8 C^2) + adaLN (3 C^2) = 23 C^2 (+ biases and norms).
    assert abs(d["params_per_block"] / (23 * 4096 ** 2) - 1) < 0.01
    # Forward FLOPs, by hand: per token and block 18 C^2 multiply-adds (spatial and temporal attention 4 C^2
    # each, cross-attention query and output 2 C^2, MLP 8 C^2), plus the attention products (spatial over
    # S = 2100 tokens per step, temporal over 6 steps, cross to K conditioning tokens) and the cross-attention
    # keys/values of the K tokens per step; adaLN runs once per step. FlopCounter must land within 5%.
    c, m, t, s, k = 4096, 12_600, 6, 2100, 1 + 10 + 5 + 1 + 5 * 64
    per_block = 2 * m * 18 * c * c + 4 * t * s * s * c + 4 * s * t * t * c + 4 * t * s * k * c + 2 * t * k * 2 * c * c
    assert abs(d["flops_forward_per_sample"] / (22 * per_block) - 1) < 0.05
    assert d["flops_per_training_step_per_sample"] == 3 * d["flops_forward_per_sample"]


@pytest.mark.parametrize("overrides, field", [
    ({"dim": 66}, "dim"), ({"heads": 5}, "dim"), ({"cameras": 7}, "cameras"), ({"depth": 0}, "depth"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        world_model_config("tiny", overrides=overrides)
