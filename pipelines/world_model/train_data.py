"""World-model training data on Ray Data: latent shards (``gaia2 encode-latents``) -> fixed-shape samples.

Each sample's json and arrays are turned into the world model's inputs at the latent rate by
``gaia2.world_model.sample.world_model_sample`` on Ray Data tasks; the training loop only batches them.
With ``preserve_order`` (the job's DataConfig) and a seeded local shuffle, an epoch's batches are
reproducible, which is what lets a resumed run replay its data position exactly.
"""

from __future__ import annotations

import glob
import io
import json
import os

import numpy as np
import ray

from gaia2.world_model.sample import FIELDS, SampleError, world_model_sample

MEMBERS = ("json", "latents.npy", "boxes.npy", "boxes_valid.npy", "clip.npy")


class DataError(ValueError):
    """Latent shards that cannot feed the world model (missing split, shapes that do not fit the model)."""


def split_files(shards: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(shards, split, "*.tar")))
    if not files:
        raise DataError(f"data.shards: no {split}/*.tar under {shards!r} (is it a `gaia2 encode-latents` output?)")
    return files


def first_sample(tar_path: str) -> dict:
    """The first sample of a shard: {"json": dict, "latents.npy": array, ...} (for checks before any work)."""
    import tarfile

    out: dict = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if out and key != out["__key__"]:
                break
            out["__key__"] = key
            data = tar.extractfile(member).read()
            out[ext] = json.loads(data) if ext == "json" else (np.load(io.BytesIO(data)) if ext.endswith(".npy") else data)
    missing = [m for m in MEMBERS if m not in out]
    if missing:
        raise DataError(f"{tar_path}: sample {out.get('__key__')!r} lacks {missing} (not a latent shard?)")
    return out


def _load(value: bytes) -> np.ndarray:
    return np.load(io.BytesIO(value))


def to_samples(batch: dict[str, np.ndarray], cameras: int, max_agents: int) -> dict[str, np.ndarray]:
    """WebDataset rows (raw member bytes) -> stacked world-model inputs (see ``world_model_sample``).
    A sample that does not fit (e.g. fewer cameras than the model takes) is an error naming it."""
    rows = []
    for i in range(len(batch["json"])):
        meta = json.loads(batch["json"][i])
        try:
            rows.append(world_model_sample(meta, _load(batch["latents.npy"][i]), _load(batch["boxes.npy"][i]),
                                           _load(batch["boxes_valid.npy"][i]), _load(batch["clip.npy"][i]),
                                           cameras, max_agents))
        except SampleError as err:
            raise DataError(f"{batch['__url__'][i] if '__url__' in batch else '?'}: {err}") from None
    return {k: np.stack([r[k] for r in rows]) for k in FIELDS}


def sample_dataset(files: list[str], cameras: int, max_agents: int, read_cpus: float = 0.5) -> ray.data.Dataset:
    ds = ray.data.read_webdataset(files, suffixes=lambda name: name in MEMBERS, decoder=None, num_cpus=read_cpus)
    return ds.map_batches(to_samples, fn_kwargs={"cameras": cameras, "max_agents": max_agents}, batch_size=8,
                          batch_format="numpy", num_cpus=read_cpus)
