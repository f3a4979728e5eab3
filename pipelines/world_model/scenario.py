"""Scenario embeddings for world-model training: an external table of vectors keyed by sample key.

The paper conditions GAIA-2 on scenario embeddings from a separate driving model (§2.2.3). Any model can
provide them: a Parquet file with one row per sample,

    key         string      the sample key of the shards (``<key>.json``'s "key")
    embedding   list<float> the vector, D = ``model.conditioning.scenario_dim`` values (float32 or float64)

named in the training config (``data.scenario``). Training samples whose key is in the table get its
vector (``scenario``) and ``scenario_valid`` True; the others get zeros and ``scenario_valid`` False, which
the world model treats exactly like a dropped scenario. ``check_table`` validates the file before any work;
``lookup`` is what the Ray Data tasks call (the table is read once per worker process).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipelines.splits import DataError

KEY, EMBEDDING = "key", "embedding"


@dataclass
class ScenarioTable:
    keys: dict[str, int]     # sample key -> row
    vectors: np.ndarray      # (rows, D) float32

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def read_table(path: str) -> ScenarioTable:
    """Read and validate the Parquet file; a ``DataError`` names ``data.scenario``, the file and the problem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"data.scenario: {path!r}"
    if not os.path.isfile(path):
        raise DataError(f"{where}: no such file (a Parquet table with columns {KEY!r}, {EMBEDDING!r})")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{where}: not a readable Parquet file ({err})") from None
    missing = [c for c in (KEY, EMBEDDING) if c not in table.column_names]
    if missing:
        raise DataError(f"{where}: lacks column(s) {missing}; it has {table.column_names}")
    key_type, emb_type = table.schema.field(KEY).type, table.schema.field(EMBEDDING).type
    if not (pa.types.is_string(key_type) or pa.types.is_large_string(key_type)):
        raise DataError(f"{where}: column {KEY!r} must be strings, got {key_type}")
    if not (pa.types.is_list(emb_type) or pa.types.is_large_list(emb_type) or pa.types.is_fixed_size_list(emb_type)) \
            or not pa.types.is_floating(emb_type.value_type):
        raise DataError(f"{where}: column {EMBEDDING!r} must be lists of floats, got {emb_type}")
    if table.num_rows == 0:
        raise DataError(f"{where}: the table has no rows")
    keys = table.column(KEY).to_pylist()
    if any(k is None for k in keys):
        raise DataError(f"{where}: {sum(k is None for k in keys)} rows have a null {KEY!r}")
    if len(set(keys)) != len(keys):
        dup, n = Counter(keys).most_common(1)[0]
        raise DataError(f"{where}: key {dup!r} appears {n} times")
    column = table.column(EMBEDDING).combine_chunks()
    if column.null_count:
        raise DataError(f"{where}: {column.null_count} rows have a null {EMBEDDING!r}")
    lengths = np.asarray(column.value_lengths()) if not pa.types.is_fixed_size_list(emb_type) \
        else np.full(len(column), emb_type.list_size)
    if len(set(lengths.tolist())) != 1:
        raise DataError(f"{where}: embeddings have different lengths ({sorted(set(lengths.tolist()))[:5]})")
    values = column.flatten().to_numpy(zero_copy_only=False)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values.reshape(len(keys), -1)).all(1))[0])
        raise DataError(f"{where}: the embedding of key {keys[bad]!r} holds NaN or infinite values")
    return ScenarioTable({k: i for i, k in enumerate(keys)}, values.reshape(len(keys), -1).astype(np.float32))


def check_table(path: str, dim: int, sample_keys: dict[str, list[str]]) -> dict[str, float]:
    """Validate the table against the model's ``scenario_dim`` and the splits' sample keys
    ({split: keys}) -> the share of each split's samples that have a vector (``scenario_coverage_<split>``).
    A table that covers no training sample is an error (it would train nothing)."""
    table = read_table(path)
    if table.dim != dim:
        raise DataError(f"data.scenario: {path!r} holds {table.dim}-dimensional embeddings, the model takes "
                        f"model.conditioning.scenario_dim = {dim}")
    coverage = {split: (sum(k in table.keys for k in keys) / len(keys) if keys else 0.0)
                for split, keys in sample_keys.items()}
    if not coverage.get("train"):
        example = next(iter(table.keys))
        raise DataError(f"data.scenario: no training sample's key is in {path!r} (its keys look like {example!r}; "
                        f"the shards' like {sample_keys['train'][0] if sample_keys.get('train') else '?'!r})")
    return {f"scenario_coverage_{split}": round(c, 6) for split, c in coverage.items()}


@functools.lru_cache(maxsize=2)
def _cached(path: str, mtime_ns: int, size: int) -> ScenarioTable:
    return read_table(path)


def lookup(path: str, keys: list[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample keys -> (scenario (B, D) float32, zeros where absent; scenario_valid (B,) bool). The table is
    read once per process (and again if the file changes)."""
    st = os.stat(path)
    table = _cached(path, st.st_mtime_ns, st.st_size)
    if table.dim != dim:
        raise DataError(f"data.scenario: {path!r} holds {table.dim}-dimensional embeddings, expected {dim}")
    rows = np.array([table.keys.get(k, -1) for k in keys], np.int64)
    valid = rows >= 0
    out = np.zeros((len(keys), dim), np.float32)
    out[valid] = table.vectors[rows[valid]]
    return out, valid
