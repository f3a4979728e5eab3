"""Weights reach training (``pipelines/weighted.py``): each epoch's draws follow the manifest's weights, are a
pure function of (seed, epoch) so a resumed run sees the same tail, and both training loaders yield exactly
those draws, so a rare cell up-weighted x4 gets its weight share of what training reads; validation stays
every sample once; bad weights are a ``DataError`` that names the problem."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.splits import DataError
from pipelines.weighted import epoch_draws, manifest_weights, shard_index, worker_draws

RARE_WEIGHT = 4.0


def _binomial_tolerance(p: float, draws: int, sds: float = 4.0) -> float:
    return sds * float(np.sqrt(p * (1 - p) / draws))


# ------------------------------------------------------------------------------------------ the draws

def test_draws_are_seeded_and_reproducible():
    w = np.r_[np.full(10, RARE_WEIGHT), np.ones(90)]
    a = epoch_draws(w, seed=3, epoch=5)
    assert len(a) == 100 and a.dtype.kind == "i"
    np.testing.assert_array_equal(a, epoch_draws(list(w), seed=3, epoch=5))
    assert not np.array_equal(a, epoch_draws(w, seed=3, epoch=6))
    assert not np.array_equal(a, epoch_draws(w, seed=4, epoch=5))
    assert len(epoch_draws(w, seed=-1, epoch=0)) == 100   # any int seed


def test_equal_weights_draw_every_sample_once_in_a_seeded_order():
    for w in (np.ones(37), np.full(37, 2.5)):
        draws = epoch_draws(w, seed=0, epoch=1)
        assert sorted(draws) == list(range(37)) and list(draws) != list(range(37))


def test_shares_match_the_weights_and_each_sample_is_drawn_floor_or_ceil_of_its_expectation():
    rng = np.random.default_rng(0)
    w = np.r_[np.full(10, RARE_WEIGHT), np.ones(90)]
    epochs, n = 200, len(w)
    counts = np.stack([np.bincount(epoch_draws(w, seed=0, epoch=e), minlength=n) for e in range(epochs)])
    expected = n * w / w.sum()                                   # 3.08 for a rare sample, 0.77 for a common one
    assert (counts.sum(axis=1) == n).all()                       # an epoch keeps N draws
    assert ((counts == np.floor(expected)) | (counts == np.ceil(expected))).all()
    share = counts[:, :10].sum() / counts.sum()
    p = 10 * RARE_WEIGHT / w.sum()                               # 40 / 130
    assert abs(share - p) < _binomial_tolerance(p, epochs * n)
    # arbitrary weights, some zero: mean draws per sample -> N w / sum(w)
    w = rng.lognormal(size=50) * (rng.random(50) > 0.1)
    counts = np.stack([np.bincount(epoch_draws(w, seed=1, epoch=e), minlength=50) for e in range(400)])
    expected = 50 * w / w.sum()
    assert (counts[:, w == 0] == 0).all()
    assert np.abs(counts.mean(axis=0) - expected).max() < 4 * np.sqrt(0.25 / 400) + 1e-9


def test_a_resumed_stream_continues_with_the_uninterrupted_tail():
    """The data position is (epoch, batch): rebuilding epoch 1's draws on resume gives the rest unchanged."""
    w = np.r_[np.full(7, RARE_WEIGHT), np.ones(30)]
    batch, world = 4, 2

    def stream(start_epoch, start_batch, rank):
        out = []
        for epoch in range(start_epoch, 4):
            mine = worker_draws(epoch_draws(w, 11, epoch), rank, world)
            batches = [mine[i:i + batch] for i in range(0, len(mine) - batch + 1, batch)]
            out += [(epoch, list(b)) for b in batches[start_batch if epoch == start_epoch else 0:]]
        return out

    for rank in range(world):
        whole = stream(0, 0, rank)
        resumed = stream(1, 2, rank)
        first = whole.index(next(x for x in whole if x[0] == 1))
        assert resumed == whole[first + 2:]


