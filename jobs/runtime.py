"""Ray start-up shared by the jobs: local by default, a cluster when RAY_ADDRESS is set."""

from __future__ import annotations

import os

# Ray keeps about num_cpus idle workers and kills the others after a second idle (Ray's default). On a small
# machine, beside Ray Data's actors, task workers idle between batches were killed and restarted many times a
# shard build (~2 s of CPU each: python, ray, ray.data); kept for a minute, they are reused instead. Applies
# only to a Ray this process starts: a cluster's settings are its own.
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


def init_ray(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # The dashboard also serves Ray's state API, which Ray Train's placement-group cleaner polls
        # (without it, it logs a warning every few seconds); it is Ray's default anyway.
        ray.init(num_cpus=num_cpus, include_dashboard=True, configure_logging=True, logging_level="warning",
                 _system_config=LOCAL_SYSTEM_CONFIG)
