"""The served models: which versions the configured URIs name now, fetched and checked once per version.

A ``models:/NAME@ALIAS`` URI is looked up again on every reconfigure (and every ``refresh_s``); the versions
found (``models:/NAME/VERSION``) identify what is loaded, so a moved alias loads the new pair and an unmoved
one loads nothing. Fetching is ``jobs.generate.resolve_models``: the world model and tokenizer checked as a pair
(latent channels, the tokenizer version's latent statistics against the world model's).
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from jobs.generate import GenerateJob, Models, model_refs, resolve_models

_CACHE = None


def cache_dir() -> str:
    """A directory of this process where registered versions are downloaded (once each)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = tempfile.mkdtemp(prefix="gaia2-serve-models-")
    return _CACHE


def current_refs(config: dict) -> dict:
    """The versions ``config``'s URIs name now (the alias looked up), as ``model_refs`` records them."""
    job = GenerateJob(world_model=config["world_model"], tokenizer=config["tokenizer"], clip=config.get("clip"),
                      workdir=config["workdir"])
    return model_refs(job, config.get("precision", "fp32"))


def identity(refs: dict) -> tuple:
    return refs["world_model"], refs["tokenizer"], refs.get("clip")


def fetch(refs: dict, workdir: str) -> Models:
    key = hashlib.sha256(repr(identity(refs)).encode()).hexdigest()[:16]
    return resolve_models(refs, workdir, os.path.join(cache_dir(), key))


def version_of(ref: str) -> str | None:
    """"models:/NAME/VERSION" -> "VERSION"."""
    if ref.startswith("models:/"):
        return ref.rsplit("/", 1)[-1]
    return None


def describe(refs: dict, geometry, latent_mean, latent_std, loaded_at: float) -> dict:
    """What ``GET /v1/models`` shows and the ingress validates against (``<store>/service/models.json``)."""
    g = geometry
    return {
        "world_model": {"uri": refs.get("world_model_uri"), "ref": refs["world_model"],
                        "version": version_of(refs["world_model"])},
        "tokenizer": {"uri": refs.get("tokenizer_uri"), "ref": refs["tokenizer"],
                      "version": version_of(refs["tokenizer"])},
        "clip": refs.get("clip"), "precision": refs.get("precision"),
        "latent_mean": latent_mean, "latent_std": latent_std,
        "geometry": {"window": g.window, "cameras": g.cameras, "max_cameras": g.max_cameras,
                     "latent_dim": g.latent_dim, "grid_hw": list(g.grid_hw), "max_agents": g.max_agents,
                     "clip_dim": g.clip_dim, "scenario_dim": g.scenario_dim, "temporal_factor": g.temporal_factor,
                     "frame_hw": list(g.frame_hw)},
        "loaded_at": loaded_at,
    }
