"""The training spine's driver: one ``run(spec, config)`` for every trainable model (``jobs/specs``).

Resolve and preflight (what the data determines, and the spec's checks, before Ray or MLflow start) -> Ray up and the resource check
(``jobs.resources``) -> the MLflow run (found again by its tags on resume) -> a Ray Train
``TorchTrainer`` running ``jobs.train_loop.train_loop`` on every worker, with checkpointing, failure
handling and the spec's datasets -> the EMA weights of the final checkpoint exported
(``config.json`` + ``model.safetensors``) and registered in MLflow with the alias ``candidate``.

Checkpoints live in ``job.storage`` (a local path or a URI such as s3://bucket/ckpt, which Ray Train writes
through pyarrow); the MLflow run is found by the tags (job name, storage), so resuming needs nothing from
this machine's disk. Local outputs go under ``<workdir>/<model>-jobs/<name>``.

Tracking degrades, it does not kill the job (``jobs.tracking``): rank 0 buffers what it logs while the server is
away (``<local dir>/mlflow-buffer.jsonl``) and flushes it when the server answers again; the driver's own calls
wait for the server up to ``GAIA2_TRACKING_WAIT_S``, flush what rank 0 could not, and then stop with an
``error:`` line naming the server. A job with checkpoints whose run is gone (deleted, or not in this tracking
store) stops with ``RunNotFound`` instead of resuming under a new run. Every URI printed or logged is redacted.
"""

from __future__ import annotations

import dataclasses
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
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from gaia2.export import save_pretrained
    from gaia2.storage import redact
    from jobs import checkpoint as ckpt
    from jobs.registry import register_once
    from jobs.resources import fit_workers, is_local
    from jobs.runtime import init_ray
    from jobs.tracking import (BUFFER_FILE, TrackingConfig, call, flush_buffer, log_config, log_params, mlflow_run,
                               set_tags, tracking_uri)
    from jobs.train_loop import say, train_loop

    tracking = TrackingConfig.from_env()
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
    uri, buffer = tracking_uri(workdir), os.path.join(local_dir, BUFFER_FILE)
    tags = {"gaia2.job_name": name, "gaia2.storage": redact(storage)}
    previous = previous_run(spec.experiment, workdir, tags, storage, name, tracking)
    with mlflow_run(spec.experiment, workdir, run_name=name, run_id=previous, config=tracking,
                    recorded=f"the run of job {name!r}", fix="give the job a new --name to start afresh") as active:
        run_id = active.info.run_id
        if previous is None:
            set_tags(tags, tracking)
            log_config(cfg.model_dump(), tracking)
            log_params({"job_name": name, "storage": storage, **params}, tracking)
        flush_buffer(buffer, uri, tracking)   # what an earlier attempt buffered, before anything new
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"model": spec.name, "config": cfg.model_dump(mode="json"),
                               "tracking_uri": uri, "run_id": run_id, "tracking_buffer": buffer,
                               "tracking": dataclasses.asdict(tracking),
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
        flush_buffer(buffer, uri, tracking)   # what rank 0 could not flush by the end (when it ran on this machine)
        model = spec.build_model(cfg)
        with result.checkpoint.as_directory() as directory:
            step = int(ckpt.read_extra(directory, 0)["step"])
            ckpt.load_module(model, directory, "ema")
        export_dir = save_pretrained(os.path.join(local_dir, "export", spec.artifact), model, spec.export_format,
                                     extra={"step": step, "ema_decay": cfg.optim.ema_decay, "mlflow_run_id": run_id,
                                            **spec.export_extra(cfg)})
        model_name = spec.registered_name(cfg)
        # Retried whole: register_once looks first whether this run registered the step already.
        version = call(lambda: register_once(step, export_dir, model_name, spec.artifact),
                       f"registering {model_name}", uri, tracking, wait=True)
        set_tags({"checkpoint": result.checkpoint.path}, tracking)
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
        return TrainOutcome(run_id, export_dir, model_name, version, metrics, result.checkpoint.path, step)


def previous_run(experiment: str, workdir: str, tags: dict, storage: str, name: str,
                 tracking: Any = None) -> str | None:
    """The id of the job's run to continue, or None for a new job. A job with checkpoints in ``storage`` is a
    resume: if its run was deleted, or the tracking store has none (another store, or it was purged), that is
    ``RunNotFound`` rather than a second run beside the checkpoints' history."""
    from gaia2 import storage as store
    from gaia2.storage import redact
    from jobs.tracking import RunNotFound, find_run, tracking_uri

    run = find_run(experiment, workdir, tags, tracking, deleted=True)
    if run is not None and run.info.lifecycle_stage != "deleted":
        return run.info.run_id
    checkpoints = [d for d in store.list_dirs(store.join(storage, name)) if d.startswith("checkpoint-")]
    if not checkpoints:
        return None   # a new job (a deleted run without checkpoints was abandoned: start afresh)
    where = f"job {name!r} has checkpoints in {redact(store.join(storage, name))} (latest {max(checkpoints)})"
    if run is not None:
        raise RunNotFound(f"{where}, but its MLflow run {run.info.run_id} was deleted in "
                          f"{redact(tracking_uri(workdir))}; restore it (mlflow runs restore --run-id "
                          f"{run.info.run_id}) to resume, or give the job a new --name to start afresh")
    raise RunNotFound(f"{where}, but the tracking store {redact(tracking_uri(workdir))} has no run of it (another "
                      f"store? same --workdir and MLFLOW_TRACKING_URI as before?); give the job a new --name to "
                      f"start afresh")


def summary(spec: ModelSpec, outcome: TrainOutcome, workdir: str) -> str:
    from gaia2.storage import redact
    from jobs.tracking import tracking_uri

    return "\n".join([*spec.summary(outcome.metrics),
                      f"model:      {outcome.export_dir} (EMA weights at step {outcome.step})",
                      f"registered: models:/{outcome.model_name}/{outcome.model_version} (alias @candidate)",
                      f"checkpoint: {redact(outcome.checkpoint)}",
                      f"mlflow:     run {outcome.run_id} in experiment '{spec.experiment}' at "
                      f"{redact(tracking_uri(workdir))}"])


def command(spec: ModelSpec) -> "Command":
    """``gaia2 train <model>`` / ``python -m jobs.train <model>`` for ``spec``."""
    from jobs.options import Command
    from jobs.tracking import TrackingError

    def work(cfg: Any) -> str:
        return summary(spec, run(spec, cfg), cfg.job.workdir)

    return Command(prog=f"python -m jobs.train {spec.name}",
                   description=f"Train the {spec.name} on Ray Train, then export and register its EMA weights",
                   aliases=spec.aliases, presets=spec.presets, build=spec.build_config, work=work,
                   input_errors=(TrackingError,))
