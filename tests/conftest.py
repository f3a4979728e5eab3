"""Shared fixtures: one local Ray for the whole session, synthetic clips generated once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def s3_server():
    """A real S3 API (moto server) on localhost for the session; see tests/s3_helpers.py. Started first (autouse),
    so that every Ray the session starts, by the ``ray_session`` fixture or by a job itself, inherits its
    endpoint and credentials."""
    from tests import s3_helpers

    server, process = s3_helpers.start()
    yield server
    process.stop()


@pytest.fixture(scope="session")
def ray_session(s3_server):
    import ray

    from jobs.runtime import LOCAL_SYSTEM_CONFIG

    if not ray.is_initialized():
        # Two logical CPUs, like the machine: Train tests keep to one worker, leaving one for Data.
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", configure_logging=True,
                 _system_config=LOCAL_SYSTEM_CONFIG)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def clip_model(tmp_path_factory) -> str:
    """A tiny randomly initialised CLIP vision model saved the way a real one is."""
    from gaia2.embedding.clip import save_random_clip

    return save_random_clip(str(tmp_path_factory.mktemp("models") / "clip"))


@pytest.fixture(scope="session")
def synth_clips(tmp_path_factory) -> str:
    """Nine short synthetic clips over the three rigs (three drives of three clips)."""
    from gaia2.synth.generate import generate_clips

    out = tmp_path_factory.mktemp("clips")
    generate_clips(str(out), 9, seed=7, duration_s=3.0, workers=2)
    return str(out)


@pytest.fixture(scope="session")
def tokenizer_shards(ray_session, synth_clips, clip_model, tmp_path_factory) -> str:
    """Shards cut for the tiny tokenizer: 24-frame windows at 32 x 64 (its input size), train and val splits."""
    from gaia2.config.shards import load_shard_config
    from pipelines.shards.build import build_shards

    cfg = load_shard_config("tiny", overrides={
        "window": {"frames": 24, "hop": 8}, "image": {"height": 32, "width": 64},
        "balance": {"min_stride_s": 0.3}, "shards": {"target_mb": 0.5}, "detection": {"max_agents": 4},
        "embedding": {"clip_path": clip_model}})
    out = str(tmp_path_factory.mktemp("tokenizer") / "shards")
    build_shards(synth_clips, out, cfg)
    return out


@pytest.fixture(scope="session")
def latent_shards(tokenizer_shards, tmp_path_factory) -> str:
    """``tokenizer_shards`` encoded by a randomly initialised tiny tokenizer: latents (3, N, 16, 4, 8)."""
    import torch

    from gaia2.tokenizer import Tokenizer, tiny
    from gaia2.tokenizer.export import save_tokenizer
    from pipelines.tokenizer.latents import encode_latents, latent_config

    root = tmp_path_factory.mktemp("latents")
    torch.manual_seed(0)
    tokenizer = save_tokenizer(str(root / "tokenizer"), Tokenizer(tiny()))
    out = str(root / "latents")
    encode_latents(tokenizer_shards, tokenizer, out, latent_config(mode="mean"))
    return out


@pytest.fixture(scope="session")
def serve_models(latent_shards, tmp_path_factory):
    """A random tiny world model exported with the fixture latents' statistics, and the tokenizer that encoded
    them: (world model dir, tokenizer dir)."""
    import torch

    from gaia2.flow.stats import read_stats
    from gaia2.world_model.config import tiny as world_model_tiny
    from gaia2.world_model.export import save_world_model
    from gaia2.world_model.model import WorldModel

    stats = read_stats(latent_shards)
    torch.manual_seed(11)
    wm = save_world_model(str(tmp_path_factory.mktemp("serve_wm") / "world_model"), WorldModel(world_model_tiny()),
                          extra={"latent_mean": stats.mean, "latent_std": stats.std})
    return wm, os.path.join(os.path.dirname(latent_shards), "tokenizer")


@pytest.fixture(scope="session")
def serve_http(ray_session):
    """Ray Serve's HTTP proxy on a free port for the session; yields the port."""
    from ray import serve

    from tests.serve_helpers import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def served(serve_http, serve_models, latent_shards, tmp_path_factory):
    """The generation service (application "gaia2" at "/") on the tiny models, with the fixture latent shards as
    its dataset; ``served.url`` is its root, ``served("v1/models")`` a URL under it."""
    from tests.serve_helpers import deploy

    wm, tok = serve_models
    root = tmp_path_factory.mktemp("served")
    return deploy(serve_http, "gaia2", {"models": {"world_model": wm, "tokenizer": tok, "workdir": str(root / "work")},
                                        "dataset": latent_shards, "results": {"uri": str(root / "results")}})
