"""``gaia2 serve``: the generation service on local Ray (or the cluster of RAY_ADDRESS), until Ctrl-C.

    gaia2 serve [--world-model URI] [--tokenizer URI] [--dataset LATENTS] [--config serve.yaml] [--workdir DIR]
                [--host H] [--port P] [--preset tiny|paper] [--set limits.max_queued=64 ...]

With no model arguments it serves the ``candidate`` versions registered in the work directory's MLflow (after
``gaia2 quickstart --workdir DIR``, that run's models), and takes ``{sample: KEY}`` references from
``<workdir>/latents`` when it holds latent shards. It prints the page, the API docs and a ``curl`` to try.
"""

from __future__ import annotations

import os
import sys
import time

import requests

from gaia2.flow.stats import LatentStatsError
from jobs.options import Alias, Command
from jobs.registry import ModelInputError
from jobs.serve.config import ServeConfig, load_config
from jobs.serve.store import redact

READY_TIMEOUT_S = 600.0


def build(preset: str | None = None, path: str | None = None, overrides: dict | None = None) -> ServeConfig:
    cfg = load_config(preset, path, overrides)
    quickstart_latents = os.path.join(os.path.abspath(cfg.models.workdir), "latents")
    if cfg.dataset is None and os.path.isdir(os.path.join(quickstart_latents, "index")):
        cfg.dataset = quickstart_latents
    return cfg


def url_of(cfg: ServeConfig, host: str | None = None) -> str:
    host = host or ("127.0.0.1" if cfg.http.host in ("0.0.0.0", "::") else cfg.http.host)
    return f"http://{host}:{cfg.http.port}{cfg.http.route_prefix.rstrip('/')}/"


def check_models(cfg: ServeConfig) -> None:
    """The models resolve and pair (named in one line) before any replica starts."""
    from jobs.generate import GenerateJob, model_refs, resolve_models

    job = GenerateJob(world_model=cfg.models.world_model, tokenizer=cfg.models.tokenizer, clip=cfg.models.clip,
                      workdir=cfg.models.workdir)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        resolve_models(model_refs(job, cfg.generator.precision), cfg.models.workdir, tmp)


def start(cfg: ServeConfig) -> str:
    """Start Serve and the application; wait until it answers ``/readyz``; returns its URL."""
    from ray import serve

    from jobs.runtime import init_ray
    from jobs.serve.app import build_app

    check_models(cfg)
    init_ray()
    serve.start(http_options={"host": cfg.http.host, "port": cfg.http.port})
    serve.run(build_app(cfg), name=cfg.http.app_name, route_prefix=cfg.http.route_prefix, blocking=False)
    url = url_of(cfg)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "readyz", timeout=5).status_code == 200:
                return url
        except requests.RequestException:
            pass
        time.sleep(1.0)
    raise ModelInputError(f"the service did not become ready within {READY_TIMEOUT_S:g} s (see the replica logs "
                          f"under /tmp/ray/session_latest/logs/serve/)")


def banner(cfg: ServeConfig, url: str) -> str:
    return "\n".join([
        f"service:  {url}  (application {cfg.http.app_name!r}; Ctrl-C stops it)",
        f"page:     {url}",
        f"API docs: {url}docs  (schema {url}openapi.json)",
        f"models:   {url}v1/models    dataset: {cfg.dataset or 'none (sample references are refused)'}",
        f"results:  {redact(cfg.results_uri)} (kept {cfg.results.ttl_s:g} s, at most {cfg.results.max_bytes} bytes)",
        f"try:      curl -s -X POST '{url}v1/generations?wait=120' -H 'content-type: application/json' "
        f"-d '{{\"rig\": {{\"name\": \"sedan6_30hz\"}}, \"duration\": {{\"latent_steps\": 6}}, "
        f"\"action\": {{\"speed\": 8.0}}, \"sampler\": {{\"steps\": 20}}}}'",
    ])


def serve_forever(cfg: ServeConfig) -> str:
    url = start(cfg)
    print(banner(cfg, url), flush=True)
    return serve_forever_started(cfg)


def serve_forever_started(cfg: ServeConfig) -> str:
    """Block until Ctrl-C, then take the application down."""
    from ray import serve

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    serve.delete(cfg.http.app_name)
    return f"service {cfg.http.app_name!r} stopped"


COMMAND = Command(
    prog="gaia2 serve", description=__doc__.splitlines()[0],
    aliases=(Alias("--world-model", "models.world_model", "world model export directory or MLflow model URI",
                   metavar="URI"),
             Alias("--tokenizer", "models.tokenizer", "tokenizer export directory or MLflow model URI", metavar="URI"),
             Alias("--clip", "models.clip", "CLIP checkpoint directory (text prompts)", metavar="DIR"),
             Alias("--workdir", "models.workdir", "local MLflow database (and the default results directory)"),
             Alias("--dataset", "dataset", "latent shards that {sample: KEY} references name", metavar="LATENTS"),
             Alias("--results", "results.uri", "results directory or object-storage prefix", metavar="URI"),
             Alias("--host", "http.host", "HTTP host"),
             Alias("--port", "http.port", "HTTP port", int)),
    presets=("tiny", "paper"), build=build, work=serve_forever, input_errors=(ModelInputError, LatentStatsError))


def main(argv=None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