def test_worker_parts_are_equal_disjoint_and_cover_the_draws():
    draws = epoch_draws(np.r_[np.full(5, 3.0), np.ones(26)], seed=0, epoch=0)
    parts = [worker_draws(draws, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [10, 10, 10]
    positions = sorted(i for r in range(3) for i in range(r, 30, 3))
    assert positions == list(range(30))
    np.testing.assert_array_equal(np.concatenate([draws[r::3][:10] for r in range(3)]), np.concatenate(parts))


# ------------------------------------------------------------------------------------------ the manifest

def _write_manifest(root, keys, weights=None, splits=None):
    os.makedirs(root, exist_ok=True)
    columns = {"key": keys, "shard": ["train/shard-000000"] * len(keys),
               "split": splits or ["train"] * len(keys), "cell": ["c"] * len(keys)}
    if weights is not None:
        columns["weight"] = pa.array(weights, pa.float64())
    pq.write_table(pa.table(columns), os.path.join(root, "manifest.parquet"))
    return str(root)


def test_a_manifest_without_weights_weighs_every_sample_the_same(tmp_path):
    keys, w = manifest_weights(_write_manifest(tmp_path, ["a", "b", "c"], splits=["train", "val", "train"]),
                               "train", "x")
    assert keys == ["a", "c"] and list(w) == [1.0, 1.0]
    assert sorted(epoch_draws(w, 0, 0)) == [0, 1]


@pytest.mark.parametrize("weights, message", [
    ([1.0, -2.0, 1.0], "negative, e.g. sample 'b': -2.0"),
    ([1.0, float("nan"), 1.0], "not finite (NaN or infinite), e.g. sample 'b'"),
    ([1.0, float("inf"), 1.0], "not finite (NaN or infinite), e.g. sample 'b'"),
    ([0.0, 0.0, 0.0], "all 3 sample weights are zero"),
    ([1.0, None, 1.0], "no weight for train sample 'b'"),
])
def test_bad_weights_are_a_data_error_naming_the_problem(tmp_path, weights, message):
    root = _write_manifest(tmp_path, ["a", "b", "c"], weights)
    with pytest.raises(DataError, match="weight") as err:
        manifest_weights(root, "train", "x")
    assert message in str(err.value) and "manifest.parquet" in str(err.value)


def test_bad_weights_given_directly_are_refused():
    with pytest.raises(DataError, match="negative"):
        epoch_draws([1.0, -1.0], 0, 0)
    with pytest.raises(DataError, match="all 2 sample weights are zero"):
        epoch_draws([0.0, 0.0], 0, 0)


# ------------------------------------------------------------------------------------------ the loaders

def _reweighted(shards: str, out) -> tuple[str, set[str], float]:
    """``shards`` with its tars linked and a manifest of controlled weights: every 9th train window moved into a
    rare cell of weight ``RARE_WEIGHT``, the other train windows weight 1 (every other val window weight 4,
    which validation must ignore) -> (directory, the rare train keys, the rare cell's expected share of the
    draws: 4 n_rare / (4 n_rare + n_common))."""
    table = pq.read_table(os.path.join(shards, "manifest.parquet"))
    rows = table.to_pylist()
    train = [r["key"] for r in rows if r["split"] == "train"]
    val = [r["key"] for r in rows if r["split"] == "val"]
    rare = set(train[::9])
    cells = ["rare" if r["key"] in rare else r["cell"] for r in rows]
    weights = [RARE_WEIGHT if r["key"] in rare or r["key"] in val[::2] else 1.0 for r in rows]
    for name, values in (("cell", pa.array(cells)), ("weight", pa.array(weights))):
        table = table.set_column(table.schema.get_field_index(name), name, values)
    os.makedirs(out)
    for split in ("train", "val"):
        os.symlink(os.path.join(shards, split), os.path.join(out, split))
    pq.write_table(table, os.path.join(out, "manifest.parquet"))
    n_rare, n_common = len(rare), len(train) - len(rare)
    return str(out), rare, RARE_WEIGHT * n_rare / (RARE_WEIGHT * n_rare + n_common)


def _expected_keys(shards: str, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[str]:
    keys, weights = manifest_weights(shards, "train", "x")
    return [keys[i] for i in worker_draws(epoch_draws(weights, seed, epoch), rank, world)]


def _members(shards: str, member: str) -> dict[str, bytes]:
    """One member of every sample, by key (read through the shard index, as the loaders read)."""
    out = {}
    for split in ("train", "val"):
        for name in sorted(os.listdir(os.path.join(shards, split))):
            url = os.path.join(shards, split, name)
            with open(url, "rb") as f:
                for key, members in shard_index(url).items():
                    _, offset, size = next(m for m in members if m[0] == member)
                    f.seek(offset)
                    out[key] = f.read(size)
    return out


def _sample_json(shards: str) -> dict[str, dict]:
    return {key: json.loads(data) for key, data in _members(shards, "json").items()}


def test_the_tokenizer_loader_yields_the_weighted_draws(ray_session, tokenizer_shards, tmp_path):
    """Every camera of every drawn window, in draw order (rigs differ in camera count); the rare cell's share
    of the windows read matches its weight share (and not its sample share)."""
    from pipelines.tokenizer.train_data import weighted_clip_dataset

    shards, rare, p = _reweighted(tokenizer_shards, tmp_path / "w")
    cameras = {k: len(meta["cameras"]) for k, meta in _sample_json(shards).items()}
    epochs, windows, rare_windows = 3, 0.0, 0.0
    for epoch in range(epochs):
        rows = weighted_clip_dataset(shards, 32, 64, 0.5, 4, seed=5, epoch=epoch).take_all()
        keys = [r["key"] for r in rows]
        assert keys == [k for k in _expected_keys(shards, 5, epoch) for _ in range(cameras[k])]
        assert rows[0]["frames"].shape == (24, 32, 64, 3)
        windows += sum(1 / cameras[k] for k in keys)              # each window gives cameras[k] rows
        rare_windows += sum(1 / cameras[k] for k in keys if k in rare)
    share, draws, n_train = rare_windows / windows, round(windows), round(windows) // epochs
    print(f"tokenizer loader: rare cell {len(rare)}/{n_train} train windows at weight {RARE_WEIGHT:g}: share "
          f"{share:.3f} of {draws} windows read, expected {p:.3f} (unweighted {len(rare) / n_train:.3f})")
    assert abs(share - p) < _binomial_tolerance(p, draws)
    assert abs(share - len(rare) / n_train) > 0.15


def _fingerprints(shards: str, cameras: int) -> dict[bytes, str]:
    """The world-model samples' latents (first ``cameras`` cameras, as ``to_samples`` keeps them) -> key."""
    return {np.ascontiguousarray(np.load(io.BytesIO(data))[:, :cameras], np.float32).tobytes(): key
            for key, data in _members(shards, "latents.npy").items()}


def test_the_world_model_loader_yields_the_weighted_draws(ray_session, latent_shards, tmp_path):
    """The world-model samples (told apart by their latents) are the draws, in order; the rare cell's share
    matches its weight share; two workers get equal parts, each its own draws."""
    from pipelines.world_model.train_data import weighted_sample_dataset

    shards, rare, p = _reweighted(latent_shards, tmp_path / "w")
    key_of = _fingerprints(shards, 2)
    assert len(key_of) == len(_sample_json(shards))   # every sample's latents are its own

    def keys(rank=0, world=1, epoch=0):
        rows = weighted_sample_dataset(shards, 2, 4, 0.5, 4, seed=5, epoch=epoch, rank=rank, world=world).take_all()
        return [key_of[np.ascontiguousarray(r["latents"], np.float32).tobytes()] for r in rows]

    epochs, seen = 4, []
    for epoch in range(epochs):
        got = keys(epoch=epoch)
        assert got == _expected_keys(shards, 5, epoch)
        seen += got
    share, n_train = sum(k in rare for k in seen) / len(seen), len(seen) // epochs
    print(f"world-model loader: rare cell {len(rare)}/{n_train} train samples at weight {RARE_WEIGHT:g}: share "
          f"{share:.3f} of {len(seen)} draws, expected {p:.3f} (unweighted {len(rare) / n_train:.3f})")
    assert abs(share - p) < _binomial_tolerance(p, len(seen))
    assert abs(share - len(rare) / n_train) > 0.15
    for rank in range(2):
        got = keys(rank, 2)
        assert len(got) == n_train // 2 and got == _expected_keys(shards, 5, 0, rank, 2)


def test_a_resumed_epoch_replays_to_the_same_batches(ray_session, latent_shards, tmp_path):
    """The job's resume: rebuild the epoch's dataset, iterate with the seeded local shuffle, drop the batches
    already consumed -> the uninterrupted run's remaining batches."""
    import torch

    from jobs.train_loop import epoch_batches
    from pipelines.world_model.train_data import weighted_sample_dataset

    shards, _, _ = _reweighted(latent_shards, tmp_path / "w")

    def batches(epoch):
        ds = weighted_sample_dataset(shards, 2, 4, 0.5, 4, seed=2, epoch=epoch)
        return [b["latents"] for b in epoch_batches(ds, 3, epoch, seed=2, shuffle_buffer=8)]

    whole, resumed = batches(1), batches(1)[2:]
    assert len(whole) >= 4 and len(resumed) == len(whole) - 2
    for a, b in zip(whole[2:], resumed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_validation_stays_every_sample_once_and_the_job_reads_weighted_epochs(ray_session, latent_shards,
                                                                              tmp_path):
    """The job's datasets: "val" is every val sample once whatever its weight; ``train_epoch`` (what the loop
    reads with data.weighted, the default) is the epoch's draws."""
    from gaia2.world_model.train_config import train_config
    from jobs.specs import SPECS

    shards, _, _ = _reweighted(latent_shards, tmp_path / "w")
    cfg = train_config("tiny", overrides={"data": {"shards": shards, "batch_size": 2, "val_samples": 1000},
                                          "model": {"latent_steps": 3, "conditioning": {"max_agents": 4}},
                                          "seed": 3})
    assert cfg.data.weighted
    key_of = _fingerprints(shards, cfg.model.cameras)

    def keys(ds):
        return [key_of[np.ascontiguousarray(r["latents"], np.float32).tobytes()] for r in ds.take_all()]

    spec = SPECS["world-model"]
    val = [r["key"] for r in pq.read_table(os.path.join(shards, "manifest.parquet")).to_pylist() if r["split"] == "val"]
    assert sorted(keys(spec.datasets(cfg)["val"])) == sorted(val)
    assert keys(spec.train_epoch(cfg, 2, 0, 1)) == _expected_keys(shards, 3, 2)


def test_shards_and_manifest_that_disagree_are_a_data_error(ray_session, latent_shards, tmp_path):
    from pipelines.world_model.train_data import weighted_sample_dataset

    table = pq.read_table(os.path.join(latent_shards, "manifest.parquet"))
    root = tmp_path / "w"
    os.makedirs(root)
    os.symlink(os.path.join(latent_shards, "train"), os.path.join(root, "train"))
    extra = pa.table({c: [table.column(c)[0].as_py() if c != "key" else "ghost"] for c in table.column_names},
                     schema=table.schema)
    pq.write_table(pa.concat_tables([table, extra]), os.path.join(root, "manifest.parquet"))
    with pytest.raises(DataError, match=r"1 train samples of the manifest are in no train/\*\.tar .*'ghost'"):
        weighted_sample_dataset(str(root), 2, 4, 0.5, 4, seed=0, epoch=0)
    first_train = next(i for i, s in enumerate(table.column("split").to_pylist()) if s == "train")
    pq.write_table(table.filter(pa.array([i != first_train for i in range(table.num_rows)])),
                   os.path.join(root, "manifest.parquet"))
    with pytest.raises(DataError, match="have no manifest row"):
        weighted_sample_dataset(str(root), 2, 4, 0.5, 4, seed=0, epoch=0)
