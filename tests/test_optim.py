import math

import pytest
import torch
from torch import nn

from gaia2.optim import EMA, warmup_cooldown_lr, warmup_cosine_lr


def test_tokenizer_schedule_matches_the_paper_table():
    lr = lambda s: warmup_cooldown_lr(s, total=20_000, base=1e-4, warmup=2_500, cooldown=5_000, final=1e-5)  # noqa: E731
    assert lr(0) == pytest.approx(1e-4 / 2500)
    assert lr(1249) == pytest.approx(0.5e-4)
    assert lr(2499) == pytest.approx(1e-4)
    assert lr(10_000) == 1e-4 and lr(14_999) == 1e-4
    assert lr(17_500) == pytest.approx(1e-4 - 0.5 * 9e-5)
    assert lr(20_000) == pytest.approx(1e-5) and lr(30_000) == pytest.approx(1e-5)


def test_world_model_schedule_is_warmup_then_cosine():
    lr = lambda s: warmup_cosine_lr(s, total=102_500, base=5e-5, warmup=2_500, final=6.5e-6)  # noqa: E731
    assert lr(2_499) == pytest.approx(5e-5)
    assert lr(2_500) == pytest.approx(5e-5)
    mid = 2_500 + 50_000
    assert lr(mid) == pytest.approx(6.5e-6 + (5e-5 - 6.5e-6) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr(102_500) == pytest.approx(6.5e-6)
    with pytest.raises(ValueError):
        warmup_cosine_lr(-1, 10, 1.0, 1, 0.0)


def test_ema_follows_the_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))   # moves the batch-norm running statistics
    ema.update(model)
    for e, s in zip(ema.model.parameters(), start):
        assert torch.allclose(e, 0.9 * s + 0.1 * (s + 1.0))
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert not any(p.requires_grad for p in ema.model.parameters())
    clone = EMA(model, decay=0.5)
    clone.load_state_dict(ema.state_dict())
    assert clone.decay == 0.9 and all(torch.equal(a, b) for a, b in zip(clone.model.parameters(), ema.model.parameters()))
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)
    with pytest.raises(TypeError, match="decay"):
        EMA(model)   # no default: the decay comes from the training config (optim.ema_decay)
