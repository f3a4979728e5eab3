"""Conditioning reaches the world model's output (issue 4): a small ``WorldModel`` is trained briefly, from
its real (zero-gated) initialisation, with the real flow-matching objective on synthetic latents that
depend on every conditioning input. Then, in eval mode, for each input:

- changing it changes the predicted velocity (of that sample only);
- with its variable dropped (per-sample keep False), changing it changes nothing, exactly;
- with every variable dropped, the prediction is the unconditional one whatever the conditioning;
- dropped equals absent / null where "absent" has a meaning (no scenario, no valid agent, unknown metadata,
  NaN speed or curvature).

Each variable is dropped on its own: speed and curvature separately, each metadata variable by name.

An untrained model predicts v = 0 for every input, so none of this could be seen without the training.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor

from gaia2.conditioning import VARIABLES, normalise_action
from gaia2.embedding import camera_slots
from gaia2.flow import TaskSampler, TauSampler, build_inputs, flow_loss, velocity_target
from gaia2.schema.metadata import AGENT_CATEGORIES, METADATA_KEYS, vocabulary_sizes
from gaia2.world_model.config import WorldModelConfig, world_model_config
from gaia2.world_model import train_config
from gaia2.world_model.model import WorldModel

SMALL = {"dim": 32, "heads": 2, "depth": 2, "cameras": 3, "height": 2, "width": 3, "latent_steps": 3, "latent_dim": 8,
         "conditioning": {"max_cameras": 4, "max_agents": 4, "clip_dim": 8, "scenario_dim": 8}}
STEPS, BATCH, LR = 60, 16, 3e-3
NOISE_STD = 0.1
# A changed input must move the prediction by more than this (max |dv| over a sample, v of order 1); the
# trained model's effects are ~1e-2 and more. "Unchanged" is to EXACT (dropped inputs reach no arithmetic).
CHANGED = 1e-3
EXACT = 1e-6

Inputs = dict   # WorldModel.forward keyword arguments: x, tau, cond, timestamps, camera


def config() -> WorldModelConfig:
    return world_model_config("tiny", overrides=SMALL)


class SyntheticWorld:
    """Random conditioning and latents that are a fixed function of all of it, plus noise:

        x = a(action) + g(agents) + m(metadata) + c(CLIP) + s(scenario) + k(camera) + t(timestamps) + noise

    each term (B, T, N, L, H, W) of standard deviation ~0.5, so the flow loss rewards reading every input.
    The maps are random but fixed by ``seed``.
    """

    def __init__(self, cfg: WorldModelConfig, seed: int = 0) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        l, h, w = cfg.latent_dim, cfg.height, cfg.width

        def proj(d_in: int) -> Tensor:
            return torch.randn(d_in, l, generator=g) / d_in ** 0.5

        self.pattern = torch.randn(l, h, w, generator=g)             # spatial layout every term is drawn with
        self.w_action = proj(2)
        self.w_agents = proj(5)
        self.w_clip = proj(cfg.conditioning.clip_dim)
        self.w_scenario = proj(cfg.conditioning.scenario_dim)
        self.w_camera = proj(4 + 12 + 5)
        self.w_time = proj(2)
        self.meta_tables = {k: torch.randn(n, l, generator=g) / len(METADATA_KEYS) ** 0.5
                            for k, n in vocabulary_sizes().items()}

    def conditioning(self, batch: int, g: torch.Generator) -> tuple[dict, Tensor, dict]:
        """-> cond dict, timestamps (B, T, N) per camera, camera dict, with plausible random values."""
        cfg = self.cfg
        b, t, n, a = batch, cfg.latent_steps, cfg.cameras, cfg.conditioning.max_agents
        feats = torch.rand(b, t, n, a, 13, generator=g)
        feats[..., 4:7] = 20 * torch.randn(b, t, n, a, 3, generator=g)          # centre in the camera frame (m)
        feats[..., 7:10] = 1 + 4 * torch.rand(b, t, n, a, 3, generator=g)       # size (m)
        yaw = 6.2832 * torch.rand(b, t, n, a, generator=g)
        feats[..., 10], feats[..., 11] = yaw.sin(), yaw.cos()
        feats[..., 12] = torch.randint(1, len(AGENT_CATEGORIES), (b, t, n, a), generator=g).float()
        valid = torch.rand(b, t, n, a, generator=g) < 0.6
        feats[~valid] = 0.0
        sizes = vocabulary_sizes()
        metadata = torch.stack([torch.randint(1, sizes[k], (b,), generator=g) for k in METADATA_KEYS], dim=1)
        cond = {
            "action": torch.stack([30 * torch.rand(b, t, generator=g), 0.03 * torch.randn(b, t, generator=g)], -1),
            "agents": feats, "agents_valid": valid, "metadata": metadata,
            "clip": torch.randn(b, n, cfg.conditioning.clip_dim, generator=g),
            "scenario": torch.randn(b, cfg.conditioning.scenario_dim, generator=g),
        }
        spacing = 0.2 + 0.4 * torch.rand(b, 1, generator=g)                      # seconds between latent steps
        grid = (torch.arange(t, dtype=torch.float32) - (t - 1)) * spacing       # (B, T), 0 = the present
        offset = 0.05 * torch.rand(b, 1, n, generator=g)                       # each camera's trigger offset
        timestamps = grid[:, :, None] + offset                                  # (B, T, N)
        angle = 6.2832 * torch.rand(b, n, generator=g)                           # camera yaw on the rig
        extrinsics = torch.eye(4).repeat(b, n, 1, 1)
        extrinsics[..., 0, 0], extrinsics[..., 0, 1] = angle.cos(), -angle.sin()
        extrinsics[..., 1, 0], extrinsics[..., 1, 1] = angle.sin(), angle.cos()
        extrinsics[..., :3, 3] = torch.randn(b, n, 3, generator=g)
        camera = {"intrinsics": 0.5 + torch.rand(b, n, 4, generator=g), "extrinsics": extrinsics,
                  "distortion": 0.1 * torch.randn(b, n, 5, generator=g)}
        return cond, timestamps, camera

    def latents(self, cond: dict, timestamps: Tensor, camera: dict, g: torch.Generator) -> Tensor:
        """-> x (B, T, N, L, H, W)."""
        cfg = self.cfg
        action = normalise_action(cond["action"]) @ self.w_action                            # (B, T, L)
        valid = cond["agents_valid"].float()[..., None]                                      # (B, T, N, A, 1)
        boxes = torch.cat([cond["agents"][..., :4], torch.ones_like(cond["agents"][..., :1])], -1)
        agents = (boxes * valid).sum(3) / cfg.conditioning.max_agents @ self.w_agents                      # (B, T, N, L)
        meta = sum(self.meta_tables[k][cond["metadata"][:, i]] for i, k in enumerate(METADATA_KEYS))   # (B, L)
        clip = cond["clip"] @ self.w_clip                                                    # (B, N, L)
        scenario = cond["scenario"] @ self.w_scenario                                        # (B, L)
        geometry = torch.cat([camera["intrinsics"], camera["extrinsics"][..., :3, :].flatten(-2),
                              camera["distortion"]], -1) @ self.w_camera                      # (B, N, L)
        time = torch.stack([timestamps, (timestamps * 3).sin()], -1) @ self.w_time           # (B, T, N, L)
        per_token = (action[:, :, None] + agents + meta[:, None, None] + clip[:, None]
                     + scenario[:, None, None] + geometry[:, None] + time)                   # (B, T, N, L)
        x = 0.5 * per_token[..., None, None] * self.pattern
        return x + NOISE_STD * torch.randn(x.shape, generator=g)


class Trained:
    """The trained model, the synthetic world, the loss per step."""

    def __init__(self, model: WorldModel, world: SyntheticWorld, losses: list[float]) -> None:
        self.model, self.world, self.losses = model, world, losses

    @torch.no_grad()
    def predict(self, inputs: Inputs, keep: dict[str, Tensor] | None = None) -> Tensor:
        return self.model(**inputs, keep=keep)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The ops are tiny: on a shared 2-core machine, OpenMP workers spinning against other processes make
    this module several times slower with two threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> Trained:
    """A few dozen AdamW steps of the real training step: tau from the bimodal logit-normal, a task per
    sample (scratch / context / inpaint), camera dropout, conditioning dropout, the masked flow loss."""
    cfg = config()
    with torch.random.fork_rng():
        torch.manual_seed(0)                       # the model's initialisation
        model = WorldModel(cfg).train()
    world = SyntheticWorld(cfg, seed=1)
    g = torch.Generator().manual_seed(2)
    f = train_config.paper().flow
    taus = TauSampler(f.tau_weights, f.tau_means, f.tau_stds)
    tasks = TaskSampler(f.p_scratch, f.p_context, f.p_inpaint, f.moving_inpaint)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.0)
    losses = [train_step(model, opt, world, taus, tasks, g) for _ in range(STEPS)]
    return Trained(model.eval(), world, losses)


def train_step(model: WorldModel, opt: torch.optim.Optimizer, world: SyntheticWorld, taus: TauSampler,
               tasks: TaskSampler, g: torch.Generator) -> float:
    """One step of the training objective on a fresh synthetic batch -> its flow loss."""
    cfg = model.cfg
    cond, timestamps, camera = world.conditioning(BATCH, g)
    x = world.latents(cond, timestamps, camera, g)
    eps = torch.randn(x.shape, generator=g)
    task = tasks.sample(BATCH, cfg.latent_steps, cfg.cameras, cfg.height, cfg.width, g)
    camera_mask = model.conditioning.sample_camera_keep(BATCH, cfg.cameras, g)
    flow = build_inputs(x, eps, taus.sample(BATCH, g), task.clean_mask, camera_mask)
    keep = model.conditioning.sample_keep(BATCH, g)
    v = model(flow.x_in, flow.tau, cond, timestamps, camera, keep=keep, camera_mask=camera_mask, generator=g)
    loss, _ = flow_loss(v, velocity_target(x, eps), flow.loss_mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def base_inputs(world: SyntheticWorld, seed: int = 3, batch: int = 2) -> Inputs:
    """Two samples from scratch at tau = 0.5 (partly noised latents); every sample has valid agents."""
    g = torch.Generator().manual_seed(seed)
    cond, timestamps, camera = world.conditioning(batch, g)
    x = world.latents(cond, timestamps, camera, g)
    tau = torch.full((batch,), 0.5)
    x_in = 0.5 * x + 0.5 * torch.randn(x.shape, generator=g)
    assert bool(cond["agents_valid"].flatten(1).any(1).all())
    return {"x": x_in, "tau": tau[:, None].expand(batch, world.cfg.latent_steps).clone(), "cond": cond,
            "timestamps": timestamps, "camera": camera}


def clone(inputs: Inputs) -> Inputs:
    return {k: ({kk: vv.clone() for kk, vv in v.items()} if isinstance(v, dict) else v.clone())
            for k, v in inputs.items()}


# --- how each input is changed: in place, in the samples selected by s only ---------------------------

def _speed(i: Inputs, s: slice) -> None:
    a = i["cond"]["action"]
    a[s, ..., 0] = 30.0 - a[s, ..., 0]


def _curvature(i: Inputs, s: slice) -> None:
    a = i["cond"]["action"]
    a[s, ..., 1] = 0.05 - a[s, ..., 1]


def _agent_features(i: Inputs, s: slice) -> None:
    f = i["cond"]["agents"]
    f[s, ..., :4] = 1.0 - f[s, ..., :4]                                       # boxes mirrored in the image
    f[s, ..., 4:7] = -f[s, ..., 4:7]
    f[s, ..., 12] = (f[s, ..., 12] % (len(AGENT_CATEGORIES) - 1)) + 1         # another category


def _agent_validity(i: Inputs, s: slice) -> None:
    i["cond"]["agents_valid"][s] = ~i["cond"]["agents_valid"][s]


def _metadata(name: str) -> Callable[[Inputs, slice], None]:
    """Another known value of one metadata variable."""
    k = METADATA_KEYS.index(name)
    size = vocabulary_sizes()[name]

    def how(i: Inputs, s: slice) -> None:
        ids = i["cond"]["metadata"]
        ids[s, k] = ids[s, k] % (size - 1) + 1
    return how


def _clip(i: Inputs, s: slice) -> None:
    i["cond"]["clip"][s] = -i["cond"]["clip"][s]


def _clip_text(i: Inputs, s: slice) -> None:
    """A text prompt's embedding stands in for the per-camera image embeddings: one vector in every camera
    slot (``gaia2.embedding.camera_slots``); changed to another prompt's."""
    clip = i["cond"]["clip"]
    g = torch.Generator().manual_seed(11)
    text = torch.nn.functional.normalize(torch.randn(clip.shape[-1], generator=g), dim=0) * clip.shape[-1] ** 0.5
    clip[s] = camera_slots(text, clip.shape[1])[0]


