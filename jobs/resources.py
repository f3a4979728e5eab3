"""Resources checked before a training job starts: its workers must leave the data pipeline room.

Ray Train reserves ``num_workers x cpus_per_worker`` CPUs (and a GPU each with ``use_gpu``) for the
whole run; the Ray Data tasks that read and decode the shards need CPUs beside them. A job asking for
more than that waits forever for resources that never come, so it is refused at once naming the fields,
or, on a local machine (Ray started by the job itself, no ``RAY_ADDRESS``), the workers are made smaller
to fit, and the job says so.
"""

from __future__ import annotations

import math
import os
from typing import Any

from gaia2.config.base import ConfigError

MIN_CPUS_PER_WORKER = 0.25


def fit_workers(workers: Any, data_cpus: float, cluster: dict[str, float], local: bool) -> tuple[Any, str]:
    """-> (workers, a note when they were resized). ``workers``: a ``WorkersConfig``; ``data_cpus``: what
    one Ray Data task needs; ``cluster``: ``ray.cluster_resources()``."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    n, per = workers.num_workers, workers.cpus_per_worker
    if workers.use_gpu and n > gpus:
        raise ConfigError(f"workers.num_workers: {n} workers with workers.use_gpu need {n} GPUs; the cluster has "
                          f"{gpus:g}")
    if n * per + data_cpus <= cpus + 1e-9:
        return workers, ""
    room = cpus - data_cpus
    fitted = math.floor(room / n * 100) / 100 if n else 0.0
    if not local or fitted < MIN_CPUS_PER_WORKER:
        raise ConfigError(
            f"workers.num_workers x workers.cpus_per_worker: {n} x {per:g} = {n * per:g} CPUs plus {data_cpus:g} for "
            f"the data pipeline (data.read_cpus) is more than the {cpus:g} CPUs of the cluster; lower "
            f"workers.num_workers or workers.cpus_per_worker"
            + (f" (at most {max(room, 0):g} CPUs are left for the workers)" if room > 0 else ""))
    note = (f"workers.cpus_per_worker: {per:g} x {n} workers would leave the data pipeline no CPU on this "
            f"{cpus:g}-CPU machine; using {fitted:g} per worker")
    return workers.model_copy(update={"cpus_per_worker": fitted}), note


def is_local() -> bool:
    """Ray runs on this machine only (not a cluster reached through RAY_ADDRESS)."""
    import ray

    return not os.environ.get("RAY_ADDRESS") and len(ray.nodes()) <= 1
