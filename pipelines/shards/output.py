"""The build's output location: one writer at a time, and what makes two builds the same build.

Lock: ``<out>/_lock.json`` holds its owner (host, process, a random token), when it was taken and a
heartbeat the holder refreshes every ``lock.heartbeat_s``. A second build is refused with the owner named;
a lock whose heartbeat is older than ``lock.stale_s`` (its holder died) is taken over, and said so. On a
local disk the lock file is created exclusively (a hard link); object storage has no such primitive through
``pyarrow.fs``, so the taker writes its lock, waits, and reads it back: of two builds starting within that
moment the one whose write landed last proceeds and the other is refused. (Locally the lock appears whole,
by a hard link that fails if the name is taken.) The heartbeat re-reads the lock
before it refreshes it: a holder that finds another owner there stops the build before publishing.

Fingerprint: what determines the bytes of the shards, and nothing else. The config fields that shape
samples (not resources, batch sizes, concurrency, retries, gates or the lock), every clip record's bytes,
the size and modification time of each video and each camera image (one listing per directory holding several,
a lookup for the rest), the geofences' contents and the weights of the CLIP model and the detector (file names,
sizes and SHA-256). A build that ran out of memory resumes with smaller batches; changed inputs are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterable

from gaia2 import storage
from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.geofence import Geofences
from pipelines.shards.common import record_text

LOCK_FILE = "_lock.json"
BUILD_FILE = "build.json"
# Config fields that change how fast a build runs, never what it writes.
NOT_FINGERPRINTED = {
    "preset": None, "resources": None, "retry": None, "gate": None, "lock": None,
    "ingest": {"batch_size"},
    "detection": {"batch_size", "num_gpus", "num_cpus", "concurrency", "checkpoint"},
    "embedding": {"batch_size", "num_gpus", "num_cpus", "concurrency", "clip_path", "placement"},
    "split": {"geofences"},
}


class OutputConflict(RuntimeError):
    """The output directory holds a build of different inputs or configuration."""


class OutputLocked(RuntimeError):
    """Another build holds the output's lock."""


