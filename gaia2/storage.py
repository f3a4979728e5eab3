"""One filesystem layer for every job: local paths and object-storage URIs (``s3://``, ``gs://``, ...) through
``pyarrow.fs``.

A location is a string: a local path, or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands. Options
may ride in the query (``s3://bucket/p?endpoint_override=host:9000&scheme=http``) and credentials in the
authority (``s3://KEY:SECRET@bucket/p``), though on a cluster both normally come from the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, workload identity). ``join`` keeps the query on the end, so
``join(root, "train/shard-000000.tar")`` names an object of the same store. ``redact`` drops credentials
and query wherever a location is printed or logged.

Publishing is atomic on both: ``write_atomic`` writes to a temporary name unique to the writer (a local
file, fsync'd, or an object key), then renames it into place (``os.replace``; a server-side copy and
delete on object storage, so a reader sees the old object or the whole new one, never a part).
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import re
import uuid
from typing import Iterator, Sequence

import pyarrow.fs as pafs

PARTIAL = ".partial"   # temporary names end so; only ``clean_partials`` (under the output's lock) removes them


class StorageError(OSError):
    """A location that cannot be used (bad URI, unknown scheme, no such bucket)."""


def is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _split(location: str) -> tuple[str, str]:
    """``s3://b/p?q`` -> (``s3://b/p``, ``?q``); a local path has no query."""
    if not is_uri(location):
        return location.removeprefix("file://"), ""
    base, sep, query = location.partition("?")
    return base, sep + query


# A URI inside any text: scheme:// then everything up to whitespace, a quote or a bracket.
_URI = re.compile(r"""\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s'"<>`]*)""")
# A secret-looking query parameter left in text outside any URI (``url: /api/x?run=1&token=abc``).
_SECRET_PARAM = re.compile(r"""([?&][^=&?\s'"]*(?:token|secret|password|passwd|key|signature|credential)"""
                           r"""[^=&?\s'"]*=)[^&\s'"]*""", re.IGNORECASE)


def _redact_uri(match: re.Match) -> str:
    scheme, rest = match.group(1), match.group(2)
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    # Credentials end at the first "@": a secret may hold an unescaped "/" (AWS secret keys do), so the
    # authority's end is no guide. A path with an "@" loses its head in the printout, never a secret.
    _, at, tail = rest.partition("@")
    return f"{scheme}***@{tail}" if at else f"{scheme}{rest}"


def redact(location: str) -> str:
    """``location`` without credentials or options, for printing and logging: a location
    (``s3://KEY:SECRET@bucket/p?x`` -> ``s3://***@bucket/p``, ``http://user:pass@host:5000`` ->
    ``http://***@host:5000``), or any text such as an error message, whose every URI is redacted so.
    The query is dropped whole (``?endpoint_override=...&token=...``); outside a URI, secret-looking query
    parameters keep their name (``&token=***``); other text is unchanged."""
    if "://" in location:
        location = _URI.sub(_redact_uri, location)
    return _SECRET_PARAM.sub(r"\1***", location) if "=" in location else location


def join(location: str, *parts: str) -> str:
    """``location`` / parts, for paths and URIs alike (the URI's query stays at the end)."""
    base, query = _split(location)
    if not is_uri(location):
        return os.path.join(base, *parts)
    return posixpath.join(base.rstrip("/") or base, *parts) + query


def dirname(location: str) -> str:
    base, query = _split(location)
    if not is_uri(location):
        return os.path.dirname(os.path.abspath(base))
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}{query}"


def basename(location: str) -> str:
    base, _ = _split(location)
    return posixpath.basename(base.rstrip("/")) if is_uri(location) else os.path.basename(base.rstrip(os.sep))


def absolute(location: str) -> str:
    """A local path made absolute; a URI unchanged."""
    return location if is_uri(location) else os.path.abspath(location.removeprefix("file://"))


def child(root: str, relative: str) -> str:
    """``relative`` resolved under ``root``; ``ValueError`` if it is absolute, a URI or climbs out with ``..``."""
    if is_uri(relative) or os.path.isabs(relative) or relative.startswith("file://"):
        raise ValueError(f"{relative!r} is not a path relative to the source")
    norm = posixpath.normpath(relative.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise ValueError(f"{relative!r} escapes the source root")
    return join(root, norm)


@functools.lru_cache(maxsize=64)
def _filesystem(base_with_query: str) -> tuple[pafs.FileSystem, str]:
    try:
        if base_with_query.startswith("gs://") and "anonymous=true" in base_with_query:
            return _anonymous_gcs(base_with_query)
        return pafs.FileSystem.from_uri(base_with_query)
    except (ValueError, OSError) as err:   # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"{redact(base_with_query)}: not a usable location ({err})") from None


def _anonymous_gcs(uri: str) -> tuple[pafs.FileSystem, str]:
    """``gs://bucket?anonymous=true[&scheme=http&endpoint_override=host:port]``: a public bucket (or an emulator)
    without credentials, which pyarrow's URI form cannot say."""
    from urllib.parse import parse_qsl

    base, _, query = uri.partition("?")
    options = dict(parse_qsl(query))
    unknown = sorted(set(options) - {"anonymous", "scheme", "endpoint_override"})
    if unknown:
        raise ValueError(f"unexpected query parameter(s) {unknown} with anonymous=true")
    fs = pafs.GcsFileSystem(anonymous=True, scheme=options.get("scheme", "https"),
                            endpoint_override=options.get("endpoint_override"))
    return fs, base.removeprefix("gs://").strip("/")


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) of ``location``; filesystems are cached per store (bucket and options)."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location.removeprefix("file://"))
    base, query = _split(location)
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    fs, root = _filesystem(f"{scheme}://{authority}{query}")
    path = rest[len(authority):].strip("/")
    return fs, posixpath.join(root.rstrip("/"), path) if path else root


