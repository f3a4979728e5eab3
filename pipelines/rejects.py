"""Per-sample failures as values: the reject columns of Ray Data batches, the per-row loop that fills
them, and the one row layout of every rejects table (the shard build's, the latent encoding's).

A batch carries three string columns, all empty while its row is fine:
    reject_stage    the stage that gave up on the row: the shard build's ingest, decode, detect, encode,
                    embed, pack (and select, for windows left out); latent encoding's read, decode, encode
    reject_reason   a ``Reason`` value (gaia2/schema/errors.py), what data engineers filter on
    reject_detail   for a person: which camera, which frame, which exception; "transient error after 3
                    attempts: ..." for a row whose retries ran out (pipelines/retry.py)
A stage runs its work only on rows not yet rejected and passes the others' columns on unchanged.
Reason and detail stay apart all the way from the stage that finds the failure to the table: no
string is built to be parsed back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, TypeVar

import numpy as np
import pyarrow as pa

from gaia2.schema.errors import ClipError, Reason
from pipelines.retry import RetriesExhausted, retrying

if TYPE_CHECKING:
    from gaia2.config.shards import RetryConfig

T = TypeVar("T")
REJECT_COLUMNS = ("reject_stage", "reject_reason", "reject_detail")

# One row per rejected clip, window or sample. Columns a table has no use for stay empty: an ingest
# reject has no key, window, shard or split; only ingest knows the record's location.
REJECTS_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("key", pa.string()), ("window", pa.int64()), ("shard", pa.string()),
    ("split", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("location", pa.string())])


@dataclass(frozen=True)
class Reject:
    stage: str
    reason: str     # a Reason value
    detail: str

    @classmethod
    def of(cls, stage: str, err: Exception, fallback: Reason) -> "Reject":
        """A ``ClipError`` keeps its reason and detail; any other exception is ``fallback``, with the
        exception's type and message as the detail (retries that ran out: how many, and the last error)."""
        if isinstance(err, ClipError):
            return cls(stage, err.reason.value, err.detail)
        if isinstance(err, RetriesExhausted):
            return cls(stage, fallback.value, str(err))
        return cls(stage, fallback.value, f"{type(err).__name__}: {err}")

    def columns(self) -> dict[str, str]:
        """This reject as one row's values of the batch columns."""
        return dict(zip(REJECT_COLUMNS, (self.stage, self.reason, self.detail)))


def batch_rejects(batch: Mapping[str, np.ndarray], n: int) -> list[Reject | None]:
    """The rejects ``batch`` (of ``n`` rows) arrives with; all None before any stage has run."""
    if REJECT_COLUMNS[0] not in batch:
        return [None] * n
    return [Reject(str(s), str(r), str(d)) if r else None
            for s, r, d in zip(*(batch[c] for c in REJECT_COLUMNS))]


def reject_columns(rejects: Sequence[Reject | None]) -> dict[str, np.ndarray]:
    """Per-row rejects -> the three batch columns (empty strings where a row is fine)."""
    rows = [r.columns() if r else dict.fromkeys(REJECT_COLUMNS, "") for r in rejects]
    return {c: np.asarray([row[c] for row in rows], dtype=object) for c in REJECT_COLUMNS}


def map_rows(fn: Callable[[int], T], n: int, stage: str, fallback: Reason, default: T,
             rejects: Sequence[Reject | None] | None = None, *,
             retry: RetryConfig | None = None) -> tuple[list[T], list[Reject | None]]:
    """Run ``fn(i)`` for each row i < n not already rejected; a failure rejects its row, never the batch.

    With ``retry``, a row that fails transiently is tried again (``pipelines.retry.retrying``) before it is
    rejected; without, every failure rejects at once. Returns each row's result (``default``, one shared
    object, for a row rejected before or here) and its reject (None for a row that is fine): see
    ``Reject.of`` for how an exception becomes one.
    """
    results: list[T] = [default] * n
    out = list(rejects) if rejects is not None else [None] * n
    for i in range(n):
        if out[i] is not None:
            continue
        try:
            results[i] = fn(i) if retry is None else retrying(lambda: fn(i), retry)
        except Exception as err:   # a bad sample must not take the job down: it becomes a reject row
            out[i] = Reject.of(stage, err, fallback)
    return results, out


def reject_row(reject: Reject, clip_id: str, key: str = "", window: int = -1, shard: str = "", split: str = "",
               location: str = "") -> dict:
    """One row of a rejects table (``REJECTS_SCHEMA``)."""
    return {"clip_id": clip_id, "key": key, "window": window, "shard": shard, "split": split,
            "stage": reject.stage, "reason": Reason(reject.reason).value, "detail": reject.detail,
            "location": location}


def rejects_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)