# --------------------------------------------------------------------------------------------- lock
class OutputLock:
    """``with OutputLock(out, heartbeat_s, stale_s):`` holds the output for one build."""

    def __init__(self, out_dir: str, heartbeat_s: float, stale_s: float, log: Callable[[str], None] = print,
                 settle_s: float = 1.0) -> None:
        self.path = storage.join(out_dir, LOCK_FILE)
        self.out_dir, self.heartbeat_s, self.stale_s, self.log, self.settle_s = (
            out_dir, heartbeat_s, stale_s, log, settle_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.time()
        self.lost: str | None = None      # set by the heartbeat when another build took the lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                "heartbeat": time.time()}

    def _read(self) -> dict | None:
        try:
            return json.loads(storage.read_bytes(self.path))
        except FileNotFoundError:
            return None
        except ValueError:   # torn by a crash mid-write: held as of its file's time, so it goes stale in time
            stat = storage.stat(self.path)
            return {"owner": "? (unreadable lock file)", "heartbeat": stat[1] / 1e9 if stat else 0.0}

    def _refuse(self, held: dict) -> None:
        age = time.time() - float(held.get("heartbeat", 0))
        raise OutputLocked(
            f"{storage.redact(self.out_dir)} is being written by another build: lock held by {held.get('owner', '?')} "
            f"(started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(held.get('started', 0))))}, "
            f"heartbeat {age:.0f} s ago; reclaimed after {self.stale_s:.0f} s without one). Wait for it, or "
            f"choose another --out")

    def acquire(self) -> "OutputLock":
        held = self._read()
        if held is not None:
            if time.time() - float(held.get("heartbeat", 0)) < self.stale_s:
                self._refuse(held)
            self.log(f"[shards] taking over a stale lock of {held.get('owner', '?')} (no heartbeat for "
                     f"{time.time() - float(held.get('heartbeat', 0)):.0f} s)")
            storage.remove(self.path)
        data = json.dumps(self._record()).encode()
        if storage.is_uri(self.path):
            storage.write_atomic(self.path, data)
            time.sleep(self.settle_s)   # a competitor's write in this moment wins; we then see its owner
        else:
            storage.makedirs(self.out_dir)
            tmp = f"{self.path}.{uuid.uuid4().hex[:12]}{storage.PARTIAL}"
            with open(tmp, "wb") as f:
                f.write(data)
            try:   # a hard link appears whole and only if the name is free: create-if-absent with content
                os.link(tmp, self.path)
            except FileExistsError:
                self._refuse(self._read() or {})
            finally:
                os.remove(tmp)
        held = self._read()
        if held is None or held.get("owner") != self.owner:
            self._refuse(held or {})
        self._thread = threading.Thread(target=self._beat, name="gaia2-output-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            held = self._read()
            if held is None or held.get("owner") != self.owner:
                self.lost = f"the output's lock was taken by {held.get('owner', '?') if held else 'nobody (deleted)'}"
                self.log(f"[shards] {self.lost}; this build will stop before publishing")
                return
            try:
                storage.write_atomic(self.path, json.dumps({**held, "heartbeat": time.time()}).encode())
            except OSError as err:   # a storage hiccup: the next beat tries again
                self.log(f"[shards] could not refresh the output's lock ({err})")

    def check(self) -> None:
        """Raise if the lock was lost (the build must not publish over another's output)."""
        if self.lost:
            raise OutputLocked(f"{storage.redact(self.out_dir)}: {self.lost}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = self._read()
        if held is not None and held.get("owner") == self.owner:
            storage.remove(self.path)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -------------------------------------------------------------------------------------- fingerprint
def sample_config(cfg: ShardBuildConfig) -> dict:
    """The config fields that decide the samples' bytes (``NOT_FINGERPRINTED`` left out)."""
    out = cfg.model_dump()
    for section, fields in NOT_FINGERPRINTED.items():
        if fields is None:
            out.pop(section, None)
        else:
            for name in fields:
                out[section].pop(name, None)
    return out


def weights_digest(directory: str | None) -> str:
    """SHA-256 over a model directory's file names, sizes and contents ("" without one)."""
    if not directory:
        return ""
    h = hashlib.sha256()
    for rel in storage.list_files(directory):
        data = storage.read_bytes(storage.join(directory, rel))
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def video_stats(videos: Iterable[str]) -> dict[str, tuple[int, float] | None]:
    """(size, mtime) of each video or image: one listing of each directory holding several of them (a clip's
    directory, a nuScenes camera's folder of frames), a lookup for the rest."""
    videos = sorted(set(videos))
    by_dir: dict[str, list[str]] = {}
    for v in videos:
        by_dir.setdefault(storage.dirname(v), []).append(v)
    out: dict[str, tuple[int, float] | None] = {}
    import pyarrow.fs as pafs

    for directory, members in by_dir.items():
        if len(members) < 4:
            out.update((v, storage.stat(v)) for v in members)
            continue
        fs, base = storage.resolve(directory)
        listed = {}
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True)):
            if info.type == pafs.FileType.File:
                listed[info.path.replace(os.sep, "/").rsplit("/", 1)[-1]] = (info.size, float(info.mtime_ns or 0))
        out.update((v, listed.get(storage.basename(v))) for v in members)
    return out


def fingerprint(cfg: ShardBuildConfig, refs: list, rows: list[dict], geofences: Geofences,
                split_lists: str = "") -> str:
    """Hash of what decides the output's bytes (see the module's docstring); ``split_lists``: the digest of
    the official split's lists (``split.kind: official``)."""
    h = hashlib.sha256(json.dumps(sample_config(cfg), sort_keys=True).encode())
    h.update(json.dumps(geofences.to_geojson(), sort_keys=True).encode())
    h.update(split_lists.encode())
    h.update(weights_digest(cfg.embedding.clip_path).encode())
    if cfg.detection.kind == "network":
        h.update(weights_digest(cfg.detection.checkpoint).encode())
    for ref in refs:
        h.update(ref.ref_id.encode())
        if ref.record is not None:
            h.update(ref.record.encode())
        else:
            try:
                h.update(storage.read_bytes(ref.location))
            except OSError:
                h.update(b"\0unreadable")
    files = {r["files_json"]: None for r in rows if r["kind"] == "window"}   # a clip's windows share one list
    videos = [v for listed in files for v in json.loads(record_text(listed))]
    for video, stat in video_stats(videos).items():
        h.update(f"{video}\0{stat}".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ output
def prepare(out_dir: str, cfg: ShardBuildConfig, fp: str, geofences: Geofences) -> bool:
    """Create or reopen ``out_dir`` (under its lock); True when resuming an earlier build of the same inputs."""
    import yaml

    storage.makedirs(out_dir)
    build_file = storage.join(out_dir, BUILD_FILE)
    resuming = False
    try:
        previous = json.loads(storage.read_bytes(build_file))
    except FileNotFoundError:
        previous = None
    if previous is not None:
        if previous.get("fingerprint") != fp:
            raise OutputConflict(
                f"{storage.redact(out_dir)} holds a build of different inputs or configuration (fingerprint "
                f"{str(previous.get('fingerprint', '?'))[:12]} != {fp[:12]}); choose a new --out or delete it")
        resuming = True
    else:
        write_build_record(out_dir, fp, complete=False)
    # Leftovers of interrupted writes are never complete files; only the lock's holder gets here.
    storage.clean_partials(out_dir)
    storage.write_text(storage.join(out_dir, "config.yaml"), yaml.safe_dump(cfg.model_dump(), sort_keys=True))
    storage.write_text(storage.join(out_dir, "geofences.geojson"),
                       json.dumps(geofences.to_geojson(), indent=1, sort_keys=True))
    return resuming


def write_build_record(out_dir: str, fp: str, complete: bool, **extra) -> None:
    storage.write_text(storage.join(out_dir, BUILD_FILE),
                       json.dumps({"fingerprint": fp, "complete": complete, **extra}, sort_keys=True))
