"""Where the service keeps its state and results: a directory or an object-storage prefix (``pyarrow.fs``), shared
by every replica.

    <root>/generations/<id>/status.json     what the ingress knows (queued, running, done, ...), rewritten whole
    <root>/generations/<id>/progress.json   the generator's progress (window, step), rewritten whole
    <root>/generations/<id>/cancel          present once a client cancelled it
    <root>/generations/<id>/result/         video.mp4, cameras/<name>.mp4, latents.npy, spec.json
    <root>/uploads/<id>.npy                 uploaded latents
    <root>/service/models.json              the models the generator serves now

Names are ids the service made (32 hex digits) and camera names checked against the generation's rig: nothing a
client sends becomes a path. A whole file is written at once (a temporary name then a rename on a directory,
a single put on object storage), so a reader never sees half of one. ``sweep`` applies the time to live and the
size cap to finished generations and uploads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from gaia2 import storage

ID = re.compile(r"^[0-9a-f]{32}$")
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FINAL = ("done", "failed", "cancelled")
redact = storage.redact   # the service's modules import it from here; one mechanism, gaia2.storage's


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Usage:
    generations: int
    bytes: int


class ResultStore:
    def __init__(self, uri: str) -> None:
        if "://" not in uri:
            uri = os.path.abspath(uri)
            os.makedirs(uri, exist_ok=True)
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.fs.create_dir(f"{self.root}/service", recursive=True)

    # ---------------------------------------------------------------------------------------- paths
    def generation_dir(self, gid: str) -> str:
        if not ID.match(gid):
            raise KeyError(gid)
        return f"{self.root}/generations/{gid}"

    def upload_path(self, uid: str) -> str:
        if not ID.match(uid):
            raise KeyError(uid)
        return f"{self.root}/uploads/{uid}.npy"

    def result_path(self, gid: str, name: str) -> str:
        """``name``: video.mp4, latents.npy, spec.json or cameras/<camera>.mp4 (the camera's name checked)."""
        if name not in ("video.mp4", "latents.npy", "spec.json"):
            camera = name.removeprefix("cameras/").removesuffix(".mp4")
            if name != f"cameras/{camera}.mp4" or not NAME.match(camera):
                raise KeyError(name)
        return f"{self.generation_dir(gid)}/result/{name}"

    # ------------------------------------------------------------------------------------- whole files
    def write_bytes(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if self.local:
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.partial"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            with self.fs.open_output_stream(path) as f:
                f.write(data)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def write_json(self, path: str, value: dict) -> None:
        self.write_bytes(path, json.dumps(value, sort_keys=True).encode())

    def read_json(self, path: str) -> dict | None:
        data = self.read_bytes(path)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def size(self, path: str) -> int | None:
        info = self.fs.get_file_info(path)
        return None if info.type == pafs.FileType.NotFound else info.size

    def local_file(self, path: str) -> str | None:
        """The local path of ``path`` when the store is a directory (served with range requests)."""
        return path if self.local and os.path.isfile(path) else None

    # ---------------------------------------------------------------------------------- generations
    def status(self, gid: str) -> dict | None:
        return self.read_json(f"{self.generation_dir(gid)}/status.json")

    def set_status(self, gid: str, value: dict) -> None:
        self.write_json(f"{self.generation_dir(gid)}/status.json", value)

    def progress(self, gid: str) -> dict | None:
        return self.read_json(f"{self.generation_dir(gid)}/progress.json")

    def set_progress(self, gid: str, value: dict) -> None:
        self.write_json(f"{self.generation_dir(gid)}/progress.json", value)

    def cancel(self, gid: str) -> None:
        self.write_bytes(f"{self.generation_dir(gid)}/cancel", b"")

    def cancelled(self, gid: str) -> bool:
        return self.exists(f"{self.generation_dir(gid)}/cancel")

    def staging(self, gid: str) -> str:
        """A local directory to write a generation's result into before ``publish``."""
        if self.local:
            path = os.path.join(self.root, "staging", f"{gid}-{uuid.uuid4().hex[:8]}")
        else:
            import tempfile
            path = tempfile.mkdtemp(prefix=f"gaia2-{gid}-")
        os.makedirs(path, exist_ok=True)
        return path

    def publish(self, gid: str, staged: str) -> None:
        """Move a staged result into place (a rename on a directory, an upload then a delete otherwise)."""
        dest = f"{self.generation_dir(gid)}/result"
        if self.local:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.isdir(dest):
                shutil.rmtree(dest)
            os.replace(staged, dest)
            return
        pafs.copy_files(staged, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        shutil.rmtree(staged, ignore_errors=True)

    def delete_generation(self, gid: str) -> None:
        try:
            self.fs.delete_dir(self.generation_dir(gid))
        except (FileNotFoundError, OSError):
            pass

    def unfinished(self) -> list[str]:
        """Ids of generations whose status is not final."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(f"{self.root}/generations", allow_not_found=True))
        except (FileNotFoundError, OSError):
            return []
        out = []
        for info in infos:
            gid = info.path.rstrip("/").rsplit("/", 1)[-1]
            if info.type == pafs.FileType.Directory and ID.match(gid):
                status = self.status(gid)
                if status is not None and status.get("status") not in FINAL:
                    out.append(gid)
        return out

    # ---------------------------------------------------------------------------------- housekeeping
    def _tree(self, path: str) -> list[pafs.FileInfo]:
        try:
            return [i for i in self.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
                    if i.type == pafs.FileType.File]
        except (FileNotFoundError, OSError):
            return []

    def usage(self) -> Usage:
        files = self._tree(f"{self.root}/generations") + self._tree(f"{self.root}/uploads")
        gens = {f.path.split("/generations/", 1)[1].split("/", 1)[0] for f in files if "/generations/" in f.path}
        return Usage(len(gens), sum(f.size for f in files))

    def sweep(self, ttl_s: float, max_bytes: int, now: float | None = None) -> list[str]:
        """Delete finished generations and uploads older than ``ttl_s``, then the oldest finished ones while the
        store holds more than ``max_bytes``; returns what was deleted. Unfinished generations are kept."""
        now = time.time() if now is None else now
        deleted: list[str] = []
        finished: list[tuple[float, str, int]] = []     # (finished at, id, bytes)
        total = 0
        sizes: dict[str, int] = {}
        for f in self._tree(f"{self.root}/generations"):
            gid = f.path.split("/generations/", 1)[1].split("/", 1)[0]
            sizes[gid] = sizes.get(gid, 0) + f.size
        for gid, size in sizes.items():
            total += size
            status = self.status(gid) if ID.match(gid) else None
            if status is None or status.get("status") not in FINAL:
                continue
            finished.append((float(status.get("finished") or status.get("created") or 0.0), gid, size))
        for f in self._tree(f"{self.root}/uploads"):
            total += f.size
            mtime = f.mtime.timestamp() if f.mtime is not None else now
            if now - mtime > ttl_s:
                self.fs.delete_file(f.path)
                total -= f.size
                deleted.append(f"upload {os.path.basename(f.path)}")
        finished.sort()
        for at, gid, size in finished:
            if now - at > ttl_s or total > max_bytes:
                self.delete_generation(gid)
                total -= size
                deleted.append(gid)
        staging = os.path.join(self.root, "staging") if self.local else None
        if staging and os.path.isdir(staging):   # left by a replica that died while decoding
            for name in os.listdir(staging):
                path = os.path.join(staging, name)
                if now - os.path.getmtime(path) > ttl_s:
                    shutil.rmtree(path, ignore_errors=True)
        return deleted
