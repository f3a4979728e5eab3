"""Stage 1a: parse and validate each clip, check its videos (or image sequences), cut its windows.

One input row per clip; one output row per window, or a single reject row for a bad clip. No pixels
leave this stage: selection (split, stride, balancing) needs only metadata, and only the selected
windows are decoded in full later. The checked clip record goes along once per clip, compressed
(``to_columns``, ``with_records``), for the window stage to read.

Every record is hostile until checked: a malformed field, a value outside ``ingest.bounds``, a declared
rate, size or frame count its timestamps or video contradict (``ingest.tolerance``), a video path leaving
the source: each is a reject row with its reason and a detail naming the field, never an exception
past the record. A nuScenes scene arrives as its bundle of table rows and is converted here
(``gaia2.datasets.nuscenes_clip``), so that its problems are rejects like any record's. Duplicate clip ids need every row at once: ``dedupe_clip_ids`` runs on the driver.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

import numpy as np

from gaia2 import storage
from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.windows import Window, cut_windows, window_key
from gaia2.schema.clip import Clip, dumps
from gaia2.schema.errors import ClipError, Reason
from gaia2.video.camera_io import check_camera
from pipelines.rejects import REJECT_COLUMNS, map_rows
from pipelines.shards.common import pack_record
from pipelines.shards.sources import ClipRef

COLUMNS = ("kind", "key", "clip_id", "drive_id", "window", "start_time", "end_time", "cameras", "location",
           "clip_json", "files_json", "metadata_json", "track_json", *REJECT_COLUMNS)
# Per clip, not per window: the checked record and the files its cameras read (the build's fingerprint).
PER_CLIP = ("clip_json", "files_json")


def _row(**values: Any) -> dict[str, Any]:
    row = {"kind": "", "key": "", "clip_id": "", "drive_id": "", "window": -1, "start_time": np.nan,
           "end_time": np.nan, "cameras": 0, "location": "", "clip_json": b"", "files_json": b"", "metadata_json": "",
           "track_json": "", **dict.fromkeys(REJECT_COLUMNS, "")}
    row.update(values)
    return row


class IngestClips:
    """Callable Ray Data stage: ``ClipRef`` rows -> window rows and reject rows (stage "ingest")."""

    def __init__(self, config_json: str):
        self.cfg = ShardBuildConfig.model_validate_json(config_json)

    def read(self, ref: ClipRef) -> Clip:
        """Parse and check the referenced record under ``ingest``'s bounds, tolerances and path policy."""
        ingest = self.cfg.ingest
        if ref.record is None:
            return Clip.from_json_file(ref.location, ingest)
        mb = len(ref.record) / 2**20
        if mb > ingest.bounds.max_record_mb:
            raise ClipError(Reason.OUT_OF_BOUNDS, f"record: {mb:.1f} MiB, more than ingest.bounds.max_record_mb = "
                                                  f"{ingest.bounds.max_record_mb}")
        try:
            record = json.loads(ref.record)
        except (ValueError, RecursionError) as err:
            raise ClipError(Reason.INVALID_RECORD, f"record: not JSON ({type(err).__name__}: {err})") from None
        if ref.kind == "nuscenes":   # a scene's bundle of table rows -> its clip record
            from gaia2.datasets.nuscenes_clip import scene_record

            record = scene_record(record)
        return Clip.from_dict(record, base_dir=ref.base_dir, ingest=ingest)

    def windows(self, clip: Clip) -> list[Window]:
        """The clip's windows, once its cameras and videos pass the checks."""
        ingest = self.cfg.ingest
        if len(clip.cameras) < ingest.min_cameras:
            raise ClipError(Reason.MISSING_CAMERA,
                            f"cameras: {len(clip.cameras)}, at least ingest.min_cameras = {ingest.min_cameras} required")
        for cam in clip.cameras:
            check_camera(cam, f"cameras[{cam.name}]", ingest.decode_check, ingest.tolerance)
        windows = cut_windows(clip, self.cfg.window.frames, self.cfg.window.hop, self.cfg.window.grid_hz)
        if not windows:
            raise ClipError(Reason.TOO_SHORT, f"shorter than one window of {self.cfg.window.frames} frames "
                                              f"on the frame grid")
        return windows

    def ingest(self, refs: list[ClipRef]) -> list[dict[str, Any]]:
        """One row per window of each clip, or a single reject row for a clip that cannot be used."""
        n = len(refs)
        # Read first, then check: a clip rejected by the checks is named by its record's clip_id.
        clips, rejects = map_rows(lambda i: self.read(refs[i]), n, "ingest", Reason.INVALID_RECORD, None)
        windows, rejects = map_rows(lambda i: self.windows(clips[i]), n, "ingest", Reason.INVALID_RECORD, [],
                                    rejects)
        rows: list[dict[str, Any]] = []
        for ref, clip, clip_windows, reject in zip(refs, clips, windows, rejects):
            if reject is not None:
                # A record that parsed is named by its clip_id and carries its drive_id; one that did not is
                # named by its ref_id (directory name, manifest row) and has no drive_id (dedupe_clip_ids).
                rows.append(_row(kind="reject", clip_id=clip.clip_id if clip else ref.ref_id,
                                 drive_id=clip.drive_id if clip else "", location=ref.location, **reject.columns()))
                continue
            meta_json = json.dumps(clip.metadata, sort_keys=True)
            # The checked record, compressed (pack_record), once per clip: its windows share the one object.
            record = pack_record(dumps(clip.to_dict()))
            files = pack_record(json.dumps(camera_files(clip)))
            rows.extend(_row(kind="window", key=window_key(clip.clip_id, w.index), clip_id=clip.clip_id,
                             drive_id=clip.drive_id, window=w.index, start_time=w.start_time, end_time=w.end_time,
                             cameras=len(clip.cameras), location=ref.location, clip_json=record, files_json=files,
                             metadata_json=meta_json,
                             track_json=json.dumps(clip.gps.track(w.start_time, w.end_time).tolist()))
                        for w in clip_windows)
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        refs = [ClipRef(str(ref_id), str(location), str(base_dir), str(record) if record else None, str(kind))
                for ref_id, location, base_dir, record, kind in zip(batch["ref_id"], batch["location"],
                                                                    batch["base_dir"], batch["record"],
                                                                    batch.get("kind", ["clip"] * len(batch["ref_id"])))]
        return to_columns(self.ingest(refs))