def _scenario(i: Inputs, s: slice) -> None:
    i["cond"]["scenario"][s] = -i["cond"]["scenario"][s]


def _intrinsics(i: Inputs, s: slice) -> None:
    i["camera"]["intrinsics"][s] = 1.5 * i["camera"]["intrinsics"][s]


def _extrinsics(i: Inputs, s: slice) -> None:
    e = i["camera"]["extrinsics"]
    e[s, :, :3, :3] = e[s, :, :3, :3].transpose(-1, -2).clone()            # the opposite yaw
    e[s, :, :3, 3] = e[s, :, :3, 3] + 2.0


def _distortion(i: Inputs, s: slice) -> None:
    i["camera"]["distortion"][s] = -i["camera"]["distortion"][s] + 0.1


def _timestamps(i: Inputs, s: slice) -> None:
    i["timestamps"][s] = 2.0 * i["timestamps"][s]                             # twice the step spacing


def _one_camera_timestamps(i: Inputs, s: slice) -> None:
    i["timestamps"][s, :, 0] = i["timestamps"][s, :, 0] + 0.1                # camera 0 triggers 100 ms later


# (input changed, the conditioning variable that drops it or None, how)
CHANGES: list[tuple[str, str | None, Callable[[Inputs, slice], None]]] = [
    ("speed", "speed", _speed),
    ("curvature", "curvature", _curvature),
    ("agent_features", "agents", _agent_features),
    ("agent_validity", "agents", _agent_validity),
    *[(f"metadata_{k}", k, _metadata(k)) for k in METADATA_KEYS],
    ("clip", "clip", _clip),
    ("clip_text", "clip", _clip_text),
    ("scenario", "scenario", _scenario),
    ("camera_intrinsics", None, _intrinsics),
    ("camera_extrinsics", None, _extrinsics),
    ("camera_distortion", None, _distortion),
    ("timestamps", None, _timestamps),
    ("timestamps_one_camera", None, _one_camera_timestamps),
]
DROPPABLE = [c for c in CHANGES if c[1] is not None]


