"""Ray Train job: train the latent world model on latent shards with flow matching (paper section 4),
then export and register it.

    python -m jobs.train_world_model --shards LATENTS [--preset tiny|paper] [--config FILE] [--name NAME]
    gaia2 train world-model --shards LATENTS ...

A ``TorchTrainer`` with ``workers.num_workers`` workers fed by Ray Data streaming from the latent shards
(``gaia2 encode-latents``; samples converted to the latent rate on Data tasks). Checkpoints go to
``<storage>/<name>/``; a worker failure restarts the group from the last checkpoint and running the job
again with the same name and storage resumes it, in the same MLflow run (experiment ``world_model``). At
the end the EMA weights are exported (``<workdir>/world-model-jobs/<name>/export/world_model``) and
registered as ``gaia2-world-model-<preset>`` with the alias ``candidate``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from gaia2.config.base import ConfigError
from gaia2.world_model.train_config import WorldModelTrainConfig, train_config
from jobs.train_driver import TrainOutcome, execute_job, outcome_lines, overrides_from

EXPERIMENT = "world_model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", help="latent shard directory (overrides data.shards)")
    p.add_argument("--preset", help="tiny (default, CPU) or paper")
    p.add_argument("--config", help="YAML overrides on top of the preset (may name its own `preset:`)")
    p.add_argument("--name", help="job name: checkpoints and resume key (default: world-model-<preset>)")
    p.add_argument("--steps", type=int, help="training steps (schedule.steps)")
    p.add_argument("--batch-size", type=int, help="samples per worker and step (data.batch_size)")
    p.add_argument("--workers", type=int, help="Ray Train workers (workers.num_workers)")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker (workers.use_gpu)")
    p.add_argument("--seed", type=int)
    p.add_argument("--storage", help="checkpoint storage (default: <workdir>/ray_results; a URI on a cluster)")
    p.add_argument("--workdir", default=os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                   help="where the local MLflow database and artifacts live (default: ./gaia2-work)")
    p.add_argument("--inject-failure-at", type=int, metavar="STEP",
                   help="testing resume: crash rank 0 once at this step (after its checkpoint, if any)")


def resolve_config(args: argparse.Namespace) -> WorldModelTrainConfig:
    pairs = [(args.shards, ("data", "shards")), (args.steps, ("schedule", "steps")),
             (args.batch_size, ("data", "batch_size")), (args.workers, ("workers", "num_workers")),
             (args.gpu, ("workers", "use_gpu")), (args.seed, ("seed",))]
    return train_config(preset=args.preset, path=args.config, overrides=overrides_from(pairs))


def preflight(cfg: WorldModelTrainConfig) -> dict:
    """Checks before Ray starts: the latent shards exist and their samples fit the model's shapes."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipelines.world_model.train_data import DataError, first_sample, split_files

    if not cfg.data.shards:
        raise ConfigError("data.shards: required (pass --shards DIR, a `gaia2 encode-latents` output)")
    if not os.path.isdir(cfg.data.shards):
        raise ConfigError(f"data.shards: {cfg.data.shards!r} is not a directory")
    m = cfg.model
    counts = {}
    try:
        for split in ("train", "val"):
            sample = first_sample(split_files(cfg.data.shards, split)[0])
            t, n, lat, h, w = sample["latents.npy"].shape
            if (t, lat, h, w) != (m.frames, m.latent_dim, m.height, m.width):
                raise ConfigError(f"model: the shards' latents are (T, L, H, W) = {(t, lat, h, w)}, the model takes "
                                  f"{(m.frames, m.latent_dim, m.height, m.width)} (model.frames / latent_dim / "
                                  f"height / width)")
            if n < m.cameras:
                raise ConfigError(f"model.cameras: {m.cameras}, but {split} samples have {n} cameras")
            if sample["clip.npy"].shape[-1] != m.clip_dim:
                raise ConfigError(f"model.clip_dim: {m.clip_dim}, the shards' CLIP embeddings have "
                                  f"{sample['clip.npy'].shape[-1]}")
    except DataError as err:
        raise ConfigError(str(err)) from None
    manifest = os.path.join(cfg.data.shards, "manifest.parquet")
    if os.path.isfile(manifest):
        splits = pq.read_table(manifest, columns=["split"]).column("split")
        counts = {s: int(pc.sum(pc.equal(splits, s)).as_py() or 0) for s in ("train", "val")}
        if counts["train"] < cfg.data.batch_size * cfg.workers.num_workers:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} x {cfg.workers.num_workers} workers is more "
                              f"than the {counts['train']} training samples")
    return counts


def run(cfg: WorldModelTrainConfig, name: str, workdir: str, storage: str | None = None,
        fail_at_step: int | None = None) -> TrainOutcome:
    from gaia2.world_model.export import save_world_model
    from gaia2.world_model.model import WorldModel
    from jobs.train_driver import register_once, train
    from jobs.world_model_loop import train_loop
    from jobs.world_model_registry import log_and_register
    from pipelines.world_model.train_data import sample_dataset, split_files

    counts = preflight(cfg)
    d, m = cfg.data, cfg.model

    def datasets() -> dict:
        return {"train": sample_dataset(split_files(d.shards, "train"), m.cameras, m.max_agents, d.read_cpus),
                "val": sample_dataset(split_files(d.shards, "val"), m.cameras, m.max_agents, d.read_cpus)
                .limit(d.val_samples)}

    result: dict = {}

    def export(training) -> None:
        model = WorldModel(cfg.model)
        model.load_state_dict(training.state["ema"]["model"])
        step = int(training.state["step"])
        result["export_dir"] = save_world_model(os.path.join(training.local_dir, "export", "world_model"), model,
                                                extra={"step": step, "ema_decay": cfg.optim.ema_decay,
                                                       "mlflow_run_id": training.run_id,
                                                       "latent_mean": cfg.flow.latent_mean,
                                                       "latent_std": cfg.flow.latent_std})
        result["model_name"] = f"gaia2-world-model-{cfg.preset}"
        result["version"] = register_once(step, lambda: log_and_register(result["export_dir"], result["model_name"]))

    training = train("world-model", EXPERIMENT, name, workdir, storage, cfg, train_loop, datasets, cfg.workers,
                     cfg.schedule.keep_checkpoints, {f"{k}_samples": v for k, v in counts.items()},
                     fail_at_step, export)
    return TrainOutcome(training.run_id, result["export_dir"], result["model_name"], result["version"],
                        training.metrics, training.checkpoint)


def summary(outcome: TrainOutcome, workdir: str) -> str:
    m = outcome.metrics
    lines = outcome_lines(outcome, EXPERIMENT, workdir)
    if "val_loss" in m:
        lines.insert(0, f"validation: flow loss {m['val_loss']:.4f} (constant-velocity baseline "
                        f"{m['val_baseline_loss']:.4f}, improvement {m['val_improvement']:.3f})")
    return "\n".join(lines)


def execute(args: argparse.Namespace) -> int:
    def work() -> str:
        cfg = resolve_config(args)
        outcome = run(cfg, args.name or f"world-model-{cfg.preset}", args.workdir, args.storage,
                      fail_at_step=args.inject_failure_at)
        return summary(outcome, args.workdir)

    return execute_job(work)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train_world_model", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
