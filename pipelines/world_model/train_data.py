"""World-model training data on Ray Data: latent shards (``gaia2 encode-latents``) -> fixed-shape samples.

Each sample's json and arrays are turned into the world model's inputs at the latent rate by
``gaia2.world_model.sample.world_model_sample`` on Ray Data tasks; the training loop only batches them.
With ``preserve_order`` (the job's DataConfig) and a seeded local shuffle, an epoch's batches are
reproducible, which is what lets a resumed run replay its data position exactly.
"""

from __future__ import annotations

import io
import json

import numpy as np
import ray

from gaia2.world_model.sample import FIELDS, SampleError, world_model_sample
from pipelines.splits import DataError, first_sample, split_counts, split_files

__all__ = ["DataError", "MEMBERS", "PRODUCED_BY", "first_sample", "sample_dataset", "split_counts", "split_files",
           "to_samples"]

MEMBERS = ("json", "latents.npy", "boxes.npy", "boxes_valid.npy", "clip.npy")
PRODUCED_BY = "gaia2 encode-latents"


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


def sample_dataset(files: list[str], cameras: int, max_agents: int, read_cpus: float,
                   read_batch: int) -> ray.data.Dataset:
    """Rows of stacked world-model inputs from latent shard ``files`` (read and converted on Ray Data)."""
    ds = ray.data.read_webdataset(files, suffixes=lambda name: name in MEMBERS, decoder=None, num_cpus=read_cpus)
    return ds.map_batches(to_samples, fn_kwargs={"cameras": cameras, "max_agents": max_agents},
                          batch_size=read_batch, batch_format="numpy", num_cpus=read_cpus)
