import math

import pytest
import torch

from gaia2.flow import (CONTEXT, INPAINT, SCRATCH, TaskSampler, TauSampler, build_inputs, denormalize, euler_sample,
                        flow_loss, grouped_sums, interpolate, linear_quadratic_schedule, normalize, step_tau,
                        tau_buckets, truncate_schedule, velocity_target)
from gaia2.world_model import train_config

PAPER = train_config.paper().flow   # the paper's tau mixture, task probabilities and latent statistics
PAPER_TAU = dict(weights=PAPER.tau_weights, means=PAPER.tau_means, stds=PAPER.tau_stds)


def paper_tasks() -> TaskSampler:
    return TaskSampler(PAPER.p_scratch, PAPER.p_context, PAPER.p_inpaint)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# --- tau distribution -----------------------------------------------------------------------------------------


def test_tau_sampler_has_the_paper_mixture_weights_and_per_mode_moments():
    n = 200_000
    tau, mode = TauSampler(**PAPER_TAU).sample_with_modes(n, gen(0))
    assert tau.shape == (n,) and tau.dtype == torch.float32
    assert bool(((tau > 0) & (tau < 1)).all())
    # mode frequency: standard error sqrt(0.16 / n) ~ 0.0009
    assert abs(mode.float().mean().item() - 0.2) < 0.005
    z = torch.logit(tau.double())
    for k, (mu, sd) in enumerate([(0.5, 1.4), (-3.0, 1.0)]):
        zk = z[mode == k]
        assert abs(zk.mean().item() - mu) < 0.03, k
        assert abs(zk.std().item() - sd) < 0.03, k


def test_tau_sampler_is_deterministic_and_mass_matches_the_closed_form_cdf():
    s = TauSampler(**PAPER_TAU)
    assert torch.equal(s.sample(1000, gen(3)), s.sample(1000, gen(3)))
    assert not torch.equal(s.sample(1000, gen(3)), s.sample(1000, gen(4)))
    tau = s.sample(200_000, gen(1))
    for edge in (0.05, 0.3, 0.62, 0.9):
        z = math.log(edge / (1 - edge))
        cdf = 0.8 * normal_cdf((z - 0.5) / 1.4) + 0.2 * normal_cdf((z + 3.0) / 1.0)
        assert abs((tau < edge).float().mean().item() - cdf) < 0.005, edge
    # the closed-form density integrates to the same cdf (trapezoid on a fine grid)
    grid = torch.linspace(1e-6, 0.62, 200_001, dtype=torch.float64)
    mass = torch.trapezoid(s.pdf(grid), grid).item()
    z = math.log(0.62 / 0.38)
    assert mass == pytest.approx(0.8 * normal_cdf((z - 0.5) / 1.4) + 0.2 * normal_cdf(z + 3.0), abs=1e-4)
    # the second mode puts the density near tau = 0 well above the first mode alone
    assert s.pdf(torch.tensor([0.05], dtype=torch.float64)).item() > 3 * TauSampler(
        (1.0,), (0.5,), (1.4,)).pdf(torch.tensor([0.05], dtype=torch.float64)).item()


@pytest.mark.parametrize("kwargs, field", [(dict(weights=(0.5, 0.4)), "sum to 1"), (dict(stds=(1.0, 0.0)), "stds"),
                                           (dict(means=(0.0,)), "same length")])
def test_tau_sampler_rejects_bad_parameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TauSampler(**{**PAPER_TAU, **kwargs})


# --- objective ------------------------------------------------------------------------------------------------


def test_interpolation_endpoints_per_step_tau_and_velocity_target():
    x = torch.randn(2, 3, 2, 4, 2, 3, generator=gen(0))
    eps = torch.randn(2, 3, 2, 4, 2, 3, generator=gen(1))
    assert torch.equal(interpolate(x, eps, torch.ones(2)), x)
    assert torch.equal(interpolate(x, eps, torch.zeros(2)), eps)
    tau = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.25, 0.0]])
    mixed = interpolate(x, eps, tau)
    assert torch.equal(mixed[0, 0], eps[0, 0]) and torch.equal(mixed[0, 2], x[0, 2])
    assert torch.equal(mixed[1, 0], x[1, 0])
    assert torch.allclose(mixed[1, 1], 0.25 * x[1, 1] + 0.75 * eps[1, 1])
    # the target is d x_tau / d tau
    t, h = torch.tensor([0.3, 0.7]), 1e-2
    slope = (interpolate(x, eps, t + h) - interpolate(x, eps, t)) / h
    assert torch.allclose(slope, velocity_target(x, eps), atol=1e-4)
    with pytest.raises(ValueError, match="tau"):
        interpolate(x, eps, torch.ones(3))


