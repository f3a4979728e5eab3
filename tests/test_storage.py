"""gaia2/storage.py, the one filesystem layer of every job, on its three kinds of location with the same
assertions: a local directory, S3 (the session's moto server) and GCS (gcp-storage-emulator, in this process;
it serves neither ranged reads nor delimited listings, so the seekable reader ``open_input`` that Parquet and
tar use, and ``list_dirs``, are checked on the other two only)."""

from __future__ import annotations

import pytest

from gaia2 import storage


@pytest.fixture(scope="module")
def gcs_root():
    """A GCS API on localhost with a bucket; yields an anonymous ``gs://`` root that names the emulator."""
    from gcp_storage_emulator.server import create_server

    from tests.serve_helpers import free_port

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="gaia2-gs")
    server.start()
    yield f"gs://gaia2-gs/unit?anonymous=true&scheme=http&endpoint_override=127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3", "gs"])
def root(request, tmp_path, s3_server):
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "s3":
        return f"{s3_server.bucket('gaia2-storage')}/unit-{tmp_path.name}"
    return request.getfixturevalue("gcs_root").replace("/unit?", f"/unit-{tmp_path.name}?")


def test_the_same_semantics_on_every_kind_of_location(root):
    a = storage.join(root, "train", "shard-000000.tar")
    storage.write_atomic(a, b"shard bytes")
    storage.write_text(storage.join(root, "index", "train-shard-000000.json"), "{}")
    storage.write_atomic(storage.join(root, "train", "shard-000001.tar.abc.partial"), b"left over")
    assert storage.read_bytes(a) == b"shard bytes" and storage.size(a) == 11 and storage.stat(a)[0] == 11
    assert storage.exists(a) and storage.is_file(a) and not storage.is_file(storage.join(root, "train"))
    assert storage.list_files(root) == ["index/train-shard-000000.json", "train/shard-000000.tar",
                                        "train/shard-000001.tar.abc.partial"]
    if not root.startswith("gs://"):   # nor does it answer a delimited listing with its common prefixes
        assert storage.list_dirs(root) == ["index", "train"]
    assert storage.list_files(storage.join(root, "train"), recursive=False)[0] == "shard-000000.tar"
    assert storage.clean_partials(root) == 1
    assert not [f for f in storage.list_files(root) if f.endswith(storage.PARTIAL)]
    if not root.startswith("gs://"):   # the GCS emulator serves no ranged reads; a seekable reader makes them
        with storage.open_input(a) as f:
            assert f.read(5) == b"shard"
    storage.write_atomic(a, b"replaced")   # publish over an existing file: whole, never a part
    assert storage.read_bytes(a) == b"replaced"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "missing.json"))
    assert storage.size(storage.join(root, "missing.json")) is None
    storage.remove(a)
    storage.remove(a)   # gone already: nothing to do
    assert not storage.exists(a)
    storage.rmtree(storage.join(root, "index"))
    assert storage.list_files(root) == []
    storage.rmtree(storage.join(root, "never-there"))


def test_paths_join_and_resolve_under_a_root():
    q = "s3://K:S@bkt/clips?endpoint_override=h:9&scheme=http"
    assert storage.join(q, "c1", "cam.mp4") == "s3://K:S@bkt/clips/c1/cam.mp4?endpoint_override=h:9&scheme=http"
    assert storage.dirname(storage.join(q, "c1")) == q
    assert storage.basename("s3://bkt/clips/manifest.parquet?x=1") == "manifest.parquet"
    assert storage.child("/data/clips/c1", "front.mp4") == "/data/clips/c1/front.mp4"
    assert storage.child("s3://bkt/clips/c1", "sub/../front.mp4") == "s3://bkt/clips/c1/front.mp4"
    for bad in ("../c2/front.mp4", "/etc/passwd", "s3://other/x.mp4", "a/../../x", "file:///etc/passwd"):
        with pytest.raises(ValueError):
            storage.child("s3://bkt/clips/c1", bad)
    assert storage.redact(q) == "s3://***@bkt/clips"
    assert storage.redact("http://user:pw@mlflow:5000/api") == "http://***@mlflow:5000/api"
    assert storage.redact("/local/path") == "/local/path"


def test_an_unusable_location_is_a_storage_error():
    with pytest.raises(storage.StorageError, match="not a usable location"):
        storage.resolve("nosuchscheme://bucket/x")
    with pytest.raises(storage.StorageError, match="unexpected query"):
        storage.resolve("gs://bucket/x?anonymous=true&token=abc")
