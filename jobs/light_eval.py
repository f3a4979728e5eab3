"""The world-model training job's light evaluation (issue 12): a few generations measured every few steps, logged
beside the losses, so a run shows whether its samples are getting better while it trains.

    eval:                                 # gaia2.world_model.train_config.LightEvalConfig
      every_steps: 500                    # and at the last step; 0: never
      tokenizer: models:/gaia2-tokenizer-paper@candidate
      shards: shards/                     # the pixel shards the latent shards were encoded from
      fdd: models/dinov2-large            # local only

Every ``every_steps`` steps and at the last one, rank 0 takes the EMA weights (gathered from every rank when FSDP
shards them), regenerates the first ``samples`` validation samples from scratch under their own recorded
conditioning (``spec_for_sample``, the evaluation job's specs), decodes them with the tokenizer and computes the
Fréchet DINOv2 distance between their frames and the same samples' real frames (``frames_per_video`` per camera,
spread evenly, as ``pipelines/evaluation/measure.py`` picks them; the real features are computed once per job).
The bootstrap interval resamples whole samples and needs 8 of them (``gaia2.evaluation.frechet``).

Logged at that step: ``eval_fdd`` (``eval_fdd_low`` / ``eval_fdd_high`` with an interval), ``eval_samples``,
``eval_seconds``. A handful of samples gives a noisy, upward-biased distance: a trend within one run, comparable
between runs only at equal settings, never the evaluation job's figure. Misconfiguration is refused before
training starts (``resolve``); a failure during training is a warning line, and training goes on.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from gaia2 import storage
from gaia2.config.base import ConfigError

BOOTSTRAP, LEVEL = 200, 0.95          # the evaluation job's defaults
TOKENIZER_FORMAT = "gaia2-tokenizer"


# ------------------------------------------------------------------------------------------- driver side
def resolve(cfg: Any, local_dir: str, say=print) -> Any:
    """The config with its ``eval`` section checked and made usable by the workers, before Ray starts: absolute
    paths; the tokenizer a local export directory (an MLflow models:/ or runs:/ URI downloaded under
    ``local_dir``); its latent channels (and, when registered, its latent statistics) the model's; DINOv2 a local
    directory whose patch size divides the resolution; the pixel shards holding the val samples evaluated.
    Raises ``ConfigError`` naming the field."""
    e = cfg.eval
    if e.every_steps == 0:
        return cfg
    # Absolute (a URI as it is): rank 0 reads the shards from its own working directory.
    fdd, shards, latents = os.path.abspath(e.fdd), storage.absolute(e.shards), storage.absolute(cfg.data.shards)
    _check_dinov2(fdd, e.resolution)
    _check_shards(shards, latents, e.samples)
    tokenizer = _tokenizer_dir(cfg, local_dir, say)   # last: it may download
    return cfg.model_copy(update={"eval": e.model_copy(update={"tokenizer": tokenizer, "fdd": fdd, "shards": shards}),
                                  "data": cfg.data.model_copy(update={"shards": latents})})


def _tokenizer_dir(cfg: Any, local_dir: str, say) -> str:
    from urllib.parse import urlparse

    from gaia2.export import WEIGHTS_FILE, read_meta
    from jobs.generate import resolve_once
    from jobs.registry import ModelInputError, registered_version, resolve_model

    ref = cfg.eval.tokenizer
    try:
        pinned = registered_version(ref, cfg.job.workdir, "tokenizer")
    except ModelInputError as err:
        raise ConfigError(f"eval.tokenizer: {err}") from None
    if pinned:
        _same_stats(cfg, pinned)   # the version's tags: before anything is downloaded
    try:
        if urlparse(ref).scheme in ("models", "runs"):
            target = os.path.join(local_dir, "eval-tokenizer", _folder_name(pinned or ref))
            os.makedirs(target, exist_ok=True)
            path = resolve_once(pinned or ref, cfg.job.workdir, "tokenizer", target)
            say(f"[world-model] light evaluation: tokenizer {ref} ({pinned or 'run artifact'}) in {path}")
        else:
            path = resolve_model(ref, cfg.job.workdir, "tokenizer")
        meta = read_meta(path, TOKENIZER_FORMAT)
    except (ModelInputError, FileNotFoundError, ValueError) as err:
        raise ConfigError(f"eval.tokenizer: {err}") from None
    if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        raise ConfigError(f"eval.tokenizer: {ref!r}: no {WEIGHTS_FILE} in {path}")
    channels = meta["config"].get("latent_dim")
    if channels != cfg.model.latent_dim:
        raise ConfigError(f"eval.tokenizer: {ref!r} makes latents of {channels} channels, the model takes "
                          f"model.latent_dim = {cfg.model.latent_dim} (give the tokenizer that encoded "
                          f"{cfg.data.shards})")
    return path


def _same_stats(cfg: Any, pinned: str) -> None:
    """A registered tokenizer's latent statistics (its version's tags, when it has them) are the training's."""
    from gaia2.flow.stats import LatentStatsError, require_same
    from jobs.registry import latent_stats_of

    try:
        stats = latent_stats_of(pinned)
        if stats is not None:
            require_same(cfg.flow.latent_mean, cfg.flow.latent_std, stats, "the training (flow.latent_mean / "
                         "flow.latent_std)", f"tokenizer {pinned}")
    except LatentStatsError as err:
        raise ConfigError(f"eval.tokenizer: {err}") from None