def changed(inputs: Inputs, how: Callable[[Inputs, slice], None], samples: slice = slice(None)) -> Inputs:
    out = clone(inputs)
    how(out, samples)
    return out


def per_sample_change(a: Tensor, b: Tensor) -> Tensor:
    """(B,) max |a - b| over each sample."""
    return (a - b).abs().flatten(1).amax(1)


def keep_all_but(name: str, dropped: list[bool]) -> dict[str, Tensor]:
    keep = {v: torch.ones(len(dropped), dtype=torch.bool) for v in VARIABLES}
    keep[name] = ~torch.tensor(dropped)
    return keep


# --- tests ----------------------------------------------------------------------------------------

def test_training_lowered_the_loss_and_the_model_is_no_longer_zero(trained):
    first, last = sum(trained.losses[:5]) / 5, sum(trained.losses[-5:]) / 5
    assert last < 0.8 * first, trained.losses
    v = trained.predict(base_inputs(trained.world))
    assert v.abs().amax() > 0.1


def test_the_variables_cover_every_droppable_input():
    assert sorted({c[1] for c in DROPPABLE}) == sorted(VARIABLES)


@pytest.mark.parametrize("name, variable, how", CHANGES, ids=[c[0] for c in CHANGES])
def test_changing_an_input_changes_that_samples_prediction(trained, name, variable, how):
    inputs = base_inputs(trained.world)
    v = trained.predict(inputs)
    v_changed = trained.predict(changed(inputs, how, slice(0, 1)))   # sample 0 only
    diff = per_sample_change(v, v_changed)
    assert diff[0] > CHANGED, f"{name}: max |dv| = {diff[0]:.2e}"
    assert diff[1] <= EXACT, f"{name}: sample 1 moved by {diff[1]:.2e} though only sample 0 changed"


