"""The measuring helpers of benchmarks/generation.py: the floor it divides by is the sampler's own model call."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.generation import (expected_cost_ratio, forward_block, overhead, recording,  # noqa: E402
                                   requests, timed)
from gaia2.generation.generator import Generator  # noqa: E402
from gaia2.world_model.config import tiny  # noqa: E402
from gaia2.world_model.model import WorldModel  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gen():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the benchmark's default; several threads on a busy 2-core machine are ~10x slower
    torch.manual_seed(0)
    wm = WorldModel(tiny())
    torch.nn.init.normal_(wm.latent_out.weight, std=0.1)   # v != 0, so the replay check below can fail
    yield Generator(wm, None, 0.0, 1.0, CPU)
    torch.set_num_threads(threads)


def test_expected_cost_ratio_counts_windows():
    # W = 6, k = 3: 1 window for 6 steps, 3 for 12, 7 for 24 (each later window adds W - k = 3 steps)
    assert expected_cost_ratio(6, 6) == 1.0
    assert expected_cost_ratio(12, 6) == pytest.approx((3 / 12) / (1 / 6))   # 1.5
    assert expected_cost_ratio(24, 6) == pytest.approx((7 / 24) / (1 / 6))   # 1.75


def test_overhead_against_the_floor():
    assert overhead(1.1, 10, 0.1) == pytest.approx(0.1)
    assert overhead(1.0, 10, 0.1) == pytest.approx(0.0)


def test_timed_measures_wall_time():
    t = timed(lambda: time.sleep(0.05), CPU)
    assert 0.05 <= t.wall < 1.0 and t.cpu < t.wall   # sleeping takes no CPU time


def test_recorded_call_is_the_samplers(gen):
    reqs = requests(gen, 2, gen.geometry.window, 1)
    model = gen.sampler.model
    with recording(gen.sampler) as calls:
        out = gen.sample(reqs)
    assert gen.sampler.model is model and len(calls) == 1 and calls[0].batch == 2
    # One Euler step from noise (tau 0 -> 1): x1 = x0 + v(x0); statistics 0 / 1, so raw = normalised.
    x0 = calls[0].args[0]
    v = calls[0](model)
    assert not torch.equal(v, torch.zeros_like(v))
    np.testing.assert_allclose(np.stack(out), (x0 + v).numpy(), rtol=1e-5, atol=1e-5)
    assert forward_block(calls[0], model, 2, CPU).wall > 0


def test_guided_call_doubles_the_batch(gen):
    reqs = requests(gen, 1, gen.geometry.window, 2, guidance_scale=3.0)
    with recording(gen.sampler) as calls:
        gen.sample(reqs)
    assert len(calls) == 2 and all(c.batch == 2 for c in calls)