def test_flow_loss_on_a_hand_example_with_a_broadcast_mask():
    # (B, T, N, L, H, W) = (2, 1, 1, 2, 1, 2); the mask (B, T, N, 1, H, W) broadcasts over the latent channels
    target = torch.zeros(2, 1, 1, 2, 1, 2)
    pred = torch.full_like(target, 100.0)              # masked-out elements carry a huge error
    pred[0, 0, 0, :, 0, 0] = torch.tensor([1.0, 2.0])  # sample 0 keeps w = 0: squares 1, 4
    pred[1, 0, 0, :, 0, :] = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # sample 1 keeps both: squares 4, 0, 0, 0
    mask = torch.tensor([[True, False], [True, True]]).reshape(2, 1, 1, 1, 1, 2)
    pred.requires_grad_(True)
    loss, per_sample = flow_loss(pred, target, mask)
    assert loss.item() == pytest.approx((1 + 4 + 4) / 6)
    assert per_sample.tolist() == pytest.approx([2.5, 1.0])
    loss.backward()
    assert bool((pred.grad[0, 0, 0, :, 0, 1] == 0).all())   # no gradient where the mask is False
    full, per = flow_loss(torch.ones(2, 3), torch.zeros(2, 3))
    assert full.item() == 1.0 and per.tolist() == [1.0, 1.0]
    empty, per = flow_loss(torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([[True] * 3, [False] * 3]))
    assert empty.item() == 1.0 and per.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="broadcast"):
        flow_loss(torch.ones(2, 3), torch.zeros(2, 3), torch.ones(3, 2, dtype=torch.bool))


def test_tau_buckets_and_grouped_sums():
    tau = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.99, 1.0])
    assert tau_buckets(tau).tolist() == [0, 0, 1, 2, 3, 3]
    assert tau_buckets(tau, (0.0, 0.1, 1.0)).tolist() == [0, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="edges"):
        tau_buckets(tau, (0.0, 0.5))
    sums, counts = grouped_sums(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 2, 0, 2]), 3)
    assert sums.tolist() == [4.0, 0.0, 6.0] and counts.tolist() == [2.0, 0.0, 2.0]


# --- tasks ----------------------------------------------------------------------------------------------------


def test_task_frequencies_context_lengths_and_masks():
    B, T, N, H, W = 20_000, 6, 2, 4, 8
    batch = paper_tasks().sample(B, T, N, H, W, gen(0))
    task, clean, ctx = batch
    assert clean.shape == (B, T, N, H, W) and clean.dtype == torch.bool
    freq = torch.bincount(task, minlength=3).float() / B
    assert freq.tolist() == pytest.approx([0.7, 0.2, 0.1], abs=0.012)
    assert not bool(clean[task == SCRATCH].any())
    assert bool((ctx[task != CONTEXT] == 0).all())
    # context: t uniform on {1, ..., T-1}, the first t steps clean everywhere, the rest generated everywhere
    c = ctx[task == CONTEXT]
    assert set(c.tolist()) == {1, 2, 3, 4, 5}
    assert (torch.bincount(c, minlength=T)[1:].float() / c.numel()).tolist() == pytest.approx([0.2] * 5, abs=0.03)
    expected = torch.arange(T)[None, :] < c[:, None]
    per_step = clean[task == CONTEXT].flatten(2)
    assert torch.equal(per_step.all(-1), expected) and torch.equal(per_step.any(-1), expected)


def test_inpainting_generates_one_rectangle_per_camera_constant_in_time():
    B, T, N, H, W = 2_000, 3, 3, 4, 8
    batch = TaskSampler(0.0, 0.0, 1.0, p_moving=0.0).sample(B, T, N, H, W, gen(5))
    assert bool((batch.task == INPAINT).all())
    gen_region = ~batch.clean_mask
    assert torch.equal(gen_region, gen_region[:, :1].expand_as(gen_region))   # the same at every time step
    box = gen_region[:, 0]                                                     # (B, N, H, W)
    rows, cols = box.any(-1), box.any(-2)                                      # (B, N, H), (B, N, W)
    assert bool(rows.any(-1).all())                                            # never empty
    # a rectangle: exactly the product of its row and column spans, each span contiguous
    assert torch.equal(box, rows[..., :, None] & cols[..., None, :])
    for span in (rows.long(), cols.long()):
        assert bool(((span[..., 1:] - span[..., :-1]) == 1).sum(-1).le(1).all())
    heights, widths = rows.sum(-1), cols.sum(-1)
    assert set(heights.flatten().tolist()) == set(range(1, H + 1))
    assert set(widths.flatten().tolist()) == set(range(1, W + 1))
    assert heights.float().mean().item() == pytest.approx((H + 1) / 2, abs=0.1)
    assert not torch.equal(box[:, 0], box[:, 1])                               # drawn per camera