def camera_files(clip: Clip) -> list[str]:
    """Every file a clip's cameras read: each video, or each image of an image camera (the build fingerprints them)."""
    return [f for cam in clip.cameras for f in (cam.frames or (cam.video,))]


def to_columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Ingest's rows as a Ray Data batch. A table would copy the record into every window's row, so it (and the
    rest of ``PER_CLIP``) travels once per clip, in a ``record`` row of its own (``with_records`` puts it back
    on the driver)."""
    out: list[dict[str, Any]] = []
    sent: set[str] = set()
    blank = {c: _row()[c] for c in PER_CLIP}
    for r in rows:
        if r["kind"] == "window":
            if r["location"] not in sent:
                sent.add(r["location"])
                out.append(_row(kind="record", location=r["location"], **{c: r[c] for c in PER_CLIP}))
            r = {**r, **blank}
        out.append(r)
    dtypes = {"window": np.int64, "cameras": np.int64, "start_time": np.float64, "end_time": np.float64}
    return {c: np.asarray([r[c] for r in out], dtype=dtypes.get(c, object)) for c in COLUMNS}


def with_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``to_columns`` (from any number of batches) as ``IngestClips.ingest`` gave them: each window
    row's ``clip_json`` is its clip's record again (and so for the rest of ``PER_CLIP``), one object per clip;
    the ``record`` rows go."""
    records = {r["location"]: {c: r[c] for c in PER_CLIP} for r in rows if r["kind"] == "record"}
    return [{**r, **records[r["location"]]} if r["kind"] == "window" else r for r in rows if r["kind"] != "record"]


def _natural(location: str) -> list:
    """Sort key comparing the numbers in a location as numbers (``#row=9`` before ``#row=10``)."""
    return [int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", location))]


def dedupe_clip_ids(rows: list[dict[str, Any]],
                    order: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One record per clip_id: each record after the first in source order becomes a ``duplicate_clip_id`` reject.

    ``rows``: ingest's rows of the whole source, from every batch, in any order. ``order``: the locations in
    source order (``[ref.location for ref in refs]``); a location not in it (or no ``order``) sorts after,
    by its text with numbers compared as numbers. A record is its location. Only records that parsed hold
    their clip_id (a record that did not is named by its directory or row, which is no claim). The first
    keeps its rows whatever they are; a later one with windows loses them for one reject row naming the
    first; a later one already rejected keeps its own reason (it is out either way). Keeping the first,
    not rejecting both: the build stays deterministic and loses one record, and the detail says where the
    other is, for a person to decide.

    Returns (rows to go on with, which include the new reject rows; the new reject rows alone).
    """
    rank = {loc: i for i, loc in enumerate(order or ())}
    claims = sorted({(r["location"], r["clip_id"]) for r in rows if r["drive_id"]},
                    key=lambda lc: (rank.get(lc[0], len(rank)), _natural(lc[0])))
    first: dict[str, str] = {}
    for location, clip_id in claims:
        first.setdefault(clip_id, location)
    kept, duplicates, seen = [], [], set()
    for r in rows:
        owner = first.get(r["clip_id"], r["location"])
        if r["kind"] != "window" or r["location"] == owner:
            kept.append(r)
        elif r["location"] not in seen:
            seen.add(r["location"])
            duplicates.append(_row(
                kind="reject", clip_id=r["clip_id"], drive_id=r["drive_id"], location=r["location"],
                reject_stage="ingest", reject_reason=Reason.DUPLICATE_CLIP_ID.value,
                reject_detail=f"clip_id: {r['clip_id']!r} is also the record at {storage.redact(owner)}, earlier "
                              f"in source order (kept)"))
    return kept + duplicates, duplicates


# Ray tasks pickle a function by reference, so each worker imports only this light module (not
# torch or transformers, which the actor stages need): a fresh worker starts in well under a second.
def ingest_batch(batch: dict[str, np.ndarray], config_json: str) -> dict[str, np.ndarray]:
    return IngestClips(config_json)(batch)
