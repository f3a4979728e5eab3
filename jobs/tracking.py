"""MLflow tracking: local SQLite by default, a server when MLFLOW_TRACKING_URI says so.

One experiment per job kind, one run per job; a resumed job continues its run.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from gaia2.config.base import flatten

# Read once, before anything here calls mlflow.set_tracking_uri, which writes the variable back into
# os.environ: reading it later would send a second job in the same process to the first one's store.
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(workdir: str) -> str:
    return _USER_TRACKING_URI or f"sqlite:///{os.path.abspath(workdir)}/mlflow.db"


@contextmanager
def mlflow_run(experiment: str, workdir: str, run_name: str, run_id: str | None = None) -> Iterator[Any]:
    """Start (or resume, given ``run_id``) a run; artifacts stay under ``workdir`` when tracking locally."""
    import mlflow

    os.makedirs(workdir, exist_ok=True)
    uri = tracking_uri(workdir)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            location = "file://" + os.path.join(os.path.abspath(workdir), "mlartifacts")
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    if run_id is not None:
        try:
            mlflow.get_run(run_id)
        except Exception:   # the run was deleted or lives in another tracking store: start afresh
            run_id = None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name) as run:
        yield run


RUN_FILE = "mlflow_run.json"


@contextmanager
def output_run(experiment: str, workdir: str, out: str) -> Iterator[tuple[Any, bool]]:
    """The MLflow run of a job that writes the directory ``out`` -> (run, is it new). Its id is kept in
    ``out/mlflow_run.json``, so re-running onto the same output (a resume) continues the same run."""
    import json

    run_file = os.path.join(out, RUN_FILE)
    previous = None
    if os.path.exists(run_file):
        with open(run_file) as f:
            previous = json.load(f).get("run_id")
    name = f"{experiment}-{os.path.basename(os.path.abspath(out))}"
    with mlflow_run(experiment, workdir, run_name=name, run_id=previous) as active:
        os.makedirs(out, exist_ok=True)
        with open(run_file, "w") as f:
            json.dump({"run_id": active.info.run_id}, f)
        yield active, previous is None or previous != active.info.run_id


def log_config(config: Mapping[str, Any]) -> None:
    import mlflow

    params = {k: (str(v) if not isinstance(v, (int, float, str, bool)) else v) for k, v in flatten(config).items()}
    mlflow.log_params(params)


class RunLogger:
    """Logs into an existing run from any process (e.g. rank 0 of a Ray Train worker group) without
    touching the run's state: the driver owns start and end, so a worker restart never ends the run."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client, self.run_id = MlflowClient(tracking_uri), run_id

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, path, artifact_path)

    def tags(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            self.client.set_tag(self.run_id, k, str(v))


def find_run(experiment: str, workdir: str, tags: Mapping[str, str]) -> str | None:
    """The most recent live run of ``experiment`` carrying all ``tags``, or None (how a restarted job
    finds its run again without any local state)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(workdir))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0].info.run_id if runs else None