def test_inpainting_masks_drift_over_time_like_moving_agents():
    B, T, N, H, W = 4_000, 6, 2, 4, 8
    batch = TaskSampler(0.0, 0.0, 1.0, p_moving=0.5).sample(B, T, N, H, W, gen(11))
    box = ~batch.clean_mask                                                    # (B, T, N, H, W) generated
    rows, cols = box.any(-1), box.any(-2)                                      # (B, T, N, H), (B, T, N, W)
    assert bool(rows.any(-1).all())                                            # never empty at any step
    assert torch.equal(box, rows[..., :, None] & cols[..., None, :])           # a rectangle at every step
    # same size at every step: the box moves, it does not grow
    assert torch.equal(rows.sum(-1), rows[:, :1].sum(-1).expand(-1, T, -1))
    assert torch.equal(cols.sum(-1), cols[:, :1].sum(-1).expand(-1, T, -1))
    top = rows.long().argmax(-1).double()                                      # (B, T, N) first generated row
    left = cols.long().argmax(-1).double()
    moved = (top[:, -1] != top[:, 0]) | (left[:, -1] != left[:, 0])           # (B, N)
    still = (box == box[:, :1]).flatten(2).all(-1).all(-1)                    # (B,) all cameras constant
    # half the masks drift; a drifting box whose start and end cells coincide (or a full-grid one) stays,
    # so slightly fewer than half change place
    assert 0.35 < moved.double().mean().item() < 0.5
    assert bool(still.any())
    # linear drift, rounded to the grid: steps between the ends move monotonically, at most one
    # rounding cell away from the straight line from the start to the end
    frac = torch.linspace(0, 1, T, dtype=torch.float64)[None, :, None]
    line = top[:, :1] + frac * (top[:, -1:] - top[:, :1])
    assert bool(((top - line).abs() <= 0.5 + 1e-9).all())
    line = left[:, :1] + frac * (left[:, -1:] - left[:, :1])
    assert bool(((left - line).abs() <= 0.5 + 1e-9).all())
    with pytest.raises(ValueError, match="p_moving"):
        TaskSampler(0.0, 0.0, 1.0, p_moving=1.5)