def _folder_name(ref: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in ref.split(":/", 1)[-1].strip("/"))


def _check_dinov2(path: str, resolution: list[int] | None) -> None:
    """A DINOv2 ``save_pretrained`` directory with weights, whose patch size divides the resolution (the
    weights are read by the worker, not here)."""
    from gaia2.evaluation.features import EXPECTED, STANDARD_RESOLUTIONS

    if not os.path.isdir(path):
        raise ConfigError(f"eval.fdd: {path!r} is not a directory (expected {EXPECTED['fdd']}; nothing is "
                          f"downloaded)")
    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise ConfigError(f"eval.fdd: {path!r}: no readable config.json ({err})") from None
    if config.get("model_type") != "dinov2":
        raise ConfigError(f"eval.fdd: {path!r}: config.json has model_type {config.get('model_type')!r}, expected "
                          f"'dinov2'")
    if not any(n.endswith((".safetensors", ".bin")) for n in os.listdir(path)):
        raise ConfigError(f"eval.fdd: {path!r}: no weights (model.safetensors)")
    size = resolution or STANDARD_RESOLUTIONS["fdd"]
    patch = int(config.get("patch_size", 14))
    if size[0] % patch or size[1] % patch:
        raise ConfigError(f"eval.resolution: {list(size)} must be multiples of DINOv2's patch size {patch}")


def _check_shards(shards: str, latents: str, samples: int) -> None:
    """The pixel shards' val split holds the val samples the light evaluation takes from the latent shards."""
    from pipelines.evaluation.samples import SampleError, ShardIndex

    keys = val_keys(latents, samples)
    if not keys:
        raise ConfigError(f"data.shards: {storage.redact(latents)!r} has no val samples to evaluate")
    try:
        real = ShardIndex(shards, "val")
    except SampleError as err:
        raise ConfigError(f"eval.shards: {err}") from None
    missing = [k for k in keys if k not in real.where]
    if missing:
        raise ConfigError(f"eval.shards: {storage.redact(shards)!r}: its val split lacks {len(missing)} of the "
                          f"{len(keys)} samples evaluated (e.g. {missing[:3]}); give the pixel shards the latent "
                          f"shards were encoded from")
    try:
        videos = [m for m in real.members(keys[0]) if m.endswith(".mp4")]
    except SampleError as err:
        raise ConfigError(f"eval.shards: {err}") from None
    if not videos:
        raise ConfigError(f"eval.shards: {storage.redact(shards)!r}: sample {keys[0]!r} has no videos (latent "
                          f"shards? give the pixel shards they were encoded from)")


def val_keys(latents: str, samples: int) -> list[str]:
    """The first ``samples`` keys (sorted) of the val split of latent shards ``latents``."""
    from pipelines.evaluation.samples import ShardIndex

    return ShardIndex(latents, "val").keys()[:samples]


# ------------------------------------------------------------------------------------------- the figure
def fdd_distance(real: list[np.ndarray], fake: list[np.ndarray], seed: int):
    """Per-sample feature rows (one (n_i, D) array per sample, both sides in the same sample order) -> the
    Fréchet distance of the pooled rows, with a bootstrap interval resampling whole samples (a video's frames and
    cameras are not independent draws) when there are at least 8 of them (``gaia2.evaluation.frechet.Distance``)."""
    from gaia2.evaluation.frechet import frechet

    groups = [np.concatenate([np.full(len(x), i) for i, x in enumerate(side)]) for side in (real, fake)]
    return frechet(np.concatenate(real), np.concatenate(fake), bootstrap=BOOTSTRAP, level=LEVEL, seed=seed,
                   real_groups=groups[0], fake_groups=groups[1])


def describe(metrics: dict[str, float], resolution: tuple[int, int]) -> str:
    """The progress line's text: ``FDD 12.3 [10.1, 14.2] on 4 samples (DINOv2 448 x 952) in 6.1 s``."""
    interval = (f" [{metrics['eval_fdd_low']:.4g}, {metrics['eval_fdd_high']:.4g}]" if "eval_fdd_low" in metrics
                else " (no interval: fewer than 8 samples)")
    return (f"FDD {metrics['eval_fdd']:.4g}{interval} on {int(metrics['eval_samples'])} samples (DINOv2 "
            f"{resolution[0]} x {resolution[1]}) in {metrics['eval_seconds']:.1f} s")


