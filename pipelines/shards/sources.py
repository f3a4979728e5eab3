"""Clip sources: a clip directory or a Parquet manifest, both yielding Clip records (as JSON).

A source only lists; parsing and validation happen in the ingest stage, on Ray workers, so that a
malformed record becomes a reject row rather than a crash of the driver. Both live on a local disk or
on object storage (``s3://bucket/clips``, ``gs://bucket/clips/manifest.parquet``; ``gaia2.storage``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from gaia2 import storage
from gaia2.schema.clip import Clip, dumps


class SourceError(ValueError):
    """The source itself (not one clip of it) cannot be used."""


@dataclass(frozen=True)
class ClipRef:
    ref_id: str          # stable id used when the record cannot even be parsed (dir name, row number)
    location: str        # where the record came from, for the rejects table
    base_dir: str        # relative video paths resolve against this
    record: str | None   # the record as JSON text (manifest rows); None = read ``location`` (clip.json)


def list_clips(path: str) -> list[ClipRef]:
    """A directory of ``<clip_id>/clip.json`` or a ``.parquet`` manifest -> clip references, sorted."""
    try:
        if storage.basename(path).endswith(".parquet"):
            return _manifest_refs(path)
        if storage.is_dir(path) or (storage.is_uri(path) and storage.list_dirs(path)):
            return _clipdir_refs(path)
    except (OSError, ValueError) as err:   # a bucket that does not exist, no credentials, a bad URI
        raise SourceError(f"source {storage.redact(path)!r}: cannot be read ({err})") from None
    raise SourceError(f"source {storage.redact(path)!r}: not a clip directory or a .parquet manifest")


def _clipdir_refs(root: str) -> list[ClipRef]:
    root = storage.absolute(root)
    refs = []
    for name in storage.list_dirs(root):
        if not name.startswith((".", "_")):
            d = storage.join(root, name)
            refs.append(ClipRef(name, storage.join(d, "clip.json"), d, None))
    if not refs:
        raise SourceError(f"source {storage.redact(root)!r}: no clip directories (expected <root>/<clip_id>/clip.json)")
    return refs


def _manifest_refs(path: str) -> list[ClipRef]:
    path = storage.absolute(path)
    try:
        with storage.open_input(path) as f:
            rows = pq.read_table(f).to_pylist()
    except (OSError, pa.ArrowException) as err:
        raise SourceError(f"manifest {storage.redact(path)!r}: cannot read ({err})") from None
    base = storage.dirname(path)
    refs = []
    for i, row in enumerate(rows):
        row = {k: v for k, v in row.items() if v is not None}
        if isinstance(row.get("metadata"), dict):   # a struct column fills absent keys with null
            row["metadata"] = {k: v for k, v in row["metadata"].items() if v is not None}
        # A broken row is still named by its own clip_id where it has one.
        ref_id = row["clip_id"] if isinstance(row.get("clip_id"), str) and row["clip_id"] else f"row{i:08d}"
        refs.append(ClipRef(ref_id, f"{path}#row={i}", base, json.dumps(row)))
    return refs


def read_record(ref: ClipRef) -> Clip:
    """Parse the referenced record; raises ClipError with the reject reason."""
    if ref.record is None:
        return Clip.from_json_file(ref.location)
    return Clip.from_dict(json.loads(ref.record), base_dir=ref.base_dir)


def write_manifest(clip_root: str, out_path: str) -> int:
    """Turn a clip directory into a Parquet manifest (video paths relative to the manifest)."""
    base = os.path.dirname(os.path.abspath(out_path))
    rows = [json.loads(dumps(read_record(ref).to_dict(base_dir=base))) for ref in _clipdir_refs(clip_root)]
    pq.write_table(pa.Table.from_pylist(rows), out_path)
    return len(rows)