def _info(location: str) -> pafs.FileInfo:
    fs, path = resolve(location)
    return fs.get_file_info(path)


def exists(location: str) -> bool:
    return _info(location).type != pafs.FileType.NotFound


def is_dir(location: str) -> bool:
    return _info(location).type == pafs.FileType.Directory


def is_file(location: str) -> bool:
    return _info(location).type == pafs.FileType.File


def size(location: str) -> int | None:
    """Bytes of a file, or None if there is none."""
    info = _info(location)
    return info.size if info.type == pafs.FileType.File else None


def stat(location: str) -> tuple[int, float] | None:
    """(size, mtime in ns) of a file, or None; what a build's fingerprint takes of a video it does not hash."""
    info = _info(location)
    if info.type != pafs.FileType.File:
        return None
    return info.size, float(info.mtime_ns or 0)


def read_bytes(location: str) -> bytes:
    """The whole file; ``FileNotFoundError`` if there is none."""
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as f:   # one sequential read (one GET on object storage)
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        if "not found" in str(err).lower() or "does not exist" in str(err).lower() or "NoSuchKey" in str(err):
            raise FileNotFoundError(f"{redact(location)}: not found") from None
        raise


def read_text(location: str) -> str:
    return read_bytes(location).decode()


def makedirs(location: str) -> None:
    """Create a directory (and parents); nothing to do on object storage, where prefixes need no creating."""
    if not is_uri(location):
        os.makedirs(location, exist_ok=True)


def write_atomic(location: str, data: bytes | Sequence[bytes], durable: bool = True) -> None:
    """Publish ``data`` at ``location`` whole: a temporary name unique to this writer, then one rename.

    ``data``: bytes, or a sequence of chunks written one after another (a shard from its samples, without
    joining them into one copy first). ``durable`` also syncs a local file to disk before the rename (shards,
    indexes, build records); staged samples skip it, since a crash that loses one only means it is redone.
    """
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    suffix = f".{uuid.uuid4().hex[:12]}{PARTIAL}"
    if not is_uri(location):
        os.makedirs(os.path.dirname(os.path.abspath(location)), exist_ok=True)
        tmp = location + suffix
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, location)
        return
    fs, path = resolve(location)
    with fs.open_output_stream(path + suffix) as f:
        for chunk in chunks:
            f.write(chunk)
    try:
        fs.move(path + suffix, path)   # S3/GCS: a server-side copy, then the temporary key's delete
    except BaseException:
        fs.delete_file(path + suffix)
        raise


def write_text(location: str, text: str, durable: bool = True) -> None:
    write_atomic(location, text.encode(), durable)


def upload_file(local_path: str, location: str) -> None:
    """Copy a local file to ``location`` atomically (a local copy when ``location`` is local)."""
    with open(local_path, "rb") as f:
        write_atomic(location, f.read())


def remove(location: str) -> None:
    """Delete a file if it is there."""
    fs, path = resolve(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        if exists(location):
            raise StorageError(f"{redact(location)}: cannot delete ({err})") from None


def rmtree(location: str) -> None:
    """Delete a directory (a prefix on object storage) and everything under it, if it is there."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type == pafs.FileType.NotFound and not list_files(location):
        return
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


def list_files(location: str, recursive: bool = True) -> list[str]:
    """Files under a directory or prefix, as paths relative to it (``/``-separated), sorted."""
    return sorted(rel for rel, kind in _walk(location, recursive) if kind == pafs.FileType.File)


def list_dirs(location: str) -> list[str]:
    """Immediate subdirectories (common prefixes on object storage) of ``location``, sorted names."""
    return sorted(rel for rel, kind in _walk(location, False) if kind == pafs.FileType.Directory)


def _walk(location: str, recursive: bool) -> Iterator[tuple[str, pafs.FileType]]:
    fs, path = resolve(location)
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    prefix = path.rstrip("/") + "/"
    for info in fs.get_file_info(selector):
        rel = info.path[len(prefix):] if info.path.startswith(prefix) else posixpath.basename(info.path)
        yield rel.replace(os.sep, "/"), info.type


def clean_partials(location: str) -> int:
    """Delete the temporary files of interrupted writes under ``location``; only for the lock's holder."""
    n = 0
    for rel in list_files(location):
        if rel.endswith(PARTIAL):
            remove(join(location, rel))
            n += 1
    return n


def open_input(location: str) -> io.BufferedIOBase:
    """A seekable binary reader (for pyarrow.parquet, tarfile)."""
    fs, path = resolve(location)
    return fs.open_input_file(path)


def open_output(location: str):
    """A binary writer (the object appears when it is closed; not atomic on a local disk)."""
    fs, path = resolve(location)
    if not is_uri(location):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return fs.open_output_stream(path)