def test_task_sampler_is_deterministic_and_consumes_a_fixed_amount_of_randomness():
    a = paper_tasks().sample(64, 4, 2, 3, 5, gen(7))
    b = paper_tasks().sample(64, 4, 2, 3, 5, gen(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    g1, g2 = gen(9), gen(9)
    paper_tasks().sample(16, 4, 2, 3, 5, g1)
    TaskSampler(1.0, 0.0, 0.0).sample(16, 4, 2, 3, 5, g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    with pytest.raises(ValueError, match="sum to 1"):
        TaskSampler(0.5, 0.2, 0.1)
    with pytest.raises(ValueError, match="T >= 2"):
        paper_tasks().sample(4, 1, 2, 3, 5, gen(0))


def test_build_inputs_keeps_clean_latents_and_sets_tau_one_on_context_steps():
    B, T, N, L, H, W = 3, 4, 2, 5, 3, 4
    x = torch.randn(B, T, N, L, H, W, generator=gen(0))
    eps = torch.randn(B, T, N, L, H, W, generator=gen(1))
    tau = torch.tensor([0.3, 0.6, 0.9])
    clean = torch.zeros(B, T, N, H, W, dtype=torch.bool)
    clean[1, :2] = True                 # sample 1: two context steps
    clean[2, :, :, 1:, :] = True        # sample 2: inpainting, row 0 generated
    camera_mask = torch.tensor([[True, True], [True, False], [True, True]])
    x_in, tau_step, loss_mask = build_inputs(x, eps, tau, clean, camera_mask)
    keep = clean[:, :, :, None].expand_as(x)
    assert torch.equal(x_in[keep], x[keep])
    assert torch.allclose(x_in[~keep], interpolate(x, eps, tau)[~keep])
    assert torch.allclose(tau_step, torch.tensor([[0.3] * 4, [1.0, 1.0, 0.6, 0.6], [0.9] * 4]))
    assert loss_mask.shape == (B, T, N, 1, H, W)
    assert torch.equal(loss_mask[0, :, 0, 0], ~clean[0, :, 0]) and torch.equal(loss_mask[2, :, :, 0], ~clean[2])
    assert not bool(loss_mask[1, :, 1].any())      # the dropped camera is out of the loss
    assert bool(loss_mask[1, 2:, 0].all()) and not bool(loss_mask[1, :2].any())
    # the loss of a perfect prediction on the generated part is zero whatever happens on the clean part
    pred = velocity_target(x, eps) + 5.0 * clean[:, :, :, None]
    assert flow_loss(pred, velocity_target(x, eps), loss_mask)[0].item() == 0.0
    assert step_tau(tau, None, T).shape == (B, T)


# --- inference ------------------------------------------------------------------------------------------------


def test_linear_quadratic_schedule_follows_movie_gen():
    taus = linear_quadratic_schedule(50)
    assert taus.shape == (51,) and taus[0].item() == 0.0 and taus[-1].item() == 1.0
    assert bool((taus[1:] > taus[:-1]).all())
    # the first 25 steps are the first 25 of a 1000-step linear schedule
    assert torch.allclose(taus[:26], torch.arange(26, dtype=torch.float64) / 1000)
    # then a quadratic in the step index (constant positive second difference) that starts with the same slope
    a = (25 - 0.025 * 50) / (25 * 25**2)
    second = taus[27:] - 2 * taus[26:-1] + taus[25:-2]
    assert torch.allclose(second, torch.full_like(second, 2 * a))
    assert (taus[26] - taus[25]).item() == pytest.approx(0.001 + a)
    # a hand table: S = 4, threshold 0.1 -> a = 0.2, b = -0.75, c = 0.8
    assert linear_quadratic_schedule(4, threshold=0.1).tolist() == pytest.approx([0.0, 0.05, 0.1, 0.35, 1.0])
    assert linear_quadratic_schedule(1).tolist() == [0.0, 1.0]
    assert torch.allclose(linear_quadratic_schedule(10, threshold=0.5), torch.linspace(0, 1, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match="threshold"):
        linear_quadratic_schedule(50, threshold=0.6)


def test_euler_is_exact_on_straight_paths():
    shape = (2, 3, 2, 4, 2, 3)
    x0, x1 = torch.randn(*shape, generator=gen(0)), torch.randn(*shape, generator=gen(1))
    taus = linear_quadratic_schedule(50)
    seen = []

    def constant(x, tau):
        seen.append(tau)
        return x1 - x0

    assert torch.allclose(euler_sample(constant, x0, taus), x1, atol=1e-5)
    assert len(seen) == 50 and seen[0].shape == (2, 3)
    assert torch.allclose(torch.stack([s[0, 0] for s in seen]).double(), taus[:-1], atol=1e-7)

    # the true velocity towards a single data point, (x1 - x) / (1 - tau), keeps Euler on the straight line
    def towards_x1(x, tau):
        return (x1 - x) / (1 - tau.reshape(*tau.shape, 1, 1, 1, 1))

    assert torch.allclose(euler_sample(towards_x1, x0, linear_quadratic_schedule(7)), x1, atol=1e-5)
    # scene editing: noise the data to tau = 0.6, integrate from there
    edit = truncate_schedule(taus, 0.6)
    assert edit[0].item() == 0.6 and edit[-1].item() == 1.0 and bool((edit[1:] > 0.6).all())
    start = interpolate(x1, x0, torch.full((2,), 0.6))
    assert torch.allclose(euler_sample(towards_x1, start, edit), x1, atol=1e-5)


def test_euler_keeps_clean_latents_fixed_and_marks_context_steps_tau_one():
    shape = (2, 3, 2, 4, 2, 3)
    noise, clean = torch.randn(*shape, generator=gen(0)), torch.randn(*shape, generator=gen(1))
    mask = torch.zeros(2, 3, 2, 2, 3, dtype=torch.bool)
    mask[0, :1] = True                  # context: the first latent step
    mask[1, :, 0, 0, :] = True          # inpainting: camera 0, row 0 kept
    keep = mask[:, :, :, None].expand(shape)
    noisy = gen(2)
    calls = []

    def wild(x, tau):
        calls.append((x[keep].clone(), tau.clone()))
        return 10 * torch.randn(x.shape, generator=noisy)

    out = euler_sample(wild, noise, linear_quadratic_schedule(5), clean=clean, clean_mask=mask)
    assert torch.equal(out[keep], clean[keep])
    assert not torch.allclose(out[~keep], noise[~keep])
    assert all(torch.equal(seen, clean[keep]) for seen, _ in calls)        # the model always sees them clean
    assert all(t[0, 0].item() == 1.0 and t[1, 0].item() < 1.0 for _, t in calls)
    with pytest.raises(ValueError, match="both"):
        euler_sample(wild, noise, linear_quadratic_schedule(5), clean=clean)


def test_normalisation_round_trip():
    x = torch.tensor([0.0, 0.32, -0.64])
    assert (PAPER.latent_mean, PAPER.latent_std) == (0.0, 0.32)
    stats = (PAPER.latent_mean, PAPER.latent_std)
    assert normalize(x, *stats).tolist() == pytest.approx([0.0, 1.0, -2.0])
    assert torch.allclose(denormalize(normalize(x, *stats), *stats), x)
    assert normalize(x, 0.32, 0.32).tolist() == pytest.approx([-1.0, 0.0, -3.0])
    with pytest.raises(ValueError, match="std"):
        normalize(x, 0.0, std=0.0)