# ------------------------------------------------------------------------------------------- worker side
class LightEvaluation:
    """Called on every rank at the same steps (``due``); under FSDP every rank takes part in gathering the EMA
    weights, and rank 0 alone generates and measures. Networks, the tokenizer and the real features are loaded on
    rank 0 at the first evaluation and kept."""

    def __init__(self, cfg: Any, ema: nn.Module, device: torch.device, rank: int, sharded: bool) -> None:
        from gaia2.evaluation.features import STANDARD_RESOLUTIONS

        self.cfg, self.e = cfg, cfg.eval
        self.ema, self.device, self.rank, self.sharded = ema, torch.device(device), rank, sharded
        self.resolution = tuple(self.e.resolution or STANDARD_RESOLUTIONS["fdd"])
        self._loaded: dict[str, Any] | None = None
        self._real: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def due(self, step: int) -> bool:
        every = self.e.every_steps
        return every > 0 and (step % every == 0 or step == self.cfg.total_steps)

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The EMA weights, whole, on rank 0 (every rank must call this when they are sharded; the others get {})."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.ema, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.ema.state_dict() if self.rank == 0 else {}

    def __call__(self, step: int) -> tuple[dict[str, float], str] | None:
        """-> (metrics, the progress line's text) on rank 0, None on the others."""
        started = time.perf_counter()
        state = self.ema_state()
        if self.rank != 0:
            return None
        # Generation and model building draw random numbers: keep the training's generators where they were.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), torch.no_grad():
            parts = self._load()
            model = parts["world_model"]
            model.load_state_dict(state)
            del state
            try:
                real, fake = self._measure(model, parts)
            finally:
                model.to("cpu")   # the copy waits on the CPU between evaluations, leaving the device to training
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        d = fdd_distance(real, fake, self.e.seed)
        metrics = {"eval_fdd": d.value, "eval_samples": float(len(fake))}
        if d.low is not None:
            metrics.update(eval_fdd_low=d.low, eval_fdd_high=d.high)
        metrics["eval_seconds"] = time.perf_counter() - started
        return metrics, describe(metrics, self.resolution)

    def _load(self) -> dict[str, Any]:
        if self._loaded is None:
            from gaia2.evaluation.features import load_extractor
            from gaia2.tokenizer.export import load_tokenizer
            from gaia2.world_model.model import WorldModel
            from jobs.generate_batch import latent_sources
            from pipelines.evaluation.samples import ShardIndex

            c, e = self.cfg, self.e
            self._loaded = {
                "world_model": WorldModel(c.model).eval().requires_grad_(False),   # the EMA weights go in here
                "tokenizer": load_tokenizer(e.tokenizer, self.device),
                "extractor": load_extractor("fdd", e.fdd, str(self.device), self.resolution),
                "sources": latent_sources(c.data.shards),
                "real": ShardIndex(e.shards, "val"),
                "keys": val_keys(c.data.shards, e.samples)}
        return self._loaded

    def _measure(self, model: nn.Module, parts: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Generate and decode every sample -> (real, fake) DINOv2 features, one (cameras x frames, D) array per
        sample on each side."""
        from gaia2.generation.generator import Generator
        from gaia2.generation.spec import spec_for_sample
        from pipelines.tokenizer.latents_stages import sample_seed

        c, e = self.cfg, self.e
        precision = c.precision if self.device.type == "cuda" else "fp32"
        gen = Generator(model, parts["tokenizer"], c.flow.latent_mean, c.flow.latent_std, self.device, precision)
        specs = [spec_for_sample(k, c.model.latent_steps, "scratch", seed=sample_seed(e.seed, k),
                                 sampler_steps=e.sampler_steps) for k in parts["keys"]]
        real, fake = [], []
        for result in gen.generate_many(specs, parts["sources"], batch_size=e.batch_size):
            names = tuple(result.request.rig.names)
            fake.append(self._features(parts["extractor"], result.frames))
            real.append(self._real_features(parts, result.request.spec.name, names))
        return real, fake

    def _features(self, extractor, frames: np.ndarray) -> np.ndarray:
        """(N, F, H, W, 3) uint8 -> (N x frames_per_video, D): the measuring stage's frame choice."""
        from pipelines.evaluation.samples import frame_indices

        picks = frame_indices(frames.shape[1], self.e.frames_per_video)
        return extractor.extract(frames[:, picks].reshape(-1, *frames.shape[2:]))

    def _real_features(self, parts: dict[str, Any], key: str, names: tuple[str, ...]) -> np.ndarray:
        """The real video's features of the generated cameras (computed once per job)."""
        from pipelines.evaluation.samples import SampleError, real_video

        if (key, names) not in self._real:
            video = real_video(parts["real"], key)
            have = [c["name"] for c in video.cameras]
            missing = [n for n in names if n not in have]
            if missing:
                raise SampleError(f"sample {key!r}: the pixel shards lack cameras {missing} (they have {have})")
            self._real[key, names] = self._features(parts["extractor"], video.frames[[have.index(n) for n in names]])
        return self._real[key, names]
