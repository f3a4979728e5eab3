"""Layers shared by the tokenizer and the world model (gaia2.nn): sinusoids against closed forms, the MLP's GELU."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from gaia2.nn import MLP, sincos_2d, sincos_3d, sinusoidal


def test_sinusoidal_matches_the_closed_form_in_both_orders():
    v = torch.tensor([[0.0, 1.0], [2.5, -3.0]])
    out = sinusoidal(v, 4)                                    # w_k = 10000^(-k/4) = 1, 0.1, 0.01, 0.001
    assert out.shape == (2, 2, 8) and out.dtype == torch.float32
    for x, row in zip(v.flatten().tolist(), out.reshape(4, 8).tolist()):
        w = [10.0 ** -k for k in range(4)]
        assert row == pytest.approx([math.cos(x * f) for f in w] + [math.sin(x * f) for f in w], abs=1e-6)
    swapped = sinusoidal(v, 4, sin_first=True)
    assert torch.equal(swapped, torch.cat([out[..., 4:], out[..., :4]], dim=-1))
    assert sinusoidal(torch.tensor(2.0), 2, max_period=16.0).tolist() == pytest.approx(
        [math.cos(2.0), math.cos(0.5), math.sin(2.0), math.sin(0.5)])   # w = 1, 16^(-1/2)


def test_sincos_2d_encodes_row_then_column_and_3d_adds_the_frame():
    h, w, dim = 2, 3, 8                                       # dim/4 = 2 frequencies: 1 and 10000^(-1/2) = 0.01
    grid = sincos_2d(h, w, dim, "cpu")
    assert grid.shape == (h, w, dim)

    def enc(p: float) -> list[float]:
        return [math.sin(p), math.sin(0.01 * p), math.cos(p), math.cos(0.01 * p)]

    for r in range(h):
        for c in range(w):
            assert grid[r, c].tolist() == pytest.approx(enc(r) + enc(c), abs=1e-6)
    video = sincos_3d(4, h, w, dim, "cpu")
    assert video.shape == (4, h, w, dim)
    frame = sinusoidal(torch.arange(4), dim // 2, sin_first=True)   # (T, dim)
    torch.testing.assert_close(video, grid[None] + frame[:, None, None], rtol=0, atol=0)
    assert video[3, 1, 2, 0].item() == pytest.approx(math.sin(1.0) + math.sin(3.0), abs=1e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_mlp_is_linear_gelu_linear(approximate):
    mlp = MLP(1, 1.0, approximate=approximate)
    assert list(mlp.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    with torch.no_grad():
        for layer in (mlp.fc1, mlp.fc2):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    x = torch.tensor([[-2.0], [-0.5], [0.0], [0.7], [3.0]])

    def gelu(v: float) -> float:
        if approximate == "tanh":
            return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
        return v * 0.5 * (1 + math.erf(v / math.sqrt(2)))

    assert mlp(x).flatten().tolist() == pytest.approx([gelu(v) for v in x.flatten().tolist()], abs=1e-6)
    with pytest.raises(ValueError, match="approximate"):
        MLP(4, 2.0, approximate="erf")


def test_each_model_keeps_its_gelu():
    from gaia2.tokenizer import Tokenizer, tiny
    from gaia2.world_model import WorldModel
    from gaia2.world_model import tiny as wm_tiny

    tok, wm = Tokenizer(tiny()), WorldModel(wm_tiny())
    assert {m.approximate for m in tok.modules() if isinstance(m, MLP)} == {"none"}
    assert {m.approximate for m in wm.modules() if isinstance(m, MLP)} == {"tanh"}


def test_the_world_model_does_not_import_the_tokenizer():
    code = ("import sys, gaia2.world_model.model, gaia2.world_model.export; "
            "print(sorted(m for m in sys.modules if m.startswith('gaia2.tokenizer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
