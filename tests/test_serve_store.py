"""The service's results store: whole-file writes, the time to live and the size cap, ids never paths; on a
directory and on S3 (a real S3 API on localhost: moto in server mode), and the service end to end on S3."""

from __future__ import annotations

import os
import time

import boto3
import pytest
import requests

from jobs.serve.store import ResultStore, redact

GID = [f"{i:032x}" for i in range(1, 6)]


def _fill(store: ResultStore, gid: str, status: str, finished: float, size: int) -> None:
    store.set_status(gid, {"id": gid, "status": status, "created": finished - 1, "finished": finished})
    staged = store.staging(gid)
    with open(os.path.join(staged, "video.mp4"), "wb") as f:
        f.write(b"v" * size)
    store.publish(gid, staged)


def _sweep_semantics(store: ResultStore) -> None:
    now = time.time()
    _fill(store, GID[0], "done", now - 1000, 100)      # expired
    _fill(store, GID[1], "done", now - 50, 4000)       # oldest within the TTL
    _fill(store, GID[2], "failed", now - 40, 4000)
    _fill(store, GID[3], "done", now - 30, 4000)
    store.set_status(GID[4], {"id": GID[4], "status": "running", "created": now - 2000})   # never swept
    assert store.read_bytes(store.result_path(GID[3], "video.mp4")) == b"v" * 4000
    deleted = store.sweep(ttl_s=500, max_bytes=9000, now=now)
    assert deleted == [GID[0], GID[1]]          # the expired one, then the oldest until under the cap
    assert store.status(GID[4])["status"] == "running" and store.status(GID[3]) is not None
    assert store.usage().bytes <= 9000


def test_directory_store(tmp_path):
    store = ResultStore(str(tmp_path / "results"))
    _sweep_semantics(store)
    for bad in ("../x", "a" * 31, "/etc/passwd", "A" * 32):
        with pytest.raises(KeyError):
            store.generation_dir(bad)
    for bad in ("../../spec.json", "cameras/../../x.mp4", "cameras/a/b.mp4", "other.txt"):
        with pytest.raises(KeyError):
            store.result_path(GID[3], bad)
    assert not [p for p in os.listdir(tmp_path / "results" / "staging")]   # every staged result was moved


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port with a bucket; yields the results URI (credentials in it)."""
    from moto.server import ThreadedMotoServer

    from tests.serve_helpers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="gaia2-results")
    yield f"s3://testing:testing@gaia2-results/serve?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    server.stop()


def test_s3_store(s3):
    store = ResultStore(s3.replace("/serve?", "/unit?"))
    assert not store.local
    _sweep_semantics(store)
    assert redact(s3) == "s3://***@gaia2-results/serve"


def test_service_on_s3_results(s3, serve_http, serve_models, latent_shards):
    from tests.serve_helpers import deploy, undeploy

    wm, tok = serve_models
    served = deploy(serve_http, "s3results", {"models": {"world_model": wm, "tokenizer": tok},
                                              "dataset": latent_shards, "results": {"uri": s3}})
    try:
        r = requests.post(served("v1/generations"), params={"wait": 120}, json={
            "rig": {"name": "van5_25hz"}, "duration": {"latent_steps": 2}, "sampler": {"steps": 2}})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        status = r.json()
        video = requests.get(served(status["links"]["video"]))
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        keys = [o["Key"] for o in boto3.client(
            "s3", endpoint_url="http://" + s3.split("endpoint_override=")[1].split("&")[0],
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
        ).list_objects_v2(Bucket="gaia2-results", Prefix=f"serve/generations/{status['id']}/")["Contents"]]
        assert f"serve/generations/{status['id']}/result/video.mp4" in keys
        assert len([k for k in keys if "/cameras/" in k and k.endswith(".mp4")]) == len(status["cameras"]) == 5
    finally:
        undeploy("s3results")


def test_unfinished_lists_only_generations_not_final(tmp_path):
    store = ResultStore(str(tmp_path / "results"))
    _fill(store, GID[0], "done", time.time(), 10)
    store.set_status(GID[1], {"id": GID[1], "status": "running", "created": 0.0})
    store.set_status(GID[2], {"id": GID[2], "status": "queued", "created": 0.0})
    assert sorted(store.unfinished()) == [GID[1], GID[2]]


# Serve awaits the ingress's async __del__ at shutdown; Python's collector, calling it here, only makes the coroutine.
@pytest.mark.filterwarnings("ignore:coroutine 'Ingress.__del__' was never awaited:RuntimeWarning")
def test_the_ingress_fails_generations_orphaned_by_a_stopped_replica(tmp_path, ray_session):
    from jobs.serve.config import load_config
    from jobs.serve.ingress import Ingress

    cfg = load_config("tiny", overrides={"models": {"world_model": "x", "tokenizer": "y"},
                                         "results": {"uri": str(tmp_path / "results")}, "limits": {"time_limit_s": 10}})
    ingress = Ingress(None, None, cfg.model_dump())
    now = time.time()
    ingress.store.set_status(GID[0], {"id": GID[0], "status": "running", "created": now - 200})   # past 10 s + 60 s
    ingress.store.set_status(GID[1], {"id": GID[1], "status": "running", "created": now - 5})     # still in time
    ingress._fail_orphans()
    lost = ingress.store.status(GID[0])
    assert lost["status"] == "failed" and lost["error"].startswith("lost:")
    assert ingress.store.status(GID[1])["status"] == "running"
