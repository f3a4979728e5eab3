"""What a trainable model tells the training spine (``jobs/train_driver.py`` on the driver,
``jobs/train_loop.py`` on each worker). Adding a model is writing one subclass of ``ModelSpec`` and listing
it in ``jobs/specs/__init__.py``; the spine gives it the CLI (``--preset``, ``--config``, ``--set`` and
the aliases), the resource check, Ray Train with checkpoints and resume, MLflow logging, validation,
export and registration.

The trainer a spec builds is pure PyTorch (in ``gaia2/``) and implements:

    step: int                                   optimiser steps taken
    stage: str                                  what the progress line shows (e.g. "main", "gan", "flow")
    train_step(batch) -> dict                   one optimiser step; tensors / floats for ``scalars``
    stateful() -> {name: module | (module, optimizer)}   what a checkpoint holds; "ema" is the exported model
    rng_state() -> {name: ByteTensor}           its random generators
    restore(step, rng)                          resume at step (before the tensors are loaded)
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterable

from torch import nn

from jobs.options import Alias

# The flags every training job has, as aliases of config fields.
COMMON_ALIASES = (
    Alias("--name", "job.name", "job name: checkpoints and resume key"),
    Alias("--workdir", "job.workdir", "local MLflow database, artifacts and exports"),
    Alias("--storage", "job.storage", "checkpoint storage, a path or a URI"),
    Alias("--steps", "schedule.steps", "training steps", int),
    Alias("--batch-size", "data.batch_size", "rows per worker and step", int),
    Alias("--workers", "workers.num_workers", "Ray Train workers", int),
    Alias("--gpu", "workers.use_gpu", "one GPU per worker", None),
    Alias("--seed", "seed", "random seed", int),
    Alias("--inject-failure-at", "job.fail_at_step", "testing resume: crash rank 0 once at this step", int, "STEP"),
)


class ModelSpec(ABC):
    """One trainable model. Class attributes name it; methods build its pieces from its typed config."""

    name: ClassVar[str]                 # CLI word and default job-name prefix: "tokenizer", "world-model"
    experiment: ClassVar[str]           # MLflow experiment
    export_format: ClassVar[str]        # config.json "format" of its exports (gaia2.export)
    presets: ClassVar[tuple[str, ...]] = ("tiny", "paper")
    aliases: ClassVar[tuple[Alias, ...]] = ()
    batch_noun: ClassVar[str] = "samples"
    find_unused_parameters: ClassVar[bool] = False   # DDP: some parameters may get no gradient in a step

    # --------------------------------------------------------------------------------- driver side
    @abstractmethod
    def config_type(self) -> type:
        """The model's training config class (a ``gaia2.config.training.TrainConfig``)."""

    @abstractmethod
    def build_config(self, preset: str | None = None, path: str | None = None, overrides: dict | None = None) -> Any:
        """Preset -> YAML file -> overrides, validated (``ConfigError`` names the field)."""

    def resolve(self, cfg: Any) -> Any:
        """The config with what the data determines filled in (e.g. measured latent statistics), checked
        against what the config states; runs first, before Ray or MLflow start."""
        return cfg

    def preflight(self, cfg: Any) -> dict:
        """Checks before Ray starts (data present and fitting the model, pretrained files) -> params to log."""
        return {}

    @abstractmethod
    def datasets(self, cfg: Any) -> dict:
        """{"train", "val"} Ray datasets (called once Ray is up). With ``data.weighted`` the loop reads the
        train split through ``train_epoch`` instead of "train" (which stays the unweighted stream)."""

    @abstractmethod
    def build_model(self, cfg: Any) -> nn.Module:
        """An untrained model of ``cfg`` on the CPU (the export's EMA weights are loaded into it)."""

    def export_extra(self, cfg: Any) -> dict:
        """What the export's config.json carries beside the model config (e.g. latent statistics)."""
        return {}

    def summary(self, metrics: dict) -> list[str]:
        """Lines about the final validation metrics for the job's closing summary."""
        return []

    # --------------------------------------------------------------------------------- worker side
    @abstractmethod
    def trainer(self, cfg: Any, device: Any, rank: int, parallelize: Callable[[nn.Module], nn.Module]) -> Any:
        """The model's trainer (see the module docstring) on ``device``, distributed by ``parallelize``."""

    @abstractmethod
    def train_epoch(self, cfg: Any, epoch: int, rank: int, world: int) -> Any:
        """Worker ``rank``'s part of weighted training ``epoch`` (``data.weighted``): a Ray dataset of the rows
        "train" has, the samples drawn in proportion to the manifest's weights (``pipelines/weighted.py``)."""

    def batch(self, rows: dict) -> Any:
        """A Ray Data batch (dict of CPU tensors) -> the trainer's ``train_step`` input."""
        return rows

    def scalars(self, out: dict) -> dict[str, float]:
        """``train_step``'s output -> the values logged (must include loss, lr, grad_norm)."""
        return {k: float(v) for k, v in out.items()}

    def tokens_per_sample(self, cfg: Any) -> int:
        return 0

    @abstractmethod
    def validate(self, trainer: Any, cfg: Any, batches: Iterable[dict], log: Any) -> tuple[dict[str, float], str]:
        """EMA-model validation over ``batches`` -> (metrics named ``val_*``, the progress line's text).
        ``log`` is rank 0's ``RunLogger`` (for artifacts), None on other ranks."""

    def light_eval(self, trainer: Any, cfg: Any, device: Any, rank: int, sharded: bool) -> Any | None:
        """The training job's light evaluation (a few generations measured every few steps), or None (this
        default: none). Built on every rank, cheaply (what it loads, it loads when first run); it has
        ``due(step) -> bool``, the same on every rank, and is called as ``evaluation(step)`` on every rank where
        due (a sharded EMA is gathered collectively) -> (metrics named ``eval_*``, the progress line's text) on
        rank 0, None on the others. The loop logs the metrics beside the losses; an exception it raises is a
        warning line, never the job's failure."""
        return None

    # --------------------------------------------------------------------------------- serving
    @abstractmethod
    def predict(self, model: nn.Module, model_input: Any) -> Any:
        """The registered pyfunc's ``predict`` (``jobs.registry``)."""

    # --------------------------------------------------------------------------------- helpers
    def job_name(self, cfg: Any) -> str:
        return cfg.job.name or f"{self.name}-{cfg.preset}"

    def local_dir(self, cfg: Any) -> str:
        """Where the driver keeps the job's local outputs (exports, downloads): ``<workdir>/<model>-jobs/<name>``."""
        return os.path.join(os.path.abspath(cfg.job.workdir), f"{self.name}-jobs", self.job_name(cfg))

    def registered_name(self, cfg: Any) -> str:
        return f"gaia2-{self.name}-{cfg.preset}"

    @property
    def artifact(self) -> str:
        return self.name.replace("-", "_")

    @staticmethod
    def require_shards(cfg: Any, produced_by: str) -> None:
        from gaia2.config.base import ConfigError

        if not cfg.data.shards:
            raise ConfigError(f"data.shards: required (pass --shards DIR, a `{produced_by}` output)")
        from gaia2 import storage

        try:
            found = storage.is_dir(cfg.data.shards) or bool(storage.list_files(cfg.data.shards, recursive=False))
        except OSError as err:   # no such bucket, no credentials, a bad URI
            raise ConfigError(f"data.shards: {storage.redact(cfg.data.shards)!r} cannot be read ({err})") from None
        if not found:
            raise ConfigError(f"data.shards: {storage.redact(cfg.data.shards)!r} is not a directory")
