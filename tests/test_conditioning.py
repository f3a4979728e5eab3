"""Conditioning encoders: symlog closed forms, dropout rates within sampling error, exact null
contributions of dropped variables, shapes / masks, determinism, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from gaia2.conditioning import (CURVATURE_MAX, CURVATURE_SCALE, SPEED_MAX, SPEED_SCALE, VARIABLES, ActionEncoder,
                                AgentEncoder, ClipProjection, ConditioningConfig, ConditioningDropout,
                                ConditioningEncoder, MetadataEncoder, ScenarioProjection, camera_dropout,
                                instance_dropout, normalise_action, symlog)
from gaia2.schema.metadata import AGENT_CATEGORIES, METADATA_KEYS, vocabulary_sizes

B, T, N, A = 3, 2, 2, 4
CFG = ConditioningConfig(max_cameras=3, max_agents=A, clip_dim=5, scenario_dim=7)
DIM = 16
V = len(METADATA_KEYS)


def within(observed: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    """Observed frequency of n Bernoulli(p) draws within ``sigmas`` standard errors of p."""
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def make_cond(seed: int = 0, b: int = B, scenario: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(b, T, N, A, 13, generator=g)
    feats[..., 4:7] = 40 * torch.randn(b, T, N, A, 3, generator=g)           # centre, metres
    feats[..., 12] = torch.randint(1, len(AGENT_CATEGORIES), (b, T, N, A), generator=g).float()
    valid = torch.rand(b, T, N, A, generator=g) < 0.7
    feats[~valid] = 0.0                                                        # padding slots are zeros
    sizes = vocabulary_sizes()
    meta = torch.stack([torch.randint(1, sizes[k], (b,), generator=g) for k in METADATA_KEYS], dim=1)
    cond = {
        "action": torch.stack([30 * torch.rand(b, T, generator=g), 0.02 * torch.randn(b, T, generator=g)], dim=-1),
        "agents": feats, "agents_valid": valid, "metadata": meta,
        "clip": torch.randn(b, N, CFG.clip_dim, generator=g),
    }
    if scenario:
        cond["scenario"] = torch.randn(b, CFG.scenario_dim, generator=g)
    return cond


def encoder(seed: int = 0) -> ConditioningEncoder:
    torch.manual_seed(seed)
    return ConditioningEncoder(CFG, DIM).eval()


# --- symlog (paper eq. 5) -----------------------------------------------------------------------

def test_symlog_speed_by_hand():
    speed = torch.tensor([75.0, 0.0, -75.0, 10.0, 200.0])
    out = symlog(speed, SPEED_SCALE, SPEED_MAX)
    expected = torch.tensor([1.0, 0.0, -1.0, math.log(37.0) / math.log(271.0), 1.0])   # 3.6 * 10 = 36 km/h
    torch.testing.assert_close(out, expected)


def test_symlog_curvature_by_hand():
    curv = torch.tensor([0.1, 0.001, -0.001, 0.0, -1.0])
    out = symlog(curv, CURVATURE_SCALE, CURVATURE_MAX)
    r = math.log(2.0) / math.log(101.0)
    torch.testing.assert_close(out, torch.tensor([1.0, r, -r, 0.0, -1.0]))


def test_normalise_action_applies_each_scale_to_its_component():
    out = normalise_action(torch.tensor([[10.0, 0.001]]))
    torch.testing.assert_close(out, torch.tensor([[math.log(37) / math.log(271), math.log(2) / math.log(101)]]))
    with pytest.raises(ValueError, match="speed, curvature"):
        normalise_action(torch.zeros(2, 3))


# --- dropout rates ------------------------------------------------------------------------------

def test_every_variable_is_dropped_on_its_own():
    # speed and curvature separately, each metadata variable by its name, agents, CLIP, scenario (paper §4)
    assert VARIABLES == ("speed", "curvature", *METADATA_KEYS, "agents", "clip", "scenario")
    assert len(set(VARIABLES)) == len(VARIABLES) == 2 + V + 3


def test_conditioning_dropout_rates_and_determinism():
    n = 40_000
    drop = ConditioningDropout(p_each=0.8, p_all=0.1)
    keep = drop.sample(n, VARIABLES, torch.Generator().manual_seed(1))
    assert set(keep) == set(VARIABLES) and all(k.shape == (n,) and k.dtype == torch.bool for k in keep.values())
    for name, k in keep.items():
        assert within(1 - k.float().mean().item(), 0.1 + 0.9 * 0.8, n), name       # 0.82 per variable
    stacked = torch.stack(list(keep.values()))
    k = len(VARIABLES)
    # All dropped: the joint drop (0.1) or k independent drops (0.9 * 0.8^k).
    assert within((~stacked).all(0).float().mean().item(), 0.1 + 0.9 * 0.8 ** k, n)
    # None dropped: no joint drop, then k independent keeps.
    assert within(stacked.all(0).float().mean().item(), 0.9 * 0.2 ** k, n)
    # Every pair: both kept only without the joint drop, then independently (0.9 * 0.2^2); one kept and the
    # other dropped: 0.9 * 0.2 * 0.8. So speed can be given without curvature, weather without country.
    for i in range(k):
        for j in range(i + 1, k):
            pair = (VARIABLES[i], VARIABLES[j])
            assert within((stacked[i] & stacked[j]).float().mean().item(), 0.9 * 0.2 ** 2, n), pair
            assert within((stacked[i] & ~stacked[j]).float().mean().item(), 0.9 * 0.2 * 0.8, n), pair
    # Exactly one variable kept (e.g. a request that gives only weather): 0.9 * 0.2 * 0.8^(k-1) each.
    only = stacked & (stacked.sum(0) == 1)
    for i, name in enumerate(VARIABLES):
        assert within(only[i].float().mean().item(), 0.9 * 0.2 * 0.8 ** (k - 1), n, sigmas=6.0), name
    again = drop.sample(n, VARIABLES, torch.Generator().manual_seed(1))
    assert all(torch.equal(keep[k], again[k]) for k in VARIABLES)
    with pytest.raises(ValueError, match="p_each"):
        ConditioningDropout(p_each=1.5)


def test_camera_dropout_rate_at_least_one_kept_and_only_valid_cameras():
    n, cams = 20_000, 5
    keep = camera_dropout(n, cams, p=0.1, generator=torch.Generator().manual_seed(2))
    assert keep.shape == (n, cams) and keep.dtype == torch.bool
    assert keep.any(1).all()
    # The rescue of all-dropped samples lowers the rate by 0.1^5 / 5: invisible at this n.
    assert within(1 - keep.float().mean().item(), 0.1, n * cams)

    valid = torch.ones(n, cams, dtype=torch.bool)
    valid[:, 3:] = False            # a 3-camera rig padded to 5
    valid[: n // 2, 1:] = False     # half the samples have one camera
    keep = camera_dropout(n, cams, p=0.1, generator=torch.Generator().manual_seed(3), valid=valid)
    assert not (keep & ~valid).any()
    assert keep[: n // 2, 0].all()  # the only camera is never dropped
    assert within(1 - keep[n // 2:, :3].float().mean().item(), 0.1 - 0.1 ** 3 / 3, (n // 2) * 3)
    with pytest.raises(ValueError, match="at least one valid camera"):
        camera_dropout(2, cams, valid=torch.zeros(2, cams, dtype=torch.bool))


def test_feature_dropout_rate_and_nan_means_missing():
    torch.manual_seed(0)
    enc = AgentEncoder(16, num_cameras_max=2, max_agents=A, feature_dropout=0.3)
    seen = {}
    embed = enc.embed

    def capture(features, missing):
        seen["missing"] = missing
        return embed(features, missing)

    enc.embed = capture
    feats = torch.rand(8, 4, 2, A, 13)
    feats[0, 0, 0, 0, 5] = float("nan")
    valid = torch.ones(8, 4, 2, A, dtype=torch.bool)
    tokens, _ = enc.train()(feats, valid, generator=torch.Generator().manual_seed(4))
    missing = seen["missing"]
    assert within(missing.float().mean().item(), 0.3, missing.numel())
    assert torch.isfinite(tokens).all()
    enc.eval()(feats, valid)
    missing = seen["missing"]
    assert missing.sum() == 1 and missing[0, 0, 0, 0, 5]       # eval: only the NaN is missing


def test_instance_dropout_keeps_n_uniform_on_count_at_a_sampled_step():
    s = 20_000
    valid = torch.zeros(s, 2, 1, 6, dtype=torch.bool)
    valid[:, 0, 0, :4] = True       # step 0: 4 agents
    valid[:, 1, 0, 2] = True        # step 1: 1 agent, not in the first slot
    keep = instance_dropout(valid, torch.Generator().manual_seed(5))
    assert not (keep & ~valid).any()
    n0 = keep[:, 0, 0].sum(-1)
    # Step 0 sampled (1/2): n uniform on 0..4; step 1 sampled (1/2): n uniform on 0..1.
    expected = {0: 0.5 / 5 + 0.5 / 2, 1: 0.5 / 5 + 0.5 / 2, 2: 0.1, 3: 0.1, 4: 0.1}
    for k, p in expected.items():
        assert within((n0 == k).float().mean().item(), p, s), k
    assert torch.equal(keep[:, 0, 0], torch.arange(6) < n0[:, None])   # the first n valid slots
    # Same n at every step (no tracking): at step 1 the single agent is kept iff n >= 1.
    assert torch.equal(keep[:, 1, 0, 2], n0 >= 1)


# --- sub-encoders -------------------------------------------------------------------------------

def test_action_encoder_null_embedding_and_shapes():
    torch.manual_seed(0)
    enc = ActionEncoder(16)
    action = torch.tensor([[[10.0, 0.001], [20.0, -0.01]]]).repeat(2, 1, 1)   # (2, 2, 2)
    out = enc(action, keep=torch.tensor([[True, True], [False, False]]))
    assert out.shape == (2, 2, 16)
    both_null = enc.fc2(torch.nn.functional.silu(enc.null[0] + enc.null[1])).detach()
    torch.testing.assert_close(out[1], both_null.expand(2, 16))
    torch.testing.assert_close(out[0], enc(action[:1])[0])
    assert not torch.allclose(out[0, 0], out[0, 1])
    with pytest.raises(ValueError, match="speed, curvature"):
        enc(action, keep=torch.tensor([True, False]))


def test_speed_and_curvature_are_dropped_on_their_own_and_nan_means_dropped():
    torch.manual_seed(0)
    enc = ActionEncoder(16)
    action = torch.tensor([[[10.0, 0.001], [20.0, -0.01]]])
    other = torch.tensor([[[3.0, 0.001], [25.0, -0.01]]])          # same curvature, another speed
    no_speed = torch.tensor([[False, True]])
    # speed dropped: the output follows curvature alone, whatever the speed was
    torch.testing.assert_close(enc(action, no_speed), enc(other, no_speed), rtol=0, atol=0)
    assert not torch.allclose(enc(action), enc(other))
    # curvature dropped: follows speed alone
    bent = torch.tensor([[[10.0, 0.05], [20.0, 0.02]]])
    no_curv = torch.tensor([[True, False]])
    torch.testing.assert_close(enc(action, no_curv), enc(bent, no_curv), rtol=0, atol=0)
    assert not torch.allclose(enc(action, no_speed), enc(action, no_curv))
    # "unknown" at inference (NaN) is exactly "dropped" in training, per step too
    unknown_speed = action.clone()
    unknown_speed[..., 0] = float("nan")
    torch.testing.assert_close(enc(unknown_speed), enc(action, no_speed), rtol=0, atol=0)
    one_step = action.clone()
    one_step[0, 1, 1] = float("nan")
    out = enc(one_step)
    torch.testing.assert_close(out[0, 0], enc(action)[0, 0], rtol=0, atol=0)
    torch.testing.assert_close(out[0, 1], enc(action, no_curv)[0, 1], rtol=0, atol=0)
    assert torch.isfinite(out).all()


def test_metadata_encoder_dropped_equals_unknown_ids():
    torch.manual_seed(0)
    enc = MetadataEncoder(8)
    ids = torch.ones(2, V, dtype=torch.long)
    keep = torch.ones(2, V, dtype=torch.bool)
    keep[1] = False
    out = enc(ids, keep=keep)
    assert out.shape == (2, V, 8)
    torch.testing.assert_close(out[1], enc(torch.zeros(1, V, dtype=torch.long))[0], rtol=0, atol=0)
    assert not torch.equal(out[0], out[1])
    # Each variable is dropped on its own: dropping weather alone changes only weather's token, to unknown's.
    only = torch.ones(1, V, dtype=torch.bool)
    w = METADATA_KEYS.index("weather")
    only[0, w] = False
    part = enc(ids[:1], keep=only)[0]
    unknown_weather = ids[:1].clone()
    unknown_weather[0, w] = 0
    torch.testing.assert_close(part, enc(unknown_weather)[0], rtol=0, atol=0)
    assert torch.equal(torch.cat([part[:w], part[w + 1:]]), torch.cat([out[0, :w], out[0, w + 1:]]))
    # Each variable has its own table: the same id gives different embeddings per variable.
    assert not torch.equal(out[0, 0], out[0, 1])
    assert [t.num_embeddings for t in enc.tables.values()] == [vocabulary_sizes()[k] for k in METADATA_KEYS]
    with pytest.raises(ValueError, match="keep must be"):
        enc(ids, keep=torch.tensor([True, False]))


def test_projections_shapes_and_camera_slots():
    torch.manual_seed(0)
    clip = ClipProjection(5, 8, max_cameras=3)
    x = torch.randn(2, 1, 5).expand(2, 3, 5)            # the same embedding on every camera
    out = clip(x)
    assert out.shape == (2, 3, 8) and not torch.allclose(out[:, 0], out[:, 1])
    assert ScenarioProjection(7, 8)(torch.randn(4, 7)).shape == (4, 1, 8)
    with pytest.raises(ValueError, match="more than max_cameras"):
        clip(torch.randn(1, 4, 5))


# --- the full encoder ---------------------------------------------------------------------------

def test_shapes_masks_and_token_count():
    enc = encoder()
    cond = make_cond()
    out = enc(cond)
    k = enc.num_tokens(N, A)
    assert k == 1 + V + N + 1 + N * A
    assert out.tokens.shape == (B, T, k, DIM) and out.mask.shape == (B, T, k) and out.mask.dtype == torch.bool
    assert out.action.shape == (B, T, DIM)
    static = 1 + V + N + 1
    assert out.mask[..., :static].all()                                  # nothing dropped at inference
    assert torch.equal(out.mask[..., static:], cond["agents_valid"].flatten(2))   # eval: mask = valid, camera-major
    assert (out.tokens[~out.mask] == 0).all()
    # Static tokens are the same at every step, agent tokens differ.
    assert torch.equal(out.tokens[:, 0, :static], out.tokens[:, 1, :static])


def test_eval_is_deterministic_and_applies_no_dropout():
    enc = encoder()
    cond = make_cond()
    a, b = enc(cond, generator=torch.Generator().manual_seed(0)), enc(cond, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask) and torch.equal(a.action, b.action)


def test_training_dropout_is_reproducible_from_the_generator():
    enc = encoder().train()
    cond = make_cond(b=8)
    run = lambda seed: enc(cond, generator=torch.Generator().manual_seed(seed))   # noqa: E731
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.tokens, c.tokens)
    static = 1 + V + N + 1
    assert not (a.mask[..., static:] & ~cond["agents_valid"].flatten(2)).any()   # instance dropout only removes


def test_dropped_variables_give_exactly_the_null_contribution():
    enc = encoder()
    cond = make_cond()
    static = 1 + V + N + 1
    full = enc(cond)
    drop = {name: torch.tensor([True, False, True]) for name in VARIABLES}
    out = enc(cond, keep=drop)
    # Kept samples are untouched.
    for i in (0, 2):
        assert torch.equal(out.tokens[i], full.tokens[i]) and torch.equal(out.mask[i], full.mask[i])
    # Sample 1: metadata as all-unknown ids, null action, CLIP / scenario / agent tokens masked and zero.
    zero_meta = dict(cond, metadata=torch.zeros_like(cond["metadata"]))
    assert torch.equal(out.tokens[1, :, : 1 + V], enc(zero_meta).tokens[1, :, : 1 + V])
    both_null = enc.action.fc2(torch.nn.functional.silu(enc.action.null[0] + enc.action.null[1])).detach()
    torch.testing.assert_close(out.action[1], both_null.expand(T, -1))
    assert not out.mask[1, :, 1 + V:].any() and out.mask[1, :, : 1 + V].all()
    assert (out.tokens[1, :, 1 + V:] == 0).all()
    # An absent scenario is a dropped one; so is one the sample has no vector for (scenario_valid False).
    invalid = enc(dict(cond, scenario_valid=torch.tensor([True, False, True])))
    assert torch.equal(invalid.mask[:, :, static - 1], torch.tensor([[True] * T, [False] * T, [True] * T]))
    assert (invalid.tokens[1, :, static - 1] == 0).all() and torch.equal(invalid.tokens[0], full.tokens[0])
    no_scen = enc(make_cond(scenario=False), keep={"scenario": torch.tensor([False, True, False])})
    assert not no_scen.mask[..., static - 1].any() and torch.equal(no_scen.tokens[0], enc(
        make_cond(), keep={"scenario": torch.tensor([False, False, False])}).tokens[0])


def test_unknown_clip_and_scenario_vectors_are_exactly_dropped_ones():
    enc = encoder()
    cond = make_cond()
    static = 1 + V + N + 1
    unknown = dict(cond, clip=cond["clip"].clone(), scenario=cond["scenario"].clone())
    unknown["clip"][1] = float("nan")            # sample 1: no CLIP for any camera
    unknown["clip"][2, 0] = float("nan")         # sample 2: none for camera 0 only
    unknown["scenario"][0] = float("nan")        # sample 0: no scenario
    out = enc(unknown)
    dropped = enc(cond, keep={"clip": torch.tensor([True, False, True]), "scenario": torch.tensor([False, True, True])})
    assert torch.equal(out.tokens[:2], dropped.tokens[:2]) and torch.equal(out.mask[:2], dropped.mask[:2])
    assert torch.isfinite(out.tokens).all()
    clip_mask = out.mask[2, 0, 1 + V: 1 + V + N]
    assert clip_mask.tolist() == [False, True] and (out.tokens[2, :, 1 + V] == 0).all()
    assert torch.equal(out.tokens[2, :, static:], dropped.tokens[2, :, static:])


def test_unconditional_encoding_does_not_depend_on_the_inputs():
    enc = encoder()
    keep = enc.unconditional_keep(B)
    assert set(keep) == set(VARIABLES) and not any(k.any() for k in keep.values())
    a, b = enc(make_cond(0), keep), enc(make_cond(1), keep)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask) and torch.equal(a.action, b.action)
    assert a.mask[..., : 1 + V].all() and not a.mask[..., 1 + V:].any()   # only null + unknown metadata attended


def test_camera_valid_masks_padding_cameras_and_k_is_constant():
    enc = encoder()
    cond = make_cond()
    cond["camera_valid"] = torch.tensor([[True, True], [True, False], [True, False]])
    out = enc(cond)
    clip_mask = out.mask[:, 0, 1 + V: 1 + V + N]
    assert torch.equal(clip_mask, cond["camera_valid"])
    agent_mask = out.mask[:, :, 1 + V + N + 1:].reshape(B, T, N, A)
    assert not agent_mask[1:, :, 1].any()
    assert out.tokens.shape[2] == enc.num_tokens(N, A)   # padding keeps K the same for every sample


def test_gradients_reach_every_parameter():
    enc = encoder().train()
    cond = make_cond(b=8)
    keep = {name: torch.arange(8) % 2 == (i % 2) for i, name in enumerate(VARIABLES)}   # mixed kept / dropped
    out = enc(cond, keep, generator=torch.Generator().manual_seed(0))
    (out.tokens.square().sum() + out.action.square().sum()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_inputs_raise_naming_the_problem():
    enc = encoder()
    cond = make_cond()
    with pytest.raises(ValueError, match="missing \\['clip'\\]"):
        enc({k: v for k, v in cond.items() if k != "clip"})
    with pytest.raises(ValueError, match="unknown keep variable"):
        enc(cond, keep={"wether": torch.ones(B, dtype=torch.bool)})
    with pytest.raises(ValueError, match="scenario_valid"):
        enc(dict(cond, scenario_valid=torch.ones(B)))
    with pytest.raises(ValueError, match="agents_valid"):
        enc(dict(cond, agents_valid=cond["agents_valid"][:, :, :, :2]))
    with pytest.raises(ValueError, match="metadata"):
        enc(dict(cond, metadata=cond["metadata"][:, :3]))
    with pytest.raises(ValueError, match="more than max_agents"):
        AgentEncoder(8, 2, 2)(torch.zeros(1, 1, 1, 3, 13), torch.zeros(1, 1, 1, 3, dtype=torch.bool))


def test_a_model_saved_under_an_older_vocabulary_loads_with_its_rows_kept():
    """Vocabulary v2 appended country "SG": a v1 model's tables are a row shorter, and load with their ids intact."""
    from gaia2.conditioning.metadata import MetadataEncoder

    torch.manual_seed(0)
    old = MetadataEncoder(8).state_dict()
    old["tables.country.weight"] = old["tables.country.weight"][:4].clone()    # v1: unknown, GB, US, DE
    enc = MetadataEncoder(8)
    enc.load_state_dict(old)
    assert enc.tables["country"].num_embeddings == vocabulary_sizes()["country"] == 5
    assert torch.equal(enc.tables["country"].weight[:4], old["tables.country.weight"])
    longer = MetadataEncoder(8).state_dict()
    longer["tables.country.weight"] = torch.zeros(6, 8)                          # a newer vocabulary: refused
    with pytest.raises(RuntimeError, match="size mismatch"):
        MetadataEncoder(8).load_state_dict(longer)
