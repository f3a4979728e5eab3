"""The training spine's driver: one ``run(spec, config)`` for every trainable model (``jobs/specs``).

Resolve and preflight (what the data determines, and the spec's checks, before Ray or MLflow start) -> Ray up and the resource check
(``jobs.resources``) -> the MLflow run (found again by its tags on resume) -> a Ray Train
``TorchTrainer`` running ``jobs.train_loop.train_loop`` on every worker, with checkpointing, failure
handling and the spec's datasets -> the EMA weights of the final checkpoint exported
(``config.json`` + ``model.safetensors``) and registered in MLflow with the alias ``candidate``.

Checkpoints live in ``job.storage`` (a local path or a URI such as s3://bucket/ckpt, which Ray Train writes
through pyarrow); the MLflow run is found by the tags (job name, storage), so resuming needs nothing from
this machine's disk. Local outputs go under ``<workdir>/<model>-jobs/<name>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.specs.base import ModelSpec

if TYPE_CHECKING:
    from jobs.options import Command


@dataclass
class TrainOutcome:
    run_id: str
    export_dir: str
    model_name: str
    model_version: int
    metrics: dict          # the last report's numeric metrics (final validation)
    checkpoint: str        # the final checkpoint's path or URI
    step: int


def resolve_storage(storage: str | None, workdir: str) -> str:
    if "://" in (storage or ""):
        return storage
    return os.path.abspath(storage or os.path.join(workdir, "ray_results"))


def run(spec: ModelSpec, cfg: Any) -> TrainOutcome:
    """Train (or resume) the job ``cfg`` describes, then export and register its EMA model."""
    import mlflow
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from gaia2.export import save_pretrained
    from jobs import checkpoint as ckpt
    from jobs.registry import register_once
    from jobs.resources import fit_workers, is_local
    from jobs.runtime import init_ray
    from jobs.tracking import find_run, log_config, mlflow_run, tracking_uri
    from jobs.train_loop import say, train_loop

    cfg = spec.resolve(cfg)
    params = spec.preflight(cfg)
    name, workdir = spec.job_name(cfg), cfg.job.workdir
    init_ray()
    workers, note = fit_workers(cfg.workers, cfg.data.read_cpus, ray.cluster_resources(), is_local())
    if note:
        say(f"[{spec.name}] {note}")
        cfg = cfg.model_copy(update={"workers": workers})
    storage = resolve_storage(cfg.job.storage, workdir)
    local_dir = spec.local_dir(cfg)
    os.makedirs(local_dir, exist_ok=True)
    tags = {"gaia2.job_name": name, "gaia2.storage": storage}
    previous = find_run(spec.experiment, workdir, tags)
    with mlflow_run(spec.experiment, workdir, run_name=name, run_id=previous) as active:
        run_id = active.info.run_id
        if previous is None:
            mlflow.set_tags(tags)
            log_config(cfg.model_dump())
            mlflow.log_params({"job_name": name, "storage": storage, **params})
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"model": spec.name, "config": cfg.model_dump(mode="json"),
                               "tracking_uri": tracking_uri(workdir), "run_id": run_id,
                               "fail_marker": os.path.join(local_dir, "injected-failure.marker")},
            scaling_config=ray.train.ScalingConfig(num_workers=workers.num_workers, use_gpu=workers.use_gpu,
                                                   resources_per_worker={"CPU": workers.cpus_per_worker}),
            run_config=ray.train.RunConfig(
                name=name, storage_path=storage,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.schedule.keep_checkpoints),
                failure_config=ray.train.FailureConfig(max_failures=workers.max_failures)),
            datasets=spec.datasets(cfg),
            dataset_config=ray.train.DataConfig(
                datasets_to_split=["train"],
                execution_options=ray.data.ExecutionOptions(preserve_order=True)),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training job {name!r} finished without a checkpoint")
        model = spec.build_model(cfg)
        with result.checkpoint.as_directory() as directory:
            step = int(ckpt.read_extra(directory, 0)["step"])
            ckpt.load_module(model, directory, "ema")
        export_dir = save_pretrained(os.path.join(local_dir, "export", spec.artifact), model, spec.export_format,
                                     extra={"step": step, "ema_decay": cfg.optim.ema_decay, "mlflow_run_id": run_id,
                                            **spec.export_extra(cfg)})
        model_name = spec.registered_name(cfg)
        version = register_once(step, export_dir, model_name, spec.artifact)
        mlflow.set_tag("checkpoint", result.checkpoint.path)
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
        return TrainOutcome(run_id, export_dir, model_name, version, metrics, result.checkpoint.path, step)


def summary(spec: ModelSpec, outcome: TrainOutcome, workdir: str) -> str:
    from jobs.tracking import tracking_uri

    return "\n".join([*spec.summary(outcome.metrics),
                      f"model:      {outcome.export_dir} (EMA weights at step {outcome.step})",
                      f"registered: models:/{outcome.model_name}/{outcome.model_version} (alias @candidate)",
                      f"checkpoint: {outcome.checkpoint}",
                      f"mlflow:     run {outcome.run_id} in experiment '{spec.experiment}' at {tracking_uri(workdir)}"])


def command(spec: ModelSpec) -> "Command":
    """``gaia2 train <model>`` / ``python -m jobs.train <model>`` for ``spec``."""
    from jobs.options import Command

    def work(cfg: Any) -> str:
        return summary(spec, run(spec, cfg), cfg.job.workdir)

    return Command(prog=f"python -m jobs.train {spec.name}",
                   description=f"Train the {spec.name} on Ray Train, then export and register its EMA weights",
                   aliases=spec.aliases, presets=spec.presets, build=spec.build_config, work=work)