@pytest.mark.parametrize("name, variable, how", DROPPABLE, ids=[c[0] for c in DROPPABLE])
def test_a_dropped_variable_is_ignored(trained, name, variable, how):
    inputs = base_inputs(trained.world)
    keep = keep_all_but(variable, dropped=[True, False])   # sample 0 dropped, sample 1 conditioned
    v = trained.predict(inputs, keep)
    diff = per_sample_change(v, trained.predict(changed(inputs, how), keep))   # both samples changed
    assert diff[0] <= EXACT, f"{name} dropped, yet the prediction moved by {diff[0]:.2e}"
    assert diff[1] > CHANGED, f"{name} kept: max |dv| = {diff[1]:.2e}"
    # Dropping it changes the prediction (it was being read), and only in the dropped sample.
    diff_keep = per_sample_change(v, trained.predict(inputs))
    assert diff_keep[0] > CHANGED and diff_keep[1] <= EXACT


def test_everything_dropped_is_the_unconditional_prediction(trained):
    inputs = base_inputs(trained.world, seed=3)
    other = base_inputs(trained.world, seed=4)
    other = {**inputs, "cond": other["cond"]}            # all conditioning different, same latents and geometry
    del other["cond"]["scenario"]                        # and no scenario at all
    uncond = trained.model.conditioning.unconditional_keep(2)
    v = trained.predict(inputs, uncond)
    torch.testing.assert_close(trained.predict(other, uncond), v, rtol=0, atol=EXACT)
    v_cond = trained.predict(inputs)
    assert per_sample_change(v, v_cond).min() > CHANGED   # the conditioning matters
    # In one batch (as classifier-free guidance batches its two passes): sample 0 unconditional, 1 conditioned.
    mixed = trained.predict(inputs, {name: torch.tensor([False, True]) for name in VARIABLES})
    torch.testing.assert_close(mixed[0], v[0], rtol=0, atol=EXACT)
    torch.testing.assert_close(mixed[1], v_cond[1], rtol=0, atol=EXACT)


