"""What a spec sent to the service may refer to: samples of the configured dataset, previous generations by id,
uploaded latents by id. Never a path: ids are checked against the store's own pattern before anything opens."""

from __future__ import annotations

import json

import numpy as np

from gaia2.generation.sources import (LatentShards, SourceGeneration, SourceSample, Sources, check_latents,
                                      load_npy)
from gaia2.generation.spec import SpecError
from jobs.serve.store import ID, ResultStore


def check_upload(data: bytes, geometry: dict | None, max_steps: int) -> np.ndarray:
    """Uploaded ``.npy`` bytes -> float32 latents (T, N, L, H, W) fit for the served world model, or a
    ``SpecError`` naming what is wrong (not an array, a pickle, dtype, rank, channels, grid, length)."""
    arr = check_latents(load_npy(data, "upload"), "upload")
    if geometry is not None:
        want = (geometry["latent_dim"], *geometry["grid_hw"])
        if tuple(arr.shape[2:]) != tuple(want):
            raise SpecError(f"upload: latents of (L, H, W) = {tuple(arr.shape[2:])} per camera and step; the world "
                            f"model takes {tuple(want)}")
        if arr.shape[1] > geometry["max_cameras"]:
            raise SpecError(f"upload: {arr.shape[1]} cameras, the world model takes at most {geometry['max_cameras']}")
    if arr.shape[0] > max_steps:
        raise SpecError(f"upload: {arr.shape[0]} latent steps, this service takes at most {max_steps}")
    return arr


class ServiceSources(Sources):
    def __init__(self, store: ResultStore, dataset: LatentShards | None) -> None:
        self.store = store
        self.dataset = dataset

    def sample(self, key: str) -> SourceSample:
        if self.dataset is None:
            raise SpecError(f"sample {key!r}: this service was configured with no dataset to take samples from")
        return self.dataset(key)

    def latents(self, ref: str) -> np.ndarray:
        if not ID.match(ref):
            raise SpecError(f"latents {ref!r}: not an upload id (POST the .npy to /v1/uploads and use the id it "
                            f"returns)")
        data = self.store.read_bytes(self.store.upload_path(ref))
        if data is None:
            raise SpecError(f"latents {ref!r}: no such upload (uploads expire)")
        return check_latents(load_npy(data, f"latents {ref!r}"), f"latents {ref!r}")

    def generation(self, ref: str) -> SourceGeneration:
        if not ID.match(ref):
            raise SpecError(f"generation {ref!r}: not a generation id")
        status = self.store.status(ref)
        if status is None:
            raise SpecError(f"generation {ref!r}: no such generation (results expire)")
        if status.get("status") != "done":
            raise SpecError(f"generation {ref!r}: is {status.get('status')}, not done")
        data = self.store.read_bytes(self.store.result_path(ref, "latents.npy"))
        spec = self.store.read_bytes(self.store.result_path(ref, "spec.json"))
        if data is None or spec is None:
            raise SpecError(f"generation {ref!r}: its results were deleted")
        latents = check_latents(load_npy(data, f"generation {ref!r}"), f"generation {ref!r}")
        return SourceGeneration(ref, latents, json.loads(spec))


def open_dataset(path: str | None) -> LatentShards | None:
    return LatentShards(path) if path else None
