"""The service's configuration: models, dataset, results store, limits, authentication, and each deployment's
resources. One typed config (``gaia2.config.base``): presets ``tiny`` (this machine) and ``paper`` (GPUs), a YAML
file (``cluster/serve-config.yaml``'s ``args.config``), ``--set`` overrides. Every error names the field.

What may change while serving (``revision`` bumped, or the alias moved) reaches the generator and decoder
through their ``user_config`` (``generator_user_config``), so that Serve reconfigures their replicas in place:
the ingress, which holds the accepted requests, is never restarted by a model switch.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from gaia2.config.base import ConfigError, StrictModel, build_config

MiB = 1 << 20


class ModelsConfig(StrictModel):
    world_model: str | None = Field(None, description="world model export directory or MLflow model URI "
                                                      "(models:/NAME@ALIAS follows the alias)")
    tokenizer: str | None = Field(None, description="tokenizer export directory or MLflow model URI")
    clip: str | None = Field(None, description="CLIP checkpoint directory, for specs with a text prompt")
    workdir: str = Field(default_factory=lambda: os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                         description="local MLflow database (when MLFLOW_TRACKING_URI is not set)")
    refresh_s: float = Field(0.0, ge=0.0, description="check every N s whether an alias moved and switch to the "
                                                      "version it names (0: only on reconfigure)")
    revision: int = Field(0, ge=0, description="bump to make the replicas look up the aliases again now")


class ResultsConfig(StrictModel):
    uri: str | None = Field(None, description="directory (or s3:// / gs:// prefix) for the results; default "
                                              "<workdir>/serve-results")
    max_bytes: int = Field(2 << 30, gt=0, description="size cap: the oldest finished results are deleted beyond")
    ttl_s: float = Field(24 * 3600.0, gt=0, description="finished results and uploads are deleted after this")
    sweep_s: float = Field(60.0, gt=0, description="how often the ingress applies the TTL and the size cap")


class LimitsConfig(StrictModel):
    max_body_bytes: int = Field(1 * MiB, gt=0, description="largest JSON body (413 beyond)")
    max_upload_bytes: int = Field(64 * MiB, gt=0, description="largest uploaded .npy (413 beyond)")
    max_latent_steps: int = Field(48, ge=1, description="longest generation, in latent steps (422 beyond)")
    max_sampler_steps: int = Field(100, ge=1, description="most sampler steps a spec may ask for (422 beyond)")
    max_queued: int = Field(32, ge=1, description="accepted generations not yet finished, per ingress replica; "
                                                  "beyond, POST answers 503 with Retry-After")
    time_limit_s: float = Field(600.0, gt=0, description="a generation still unfinished after this fails")
    max_wait_s: float = Field(60.0, ge=0, description="longest ?wait= a request may hold its connection")
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503")


class AuthConfig(StrictModel):
    tokens_env: str = Field("GAIA2_SERVE_TOKENS", min_length=1,
                            description="environment variable holding accepted bearer tokens (comma-separated)")
    tokens_file: str | None = Field(None, description="file of accepted bearer tokens, one per line")


class IngressConfig(StrictModel):
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    max_ongoing_requests: int = Field(256, ge=1, description="HTTP requests a replica handles at once")
    max_queued_requests: int = Field(512, ge=1, description="HTTP requests queued at the proxy (503 beyond)")


class GeneratorConfig(StrictModel):
    num_replicas: int = Field(1, ge=1)
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(1, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    max_batch_cost: int = Field(4096, ge=1, description="a batch's cost: sum over requests of cameras x latent "
                                                        "steps x tokens per latent, doubled under guidance")
    max_batch_size: int = Field(8, ge=1, description="most requests in a batch (1: batching off)")
    batch_wait_s: float = Field(0.05, ge=0, description="how long a batch waits for more requests")
    max_ongoing_requests: int = Field(32, ge=1, description="requests a replica holds (batched or waiting)")
    max_queued_requests: int = Field(-1, ge=-1, description="requests queued at the ingress's handle (-1: "
                                                            "bounded by limits.max_queued)")


class DecoderConfig(StrictModel):
    num_replicas: int = Field(1, ge=1)
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(1, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_ongoing_requests: int = Field(4, ge=1)


class HttpConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    route_prefix: str = Field("/", pattern=r"^/[A-Za-z0-9_/-]*$")
    app_name: str = Field("gaia2", pattern=r"^[A-Za-z0-9_-]+$")


class ServeConfig(StrictModel):
    preset: str = "tiny"
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    dataset: str | None = Field(None, description="latent shards (gaia2 encode-latents) that {sample: KEY} names")
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)

    @property
    def results_uri(self) -> str:
        return self.results.uri or os.path.join(os.path.abspath(self.models.workdir), "serve-results")


def tiny() -> ServeConfig:
    """Everything on this machine's CPUs; the quickstart's registered models."""
    return ServeConfig(preset="tiny", models=ModelsConfig(world_model="models:/gaia2-world-model-tiny@candidate",
                                                          tokenizer="models:/gaia2-tokenizer-tiny@candidate"),
                       ingress=IngressConfig(num_cpus=0.1),
                       generator=GeneratorConfig(num_cpus=0.5, max_batch_cost=16384),
                       decoder=DecoderConfig(num_cpus=0.5))


def paper() -> ServeConfig:
    """One GPU each for the generator and the decoder, bf16; the paper models' champion versions."""
    return ServeConfig(preset="paper",
                       models=ModelsConfig(world_model="models:/gaia2-world-model-paper@champion",
                                           tokenizer="models:/gaia2-tokenizer-paper@champion", refresh_s=60),
                       limits=LimitsConfig(max_latent_steps=96, max_queued=64, time_limit_s=1800),
                       generator=GeneratorConfig(num_gpus=1, num_cpus=4, device="cuda", precision="bf16",
                                                 max_batch_cost=6 * 6 * 40 * 64 * 4, max_batch_size=4,
                                                 batch_wait_s=0.2, max_ongoing_requests=16),
                       decoder=DecoderConfig(num_gpus=1, num_cpus=4, device="cuda", max_ongoing_requests=2),
                       http=HttpConfig(host="0.0.0.0"))


