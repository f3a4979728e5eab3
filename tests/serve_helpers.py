"""Deploying the generation service in tests: one Serve instance per session (``serve_http``), one application
per configuration, each under its own route prefix, replicas taking no logical CPUs (the session's Ray has two,
which the Data and Train tests need)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import requests

from gaia2.config.base import deep_merge

TEST_RESOURCES = {"ingress": {"num_cpus": 0}, "generator": {"num_cpus": 0}, "decoder": {"num_cpus": 0}}


@dataclass(frozen=True)
class Served:
    name: str
    url: str          # ends with "/"
    config: object    # jobs.serve.config.ServeConfig

    def __call__(self, path: str) -> str:
        """``"v1/models"``: a path under the application; ``"/prefix/v1/..."``: a link it returned (absolute)."""
        if path.startswith("/"):
            return "/".join(self.url.split("/", 3)[:3]) + path
        return self.url + path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(port: int, name: str, overrides: dict, timeout_s: float = 180.0) -> Served:
    """Run the application ``name`` at ``/<name>/`` (``/`` for "gaia2") and wait until it is ready."""
    from ray import serve

    from jobs.serve.app import build_app
    from jobs.serve.config import load_config

    route = "/" if name == "gaia2" else f"/{name}"
    cfg = load_config("tiny", overrides=deep_merge(deep_merge(TEST_RESOURCES, {"http": {"app_name": name}}),
                                                   overrides))
    serve.run(build_app(cfg), name=name, route_prefix=route, blocking=False)
    served = Served(name, f"http://127.0.0.1:{port}{route.rstrip('/')}/", cfg)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(served("readyz"), timeout=5).status_code == 200:
                return served
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"application {name} not ready in {timeout_s} s")


def undeploy(name: str) -> None:
    from ray import serve

    serve.delete(name)
