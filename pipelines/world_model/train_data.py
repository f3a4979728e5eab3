"""World-model training data on Ray Data: latent shards (``gaia2 encode-latents``) -> fixed-shape samples.

Each sample's json and arrays are turned into the world model's inputs at the latent rate by
``gaia2.world_model.sample.world_model_sample`` on Ray Data tasks; the training loop only batches them.
With ``preserve_order`` (the job's DataConfig) and a seeded local shuffle, an epoch's batches are
reproducible, which is what lets a resumed run replay its data position exactly. With ``data.scenario``
(``pipelines/world_model/scenario.py``) each sample also gets its scenario vector and ``scenario_valid``.
``weighted_sample_dataset`` is the training split as ``data.weighted`` reads it: the epoch's samples drawn in
proportion to the manifest's weights (``pipelines/weighted.py``).
"""

from __future__ import annotations

import io
import json

import numpy as np
import ray

from gaia2.world_model.sample import FIELDS, SampleError, world_model_sample
from pipelines import weighted
from pipelines.splits import DataError, first_sample, split_counts, split_files
from pipelines.world_model import scenario as scenario_table

__all__ = ["DataError", "MEMBERS", "PRODUCED_BY", "first_sample", "sample_dataset", "split_counts", "split_files",
           "to_samples", "weighted_sample_dataset"]

MEMBERS = ("json", "latents.npy", "boxes.npy", "boxes_valid.npy", "clip.npy")
PRODUCED_BY = "gaia2 encode-latents"


def _load(value: bytes) -> np.ndarray:
    return np.load(io.BytesIO(value))


def to_samples(batch: dict[str, np.ndarray], cameras: int, max_agents: int, scenario: str | None = None,
               scenario_dim: int = 0) -> dict[str, np.ndarray]:
    """WebDataset rows (raw member bytes) -> stacked world-model inputs (see ``world_model_sample``), plus
    ``scenario`` (B, D) / ``scenario_valid`` (B,) from the table at ``scenario`` when one is given.
    A sample that does not fit (e.g. fewer cameras than the model takes) is an error naming it."""
    rows, keys = [], []
    for i in range(len(batch["json"])):
        meta = json.loads(batch["json"][i])
        try:
            rows.append(world_model_sample(meta, _load(batch["latents.npy"][i]), _load(batch["boxes.npy"][i]),
                                           _load(batch["boxes_valid.npy"][i]), _load(batch["clip.npy"][i]),
                                           cameras, max_agents))
        except SampleError as err:
            raise DataError(f"{batch['__url__'][i] if '__url__' in batch else '?'}: {err}") from None
        keys.append(str(meta.get("key", batch["__key__"][i] if "__key__" in batch else "")))
    out = {k: np.stack([r[k] for r in rows]) for k in FIELDS}
    if scenario:
        out["scenario"], out["scenario_valid"] = scenario_table.lookup(scenario, keys, scenario_dim)
    return out


def _members(name: str) -> bool:
    return name in MEMBERS


def sample_dataset(files: list[str], cameras: int, max_agents: int, read_cpus: float, read_batch: int,
                   scenario: str | None = None, scenario_dim: int = 0) -> ray.data.Dataset:
    """Rows of stacked world-model inputs from latent shard ``files`` (read and converted on Ray Data)."""
    ds = ray.data.read_webdataset(files, suffixes=_members, decoder=None, num_cpus=read_cpus)
    return ds.map_batches(to_samples, fn_kwargs={"cameras": cameras, "max_agents": max_agents,
                                                 "scenario": scenario, "scenario_dim": scenario_dim},
                          batch_size=read_batch, batch_format="numpy", num_cpus=read_cpus)


def weighted_sample_dataset(shards: str, cameras: int, max_agents: int, read_cpus: float, read_batch: int, seed: int,
                            epoch: int, rank: int = 0, world: int = 1, scenario: str | None = None,
                            scenario_dim: int = 0, split: str = "train") -> ray.data.Dataset:
    """Worker ``rank``'s samples of weighted ``epoch`` (``pipelines.weighted.epoch_dataset``) as stacked
    world-model inputs, in draw order."""
    ds = weighted.epoch_dataset(shards, split, PRODUCED_BY, _members, seed, epoch, rank, world, read_cpus,
                                read_batch)
    return weighted.ordered(ds.map_batches(to_samples, fn_kwargs={"cameras": cameras, "max_agents": max_agents,
                                                                  "scenario": scenario, "scenario_dim": scenario_dim},
                                           batch_size=read_batch, batch_format="numpy", num_cpus=read_cpus))
