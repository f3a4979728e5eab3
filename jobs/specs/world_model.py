"""The latent world model on the training spine (paper section 4): latent shards -> fixed-shape samples
at the latent rate (on Ray Data), ``WorldModelTrainer`` (flow matching), the loss logged by tau bucket
and task, validation of the EMA model against the best constant-velocity predictor, exported and
registered as ``gaia2-world-model-<preset>``."""

from __future__ import annotations

from typing import Any, Iterable

from gaia2.config.base import ConfigError
from jobs.options import Alias
from jobs.specs.base import COMMON_ALIASES, ModelSpec


class WorldModelSpec(ModelSpec):
    name = "world-model"
    experiment = "world_model"
    export_format = "gaia2-world-model"
    aliases = (Alias("--shards", "data.shards", "latent shard directory (`gaia2 encode-latents` output)"),
               *COMMON_ALIASES,
               Alias("--eval-every", "eval.every_steps", "light evaluation (FDD of a few generations) every N steps "
                     "and at the end; 0: never", int, "N"),
               Alias("--eval-tokenizer", "eval.tokenizer", "light evaluation: the tokenizer that encoded the latents "
                     "(export directory or models:/ URI)", str, "MODEL"),
               Alias("--eval-shards", "eval.shards", "light evaluation: the pixel shards the latents were encoded "
                     "from", str, "DIR"),
               Alias("--eval-fdd-net", "eval.fdd", "light evaluation: DINOv2 directory (local)", str, "DIR"))
    # A conditioning input absent from the data (e.g. no scenario embeddings) leaves its encoder without a
    # gradient, which DDP must be told to expect.
    find_unused_parameters = True

    def config_type(self) -> type:
        from gaia2.world_model.train_config import WorldModelTrainConfig

        return WorldModelTrainConfig

    def build_config(self, preset=None, path=None, overrides=None):
        from gaia2.world_model.train_config import train_config

        return train_config(preset=preset, path=path, overrides=overrides)

    def resolve(self, cfg):
        """The latent statistics, measured on the tokenizer's latents (the shards' ``latent_stats.json``): filled
        in where the config leaves them null, and explicit values that differ from them refused. Then the light
        evaluation's inputs checked, its tokenizer fetched into the job's local directory (``jobs.light_eval``)."""
        from jobs import light_eval

        return light_eval.resolve(self._resolve_stats(cfg), self.local_dir(cfg))

    def _resolve_stats(self, cfg):
        from gaia2.flow.stats import STATS_FILE, LatentStatsError, read_stats, require_same
        from pipelines.world_model.train_data import PRODUCED_BY

        self.require_shards(cfg, PRODUCED_BY)
        f, shards = cfg.flow, cfg.data.shards
        try:
            stats = read_stats(shards)
        except LatentStatsError as err:
            raise ConfigError(f"data.shards: {err}") from None
        if stats is None:
            if f.measured:
                raise ConfigError(
                    f"data.shards: {shards!r} has no {STATS_FILE} (latent shards written before statistics were "
                    f"measured): run `gaia2 latents stats {shards}`, or give flow.latent_mean and flow.latent_std")
            return cfg
        if stats.channels != cfg.model.latent_dim:
            raise ConfigError(f"model.latent_dim: {cfg.model.latent_dim}, but {shards}/{STATS_FILE} measured "
                              f"{stats.channels} latent channels")
        if f.measured:
            return cfg.model_copy(update={"flow": f.model_copy(update={"latent_mean": stats.mean,
                                                                       "latent_std": stats.std})})
        try:
            require_same(f.latent_mean, f.latent_std, stats, "flow.latent_mean / flow.latent_std: the config",
                         f"the tokenizer that wrote {shards} ({STATS_FILE})")
        except LatentStatsError as err:
            raise ConfigError(f"{err}; set both to null to use the measured ones") from None
        return cfg

    def preflight(self, cfg) -> dict:
        """The latent shards exist, their samples fit the model's shapes, the batch fits the split, the scenario
        table (if any) fits the model and covers training samples."""
        from pipelines.world_model.train_data import MEMBERS, PRODUCED_BY, DataError, first_sample, split_counts, \
            split_files

        self.require_shards(cfg, PRODUCED_BY)
        params = {}
        m, c = cfg.model, cfg.model.conditioning
        try:
            for split in ("train", "val"):
                sample = first_sample(split_files(cfg.data.shards, split, PRODUCED_BY)[0], MEMBERS)
                t, n, lat, h, w = sample["latents.npy"].shape
                if (t, lat, h, w) != (m.latent_steps, m.latent_dim, m.height, m.width):
                    raise ConfigError(
                        f"model: the shards' latents are (T, L, H, W) = {(t, lat, h, w)}, the model takes "
                        f"{(m.latent_steps, m.latent_dim, m.height, m.width)} (model.latent_steps / latent_dim / "
                        f"height / width)")
                if n < m.cameras:
                    raise ConfigError(f"model.cameras: {m.cameras}, but {split} samples have {n} cameras")
                if sample["clip.npy"].shape[-1] != c.clip_dim:
                    raise ConfigError(f"model.conditioning.clip_dim: {c.clip_dim}, the shards' CLIP embeddings "
                                      f"have {sample['clip.npy'].shape[-1]}")
            counts = split_counts(cfg.data.shards, PRODUCED_BY)
            if cfg.data.scenario:
                params.update(self._check_scenario(cfg))
        except DataError as err:
            raise ConfigError(str(err)) from None
        if counts["train"] < cfg.data.batch_size * cfg.workers.num_workers:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} x {cfg.workers.num_workers} workers is more "
                              f"than the {counts['train']} training samples")
        return {**params, **{f"{k}_samples": v for k, v in counts.items()}}

    @staticmethod
    def _check_scenario(cfg) -> dict:
        from pipelines.splits import read_manifest
        from pipelines.world_model.scenario import check_table
        from pipelines.world_model.train_data import PRODUCED_BY

        manifest = read_manifest(cfg.data.shards, PRODUCED_BY, ["key", "split"])
        keys: dict[str, list[str]] = {"train": [], "val": []}
        for key, split in zip(manifest.column("key").to_pylist(), manifest.column("split").to_pylist()):
            keys.setdefault(split, []).append(key)
        return check_table(cfg.data.scenario, cfg.model.conditioning.scenario_dim, keys)

    def datasets(self, cfg) -> dict:
        import os

        from pipelines.world_model.train_data import PRODUCED_BY, sample_dataset, split_files

        d, m = cfg.data, cfg.model

        scenario = os.path.abspath(d.scenario) if d.scenario else None

        def split(name: str):
            files = split_files(d.shards, name, PRODUCED_BY)
            return sample_dataset(files, m.cameras, m.conditioning.max_agents, d.read_cpus, d.read_batch,
                                  scenario, m.conditioning.scenario_dim)

        return {"train": split("train"), "val": split("val").limit(d.val_samples)}

    def train_epoch(self, cfg, epoch, rank, world):
        import os

        from pipelines.world_model.train_data import weighted_sample_dataset

        d, m = cfg.data, cfg.model
        return weighted_sample_dataset(d.shards, m.cameras, m.conditioning.max_agents, d.read_cpus, d.read_batch,
                                       cfg.seed, epoch, rank, world, os.path.abspath(d.scenario) if d.scenario else None,
                                       m.conditioning.scenario_dim)

    def build_model(self, cfg):
        from gaia2.world_model.model import WorldModel

        return WorldModel(cfg.model)

    def export_extra(self, cfg) -> dict:
        # Latent statistics travel with the model: generation normalises and denormalises with them, and
        # refuses a tokenizer whose statistics differ.
        return {"latent_mean": cfg.flow.latent_mean, "latent_std": cfg.flow.latent_std}

    def summary(self, metrics: dict) -> list[str]:
        m, lines = metrics, []
        if "val_loss" in m:
            lines.append(f"validation: flow loss {m['val_loss']:.4f} (constant-velocity baseline "
                         f"{m['val_baseline_loss']:.4f}, improvement {m['val_improvement']:.3f})")
        if "eval_fdd" in m:
            interval = f" [{m['eval_fdd_low']:.4g}, {m['eval_fdd_high']:.4g}]" if "eval_fdd_low" in m else ""
            lines.append(f"light evaluation: FDD {m['eval_fdd']:.4g}{interval} on {int(m['eval_samples'])} "
                         f"samples")
        return lines

    def trainer(self, cfg, device, rank, parallelize):
        from gaia2.world_model.trainer import WorldModelTrainer

        return WorldModelTrainer(cfg, device=device, rank=rank, parallelize=parallelize)

    def scalars(self, out: dict) -> dict[str, float]:
        """Loss, lr, grad norm, and the loss by tau bucket and by task (this worker's batch; buckets with no
        sample are left out)."""
        from gaia2.flow.tasks import TASK_NAMES
        from gaia2.world_model.trainer import TAU_EDGES

        values = {"loss": float(out["loss"]), "lr": float(out["lr"]), "grad_norm": float(out["grad_norm"])}
        for k in range(len(TAU_EDGES) - 1):
            if out["tau_count"][k] > 0:
                name = f"loss_tau_{TAU_EDGES[k]:.2f}_{TAU_EDGES[k + 1]:.2f}"
                values[name] = float(out["tau_sum"][k] / out["tau_count"][k])
        for k, name in enumerate(TASK_NAMES):
            if out["task_count"][k] > 0:
                values[f"loss_task_{name}"] = float(out["task_sum"][k] / out["task_count"][k])
        return values

    def tokens_per_sample(self, cfg) -> int:
        return cfg.model.tokens

    def validate(self, trainer, cfg, batches: Iterable[dict], log) -> tuple[dict[str, float], str]:
        out = {f"val_{k}": v for k, v in trainer.evaluate(batches, max_samples=cfg.data.val_samples).items()}
        return out, self.summary(out)[0].removeprefix("validation: ")

    def light_eval(self, trainer, cfg, device, rank, sharded):
        if cfg.eval.every_steps == 0:
            return None
        from jobs.light_eval import LightEvaluation

        return LightEvaluation(cfg, trainer.ema.model, device, rank, sharded)

    def predict(self, model, model_input: dict) -> Any:
        """A dict of the forward pass's inputs as arrays (x, tau, timestamps, the conditioning keys,
        intrinsics / extrinsics / distortion) -> the predicted velocity (B, T, N, L, H, W) as numpy."""
        import torch

        from gaia2.world_model.trainer import CAMERA_KEYS, COND_KEYS

        t = {k: torch.as_tensor(v) for k, v in model_input.items()}
        with torch.no_grad():
            v = model(t["x"].float(), t["tau"].float(), {k: t[k] for k in COND_KEYS if k in t},
                      t["timestamps"].float(), {k: t[k].float() for k in CAMERA_KEYS})
        return v.numpy()
