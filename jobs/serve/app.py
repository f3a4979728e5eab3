"""The Serve application: ingress -> generator, decoder, with every replica count and resource from the config.

    app = build_app(load_config(path="serve.yaml"))      # serve.run(app, name=..., route_prefix=...)
    serve run jobs.serve.app:build config=cluster/serve.yaml     # Serve's CLI / serve deploy (an app builder)
"""

from __future__ import annotations

import os

from ray import serve

from jobs.serve.config import ServeConfig, generator_user_config, load_config


def _threads(num_cpus: float) -> int:
    return max(1, int(num_cpus)) if num_cpus >= 1 else 1


def build_app(cfg: ServeConfig):
    from jobs.serve.decoder import DecoderDeployment
    from jobs.serve.generator import GeneratorDeployment
    from jobs.serve.ingress import IngressDeployment

    g, d, i = cfg.generator, cfg.decoder, cfg.ingress
    store = cfg.results_uri
    workdir = os.path.abspath(cfg.models.workdir)
    generator = serve.deployment(
        GeneratorDeployment, name="Generator", num_replicas=g.num_replicas,
        ray_actor_options={"num_cpus": g.num_cpus, "num_gpus": g.num_gpus},
        max_ongoing_requests=g.max_ongoing_requests, max_queued_requests=g.max_queued_requests,
        user_config=generator_user_config(cfg), graceful_shutdown_timeout_s=cfg.limits.time_limit_s,
        health_check_timeout_s=120,
    ).bind(store, os.path.abspath(cfg.dataset) if cfg.dataset and "://" not in cfg.dataset else cfg.dataset,
           _threads(g.num_cpus))
    decoder = serve.deployment(
        DecoderDeployment, name="Decoder", num_replicas=d.num_replicas,
        ray_actor_options={"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        max_ongoing_requests=d.max_ongoing_requests, graceful_shutdown_timeout_s=cfg.limits.time_limit_s,
    ).bind(store, workdir, d.device, _threads(d.num_cpus))
    ingress_config = cfg.model_dump()
    # The ingress never restarts for a model switch: what changes with one is only in the generator's user_config.
    ingress_config["models"] = {**ingress_config["models"], "revision": 0, "world_model": None, "tokenizer": None}
    ingress_config["results"] = {**ingress_config["results"], "uri": store}
    return serve.deployment(
        IngressDeployment, name="Ingress", num_replicas=i.num_replicas, ray_actor_options={"num_cpus": i.num_cpus},
        max_ongoing_requests=i.max_ongoing_requests, max_queued_requests=i.max_queued_requests,
        backpressure_config={"status_code": 503, "retry_after_s": cfg.limits.retry_after_s},
        graceful_shutdown_timeout_s=cfg.limits.time_limit_s,
    ).bind(generator, decoder, ingress_config)


def build(args: dict):
    """Serve's app builder (``serve run jobs.serve.app:build config=FILE preset=NAME``): the same application
    from a config file, with ``world_model`` / ``tokenizer`` / ``dataset`` / ``results`` overrides."""
    overrides: dict = {}
    for key in ("world_model", "tokenizer", "clip"):
        if args.get(key):
            overrides.setdefault("models", {})[key] = args[key]
    if args.get("dataset"):
        overrides["dataset"] = args["dataset"]
    if args.get("results"):
        overrides["results"] = {"uri": args["results"]}
    return build_app(load_config(args.get("preset"), args.get("config"), overrides))
