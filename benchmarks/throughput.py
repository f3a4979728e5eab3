"""Shared by the training-throughput benchmarks: steps/s over equal intervals, from the job's MLflow run."""

from __future__ import annotations


def harmonic_rate(rates: list[float]) -> float:
    """Equal-length intervals at these steps/s -> steps/s over all of them (total steps over total time)."""
    return len(rates) / sum(1.0 / r for r in rates)


def job_steps_per_s(workdir: str, run_id: str) -> float:
    """A training job's ``steps_per_s`` history (one value per logging interval), the first interval
    (start-up) left out."""
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri

    history = MlflowClient(tracking_uri(workdir)).get_metric_history(run_id, "steps_per_s")
    return harmonic_rate([m.value for m in sorted(history, key=lambda m: m.step)][1:])
