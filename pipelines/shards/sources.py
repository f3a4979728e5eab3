"""Clip sources: a clip directory, a Parquet manifest or a nuScenes dataset, each yielding clip records.

A source only lists; parsing and validation happen in the ingest stage, on Ray workers, so that a
malformed record becomes a reject row rather than a crash of the driver. All live on a local disk or
on object storage (``s3://bucket/clips``, ``gs://bucket/clips/manifest.parquet``; ``gaia2.storage``).

nuScenes: ``nuscenes:///data/nuscenes?version=v1.0-trainval`` (a local root; ``nuscenes://relative/root``
too), ``nuscenes+s3://bucket/nuscenes?version=v1.0-mini`` or ``nuscenes+gs://...`` (other query options
stay on the storage URI). The driver reads the version's JSON tables once and groups them per scene
(``gaia2.datasets.nuscenes_tables``); each scene's bundle is the record its ingest task converts
(``gaia2.datasets.nuscenes_clip``), so that a dangling token or a missing table is that scene's reject.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

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
    kind: str = "clip"   # "clip": a clip record; "nuscenes": a scene bundle (gaia2.datasets.nuscenes_tables)


NUSCENES_VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")


def is_nuscenes(source: str) -> bool:
    return source.startswith(("nuscenes://", "nuscenes+"))


def nuscenes_root(source: str) -> tuple[str, str]:
    """``nuscenes:///data/nuscenes?version=v1.0-mini`` -> (dataset root, version); ``SourceError`` if malformed."""
    scheme, sep, rest = source.partition("://")
    if not sep or scheme not in ("nuscenes", "nuscenes+s3", "nuscenes+gs"):
        raise SourceError(f"source {storage.redact(source)!r}: a nuScenes source is nuscenes:///<root>?version=..., "
                          f"nuscenes+s3://<bucket>/<root>?version=... or nuscenes+gs://...")
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    version = options.pop("version", "v1.0-trainval")
    if version not in NUSCENES_VERSIONS:
        raise SourceError(f"source {storage.redact(source)!r}: version {version!r} is not one of {NUSCENES_VERSIONS}")
    if scheme == "nuscenes":
        root = storage.absolute(path or ".")
    else:
        root = f"{scheme.split('+')[1]}://{path}" + (f"?{urlencode(options)}" if options else "")
    return root, version


def list_clips(path: str) -> list[ClipRef]:
    """A directory of ``<clip_id>/clip.json``, a ``.parquet`` manifest or a nuScenes dataset -> clip references."""
    try:
        if is_nuscenes(path):
            return _nuscenes_refs(path)
        if storage.basename(path).endswith(".parquet"):
            return _manifest_refs(path)
        if storage.is_dir(path) or (storage.is_uri(path) and storage.list_dirs(path)):
            return _clipdir_refs(path)
    except SourceError:
        raise
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


def _nuscenes_refs(source: str) -> list[ClipRef]:
    from gaia2.datasets.nuscenes_tables import NuScenesError, Tables

    root, version = nuscenes_root(source)
    try:
        tables = Tables(root, version)
    except NuScenesError as err:
        raise SourceError(f"source {storage.redact(source)!r}: {err}") from None
    refs = []
    for i, scene in enumerate(tables.scenes):
        name = scene.get("name") if isinstance(scene.get("name"), str) and scene.get("name") else f"scene{i:06d}"
        location = f"{storage.join(root, version, 'scene.json')}#scene={name}"
        refs.append(ClipRef(name, location, root, json.dumps(tables.bundle(scene), sort_keys=True), "nuscenes"))
    if not refs:
        raise SourceError(f"source {storage.redact(source)!r}: scene.json lists no scenes")
    return sorted(refs, key=lambda r: r.ref_id)


def source_summary(refs: list[ClipRef]) -> dict:
    """What the build report says of the source beyond its clips: for nuScenes, the annotations by category
    (mapped to ours, ignored on purpose, unknown to the mapping)."""
    bundles = [ref for ref in refs if ref.kind == "nuscenes"]
    if not bundles:
        return {}
    from gaia2.datasets.nuscenes_clip import category_counts

    total = {"mapped": Counter(), "ignored": Counter(), "unknown": Counter()}
    for ref in bundles:
        try:
            counts = category_counts(json.loads(ref.record))
        except (ValueError, AttributeError, TypeError):
            continue   # the scene's own reject says why
        for part, counter in counts.items():
            total[part].update(counter)
    return {"kind": "nuscenes", "scenes": len(bundles),
            "categories": {part: dict(sorted(c.items())) for part, c in total.items()}}


def read_record(ref: ClipRef) -> Clip:
    """Parse the referenced record; raises ClipError with the reject reason."""
    if ref.record is None:
        return Clip.from_json_file(ref.location)
    if ref.kind == "nuscenes":
        from gaia2.datasets.nuscenes_clip import scene_record

        return Clip.from_dict(scene_record(json.loads(ref.record)), base_dir=ref.base_dir)
    return Clip.from_dict(json.loads(ref.record), base_dir=ref.base_dir)


def write_manifest(clip_root: str, out_path: str) -> int:
    """Turn a clip directory into a Parquet manifest (video paths relative to the manifest)."""
    base = os.path.dirname(os.path.abspath(out_path))
    rows = [json.loads(dumps(read_record(ref).to_dict(base_dir=base))) for ref in _clipdir_refs(clip_root)]
    pq.write_table(pa.Table.from_pylist(rows), out_path)
    return len(rows)
