"""Ray start-up shared by the jobs: local by default, a cluster when RAY_ADDRESS is set."""

from __future__ import annotations

import os


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
        ray.init(num_cpus=num_cpus, include_dashboard=True, configure_logging=True, logging_level="warning")