PRESETS = {"tiny": tiny, "paper": paper}


def load_config(preset: str | None = None, path: str | None = None, overrides: dict | None = None) -> ServeConfig:
    cfg = build_config(ServeConfig, PRESETS, preset=preset, overrides=overrides, path=path)
    for field in ("world_model", "tokenizer"):
        if not getattr(cfg.models, field):
            raise ConfigError(f"models.{field}: required (pass --{field.replace('_', '-')})")
    if cfg.dataset is not None and "://" not in cfg.dataset and not os.path.isdir(cfg.dataset):
        raise ConfigError(f"dataset: {cfg.dataset!r} is not a directory (expected latent shards written by "
                          f"gaia2 encode-latents)")
    if cfg.generator.device == "cuda" and cfg.generator.num_gpus == 0:
        raise ConfigError("generator.num_gpus: 0 with generator.device cuda; give the generator a GPU")
    if cfg.decoder.device == "cuda" and cfg.decoder.num_gpus == 0:
        raise ConfigError("decoder.num_gpus: 0 with decoder.device cuda; give the decoder a GPU")
    return cfg


def generator_user_config(cfg: ServeConfig) -> dict:
    """What the generator may change in place (Serve's ``user_config``; JSON only)."""
    g = cfg.generator
    return {"world_model": cfg.models.world_model, "tokenizer": cfg.models.tokenizer, "clip": cfg.models.clip,
            "workdir": os.path.abspath(cfg.models.workdir), "refresh_s": cfg.models.refresh_s,
            "revision": cfg.models.revision, "device": g.device, "precision": g.precision,
            "max_batch_cost": g.max_batch_cost, "max_batch_size": g.max_batch_size, "batch_wait_s": g.batch_wait_s}


def read_tokens(cfg: AuthConfig) -> frozenset[str]:
    """The accepted bearer tokens: the environment variable's (comma-separated) and the file's (one per line,
    ``#`` comments). Empty: no authentication."""
    tokens = [t.strip() for t in os.environ.get(cfg.tokens_env, "").split(",")]
    if cfg.tokens_file:
        try:
            with open(cfg.tokens_file) as f:
                tokens += [line.strip() for line in f if not line.lstrip().startswith("#")]
        except OSError as err:
            raise ConfigError(f"auth.tokens_file: cannot read {cfg.tokens_file!r} ({err.strerror})") from None
    return frozenset(t for t in tokens if t)
