"""The driver side shared by the training jobs: MLflow run (found again by tags on resume), a Ray Train
``TorchTrainer`` with checkpointing, failure handling and the datasets, and the final checkpoint's state.

Checkpoints live in ``storage`` (a local path or a URI such as s3://bucket/ckpt, which Ray Train writes
through pyarrow); the MLflow run is found by the tags (job name, storage), so resuming needs nothing from
this machine's disk. Local outputs go under ``<workdir>/<kind>-jobs/<name>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

STATE_FILE = "state.pt"


@dataclass
class Training:
    run_id: str
    local_dir: str
    state: dict            # the last checkpoint's state (CPU tensors)
    metrics: dict          # the last report's numeric metrics (final validation)
    checkpoint: str        # its path or URI


def resolve_storage(storage: str | None, workdir: str) -> str:
    if "://" in (storage or ""):
        return storage
    return os.path.abspath(storage or os.path.join(workdir, "ray_results"))


def train(kind: str, experiment: str, name: str, workdir: str, storage: str | None, config: Any,
          train_loop: Callable[[dict], None], datasets: Callable[[], dict], workers: Any, keep_checkpoints: int,
          params: dict, fail_at_step: int | None, after_fit: Callable[[Training], None]) -> Training:
    """Run (or resume) job ``name``; ``after_fit`` runs inside the MLflow run (export, registration).

    ``workers``: num_workers, use_gpu, cpus_per_worker, max_failures; ``config``: a pydantic config (logged as
    params, handed to the loop as JSON); ``datasets``: builds {"train", "val"} (called once Ray is up)."""
    import mlflow
    import ray.data
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from jobs.runtime import init_ray
    from jobs.tracking import find_run, log_config, mlflow_run, tracking_uri

    storage = resolve_storage(storage, workdir)
    local_dir = os.path.join(os.path.abspath(workdir), f"{kind}-jobs", name)
    os.makedirs(local_dir, exist_ok=True)
    tags = {"gaia2.job_name": name, "gaia2.storage": storage}
    previous = find_run(experiment, workdir, tags)
    init_ray()
    with mlflow_run(experiment, workdir, run_name=name, run_id=previous) as active:
        run_id = active.info.run_id
        if previous is None:
            mlflow.set_tags(tags)
            log_config(config.model_dump())
            mlflow.log_params({"job_name": name, "storage": storage, **params})
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"config": config.model_dump(mode="json"), "tracking_uri": tracking_uri(workdir),
                               "run_id": run_id, "fail_at_step": fail_at_step,
                               "fail_marker": os.path.join(local_dir, "injected-failure.marker")},
            scaling_config=ray.train.ScalingConfig(num_workers=workers.num_workers, use_gpu=workers.use_gpu,
                                                   resources_per_worker={"CPU": workers.cpus_per_worker}),
            run_config=ray.train.RunConfig(
                name=name, storage_path=storage,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
                failure_config=ray.train.FailureConfig(max_failures=workers.max_failures)),
            datasets=datasets(),
            dataset_config=ray.train.DataConfig(
                datasets_to_split=["train"],
                execution_options=ray.data.ExecutionOptions(preserve_order=True)),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training job {name!r} finished without a checkpoint")
        with result.checkpoint.as_directory() as ckpt:
            if os.path.exists(os.path.join(ckpt, STATE_FILE)):
                state = torch.load(os.path.join(ckpt, STATE_FILE), map_location="cpu", weights_only=False)
            else:   # a sharded (FSDP) checkpoint: gather it into one state on the CPU
                from jobs.parallelize import full_state_from_sharded

                state = full_state_from_sharded(ckpt)
                state.update(torch.load(os.path.join(ckpt, "extra-0.pt"), weights_only=False))
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
        outcome = Training(run_id, local_dir, state, metrics, result.checkpoint.path)
        after_fit(outcome)
        mlflow.set_tag("checkpoint", result.checkpoint.path)
        return outcome


def register_once(step: int, register: Callable[[], int]) -> int:
    """Register the model of ``step`` in the active run unless this run already did (a rerun of a finished
    job); returns the model version."""
    import mlflow

    done = mlflow.get_run(mlflow.active_run().info.run_id).data.tags
    if done.get("gaia2.registered_step") == str(step):
        return int(done["gaia2.registered_version"])
    version = register()
    mlflow.set_tags({"gaia2.registered_step": str(step), "gaia2.registered_version": version})
    return version


@dataclass
class TrainOutcome:
    run_id: str
    export_dir: str
    model_name: str
    model_version: int
    metrics: dict
    checkpoint: str


def overrides_from(pairs: list[tuple[Any, tuple[str, ...]]]) -> dict:
    """[(value, ("section", "field")), ...] -> nested overrides for the values that are not None."""
    overrides: dict = {}
    for value, path in pairs:
        if value is not None:
            node = overrides
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
    return overrides


def outcome_lines(outcome: TrainOutcome, experiment: str, workdir: str) -> list[str]:
    from jobs.tracking import tracking_uri

    return [f"model:      {outcome.export_dir} (EMA weights)",
            f"registered: models:/{outcome.model_name}/{outcome.model_version} (alias @candidate)",
            f"checkpoint: {outcome.checkpoint}",
            f"mlflow:     run {outcome.run_id} in experiment '{experiment}' at {tracking_uri(workdir)}"]


def execute_job(work: Callable[[], str]) -> int:
    """Run a training job's ``work`` (returns its summary) with the CLI's error contract: a configuration
    error prints ``error: ...`` and returns 2; a training failure past its retries returns 1 and says how
    to resume; anything else is a bug and raises."""
    import sys

    from gaia2.config.base import ConfigError

    try:
        text = work()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        import ray.train

        if not isinstance(err, ray.train.TrainingFailedError):
            raise
        # The workers' tracebacks are already in the log above; checkpoints and the MLflow run are kept.
        print(f"error: training failed: {str(err).splitlines()[0]}\nrun the same command again to resume from "
              f"the last checkpoint", file=sys.stderr)
        return 1
    print(text)
    return 0