def _no_scenario(i: Inputs) -> None:
    del i["cond"]["scenario"]


def _no_valid_agent(i: Inputs) -> None:
    i["cond"]["agents_valid"][:] = False


def _unknown(name: str) -> Callable[[Inputs], None]:
    k = METADATA_KEYS.index(name)

    def absent(i: Inputs) -> None:
        i["cond"]["metadata"][:, k] = 0
    return absent


def _unknown_speed(i: Inputs) -> None:
    i["cond"]["action"][..., 0] = float("nan")


def _unknown_curvature(i: Inputs) -> None:
    i["cond"]["action"][..., 1] = float("nan")


def _no_scenario_vector(i: Inputs) -> None:
    i["cond"]["scenario_valid"] = torch.zeros(len(i["x"]), dtype=torch.bool)


def _unknown_clip(i: Inputs) -> None:
    i["cond"]["clip"][:] = float("nan")


def _unknown_scenario(i: Inputs) -> None:
    i["cond"]["scenario"][:] = float("nan")


ABSENT = [("scenario", _no_scenario), ("scenario", _no_scenario_vector), ("scenario", _unknown_scenario),
          ("clip", _unknown_clip), ("agents", _no_valid_agent),
          ("speed", _unknown_speed), ("curvature", _unknown_curvature),
          *[(k, _unknown(k)) for k in METADATA_KEYS]]


@pytest.mark.parametrize("variable, absent", ABSENT, ids=[a[1].__name__.strip("_") for a in ABSENT])
def test_dropped_equals_absent(trained, variable, absent):
    inputs = base_inputs(trained.world)
    dropped = trained.predict(inputs, keep_all_but(variable, dropped=[True, True]))
    without = clone(inputs)
    absent(without)
    torch.testing.assert_close(trained.predict(without), dropped, rtol=0, atol=EXACT)


def test_shifting_one_cameras_timestamps_changes_that_cameras_prediction(trained):
    inputs = base_inputs(trained.world)
    v = trained.predict(inputs)
    v_shifted = trained.predict(changed(inputs, _one_camera_timestamps, slice(0, 1)))
    per_camera = (v - v_shifted).abs().transpose(1, 2).flatten(2).amax(2)        # (B, N)
    assert per_camera[0, 0] > CHANGED, f"camera 0 moved by {per_camera[0, 0]:.2e}"
    assert per_camera[1].max() <= EXACT
    # and the model sees each camera's own time: giving every camera camera 1's times is another prediction
    shared = clone(inputs)
    shared["timestamps"][:] = shared["timestamps"][:, :, 1:2]
    assert per_sample_change(v, trained.predict(shared)).min() > CHANGED
