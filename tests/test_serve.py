"""The generation service over HTTP, on a real local Serve application with the tiny models: every mode end to
end with playable videos, uploads, bad input (422 / 413 naming the problem), cancellation, the queue's 503,
bearer tokens, the time limit, metrics on Ray's Prometheus endpoint."""

from __future__ import annotations

import concurrent.futures as cf
import io
import time

import av
import numpy as np
import pytest
import requests

FRAMES_PER_LATENT = 8
FAST = {"sampler": {"steps": 2, "seed": 1}}


def _scratch(**changes) -> dict:
    return {"rig": {"name": "sedan6_30hz"}, "duration": {"latent_steps": 3}, "action": {"speed": 8.0},
            "metadata": {"weather": "rain"}, **FAST, **changes}


def _generate(served, spec: dict, wait: float = 120.0) -> dict:
    r = requests.post(served("v1/generations"), json=spec, params={"wait": wait}, timeout=wait + 30)
    assert r.status_code == 200, r.text
    status = r.json()
    assert status["status"] == "done", status
    return status


def _frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as c:
        return sum(1 for _ in c.decode(video=0))


def _check_videos(served, status: dict, steps: int) -> None:
    cameras = status["cameras"]
    assert len(status["links"]["cameras"]) == len(cameras)
    for link in [status["links"]["video"], *status["links"]["cameras"].values()]:
        r = requests.get(served(link), timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", (link, r.status_code)
        assert _frames(r.content) == steps * FRAMES_PER_LATENT, link
    latents = np.load(io.BytesIO(requests.get(served(status["links"]["latents"]), timeout=30).content))
    assert latents.shape[:2] == (steps, len(cameras))
    spec = requests.get(served(status["links"]["spec"]), timeout=30).json()
    assert [c["name"] for c in spec["rig"]["cameras"]] == cameras


def test_every_mode_end_to_end_returns_playable_videos(served):
    scratch = _generate(served, _scratch())
    assert scratch["mode"] == "scratch" and len(scratch["cameras"]) == 5
    assert scratch["progress"]["fraction"] == 1.0
    _check_videos(served, scratch, 3)

    # A rollout past the window (6) from a real sample of the configured dataset, then chained from it.
    rollout = _generate(served, {"mode": {"kind": "rollout", "context": {"sample": "@val:0"}, "context_steps": 2},
                                 "duration": {"latent_steps": 8}, "inherit": ["metadata"], **FAST})
    _check_videos(served, rollout, 8)
    chained = _generate(served, {"mode": {"kind": "rollout", "context": {"generation": rollout["id"]},
                                          "context_steps": 3}, "duration": {"latent_steps": 5}, **FAST})
    _check_videos(served, chained, 5)
    first = np.load(io.BytesIO(requests.get(served(rollout["links"]["latents"])).content))
    last = np.load(io.BytesIO(requests.get(served(chained["links"]["latents"])).content))
    np.testing.assert_array_equal(last[:3], first[-3:])   # the context comes back bit for bit

    inpaint = _generate(served, {"mode": {"kind": "inpaint", "source": {"sample": "@val:0"}, "mask": [{"agent": 0}]},
                                 "agents": [{"category": "van", "size": [5.2, 2.0, 2.3],
                                             "start": {"center": [9.0, 1.5], "yaw_deg": 0.0}}],
                                 "guidance": {"scale": 2.0, "selective": True, "drop": ["agents"]}, **FAST})
    edit = _generate(served, {"mode": {"kind": "edit", "source": {"sample": "@val:0"}, "tau_start": 0.5},
                              "inherit": ["action", "agents"], "metadata": {"time_of_day": "night"}, **FAST})
    for status in (inpaint, edit):
        _check_videos(served, status, status["steps"])


def test_uploaded_latents_are_checked_and_usable(served):
    scratch = _generate(served, _scratch())
    data = requests.get(served(scratch["links"]["latents"])).content
    r = requests.post(served("v1/uploads"), data=data, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    upload = r.json()
    assert upload["shape"][:2] == [3, 5]
    rolled = _generate(served, {"rig": {"name": "sedan6_30hz"}, "duration": {"latent_steps": 4},
                                "mode": {"kind": "rollout", "context": {"latents": upload["id"]}, "context_steps": 2},
                                **FAST})
    _check_videos(served, rolled, 4)

    def refused(payload: bytes, *words: str) -> None:
        r = requests.post(served("v1/uploads"), data=payload, headers={"content-type": "application/octet-stream"})
        assert r.status_code == 422, r.text
        assert all(w in r.json()["error"] for w in words), r.json()

    def npy(arr) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        return buf.getvalue()

    refused(b"not an array", "upload", ".npy")
    refused(npy(np.array([{"a": 1}], dtype=object)), "upload")                       # a pickle is never loaded
    refused(npy(np.zeros((3, 5, 16, 4, 8), np.int32)), "floating point")
    refused(npy(np.zeros((3, 5, 16, 4), np.float32)), "(T, N, L, H, W)")
    refused(npy(np.zeros((3, 5, 8, 4, 8), np.float32)), "(L, H, W)")
    refused(npy(np.full((3, 5, 16, 4, 8), np.nan, np.float32)), "NaN")
    r = requests.post(served("v1/uploads"), data=b"\0" * (served.config.limits.max_upload_bytes + 1))
    assert r.status_code == 413 and "upload" in r.json()["error"]
    # A spec naming something that is not an upload id, or a path, is refused without opening anything.
    for ref in ("/etc/passwd", "../../results", "0" * 32):
        r = requests.post(served("v1/generations"), json={
            "rig": {"name": "sedan6_30hz"}, "duration": {"latent_steps": 4},
            "mode": {"kind": "rollout", "context": {"latents": ref}, "context_steps": 2}, **FAST})
        assert r.status_code == 422 and r.json()["error"].startswith("latents"), r.text


@pytest.mark.parametrize("change, field", [
    ({"metadata": {"weather": "sunny"}}, "metadata.weather"),
    ({"agents": [{"category": "car", "size": [4.0, 1.8, 1.5], "start": {"center": [10.0 + i, 0.0]}}
                 for i in range(40)]}, "agents"),
    ({"duration": {"latent_steps": 400}}, "duration.latent_steps"),
    ({"clip": {"vector": [0.1, 0.2]}}, "clip"),
    ({"sampler": {"steps": 5000, "seed": 0}}, "sampler.steps"),
    ({"mode": {"kind": "edit", "source": {"sample": "no_such_key"}}}, "sample"),
    ({"rig": {"name": "bus"}}, "rig.name"),
    ({"action": {"speed": {"profile": "constant", "accel": 2.0}}}, "action.speed.accel"),
    ({"unknown_field": 1}, "unknown_field"),
])
def test_bad_specs_are_422_naming_the_field(served, change, field):
    r = requests.post(served("v1/generations"), json=_scratch(**change), timeout=30)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"], r.json()


def test_malformed_and_oversized_bodies(served):
    r = requests.post(served("v1/generations"), data=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    r = requests.post(served("v1/generations"), json=[1, 2, 3])
    assert r.status_code == 422, r.text
    infinite = '{"rig": {"name": "sedan6_30hz"}, "duration": {"latent_steps": 3}, "clip": {"vector": [1e400]}}'
    r = requests.post(served("v1/generations"), data=infinite, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "clip.vector" in r.json()["error"], r.text
    big = {**_scratch(), "name": "x", "action": {"speed": [1.0] * 300_000}}
    r = requests.post(served("v1/generations"), json=big)
    assert r.status_code == 413 and "body" in r.json()["error"], r.text

    def chunks():   # no Content-Length: counted as it streams
        for _ in range(40):
            yield b" " * 65536
    r = requests.post(served("v1/generations"), data=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert requests.get(served("v1/generations/" + "f" * 32)).status_code == 404
    assert requests.get(served("v1/generations/../../etc/passwd")).status_code == 404


def test_cancel_a_running_generation(served):
    spec = _scratch(duration={"latent_steps": 24}, sampler={"steps": 100, "seed": 0})
    r = requests.post(served("v1/generations"), json=spec)
    assert r.status_code == 202, r.text
    gid = r.json()["id"]
    deadline = time.monotonic() + 60
    while requests.get(served(f"v1/generations/{gid}")).json()["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    r = requests.delete(served(f"v1/generations/{gid}"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    status = requests.get(served(f"v1/generations/{gid}"), params={"wait": 30}).json()
    assert status["status"] == "cancelled" and "cancelled" in status["error"]
    assert requests.get(served(f"v1/generations/{gid}/video.mp4")).status_code == 409
    # The service is free again at once: the cancelled group stopped sampling.
    started = time.monotonic()
    _generate(served, _scratch())
    assert time.monotonic() - started < 30
    # A finished generation's DELETE removes its results.
    done = _generate(served, _scratch())
    assert requests.delete(served(f"v1/generations/{done['id']}")).json()["status"] == "deleted"
    assert requests.get(served(f"v1/generations/{done['id']}")).status_code == 404


def test_models_options_health(served):
    models = requests.get(served("v1/models")).json()
    assert models["world_model"]["ref"].endswith("world_model") and len(models["latent_mean"]) == 16
    assert models["geometry"]["window"] == 6
    options = requests.get(served("v1/options")).json()
    assert "sedan6_30hz" in options["rigs"] and "rain" in options["metadata"]["weather"]
    assert options["samples"] and options["limits"]["max_latent_steps"] == served.config.limits.max_latent_steps
    assert requests.get(served("healthz")).json() == {"status": "ok"}
    assert requests.get(served("readyz")).status_code == 200
    schema = requests.get(served("openapi.json")).json()
    assert "/v1/generations" in schema["paths"] and "GenerationSpec" in schema["components"]["schemas"]
    assert requests.get(served("docs")).status_code == 200


@pytest.fixture(scope="module")
def guarded(serve_http, serve_models, latent_shards, tmp_path_factory):
    """A second application: bearer tokens from a file, a queue of 2, a 15 s time limit."""
    from tests.serve_helpers import deploy, undeploy

    root = tmp_path_factory.mktemp("guarded")
    tokens = root / "tokens"
    tokens.write_text("# service tokens\nsecret-one\nsecret-two\n")
    wm, tok = serve_models
    served = deploy(serve_http, "guarded", {
        "models": {"world_model": wm, "tokenizer": tok, "workdir": str(root / "work")}, "dataset": latent_shards,
        "results": {"uri": str(root / "results")}, "auth": {"tokens_file": str(tokens)},
        "limits": {"max_queued": 2, "time_limit_s": 15.0, "retry_after_s": 3}})
    yield served
    undeploy("guarded")


def test_bearer_tokens(guarded):
    assert requests.get(guarded("healthz")).status_code == 200          # probes need no token
    r = requests.get(guarded("v1/models"))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert requests.get(guarded("v1/models"), headers={"Authorization": "Basic abc"}).status_code == 401
    r = requests.get(guarded("v1/models"), headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and "wrong" not in r.text
    assert requests.get(guarded("v1/models"), headers={"Authorization": "Bearer secret-two"}).status_code == 200
    assert requests.post(guarded("v1/generations"), json=_scratch()).status_code == 401


def test_full_queue_is_503_with_retry_after_and_every_accepted_request_completes(guarded):
    auth = {"Authorization": "Bearer secret-one"}
    spec = _scratch(duration={"latent_steps": 6}, sampler={"steps": 8, "seed": 0})

    def post(i: int) -> requests.Response:
        return requests.post(guarded("v1/generations"), json={**spec, "sampler": {"steps": 8, "seed": i}},
                             headers=auth, timeout=60)

    with cf.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) >= 2 and codes.count(503) >= 1 and set(codes) <= {202, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "3" and "queue" in r.json()["error"]
    for r in responses:
        if r.status_code == 202:
            status = requests.get(guarded(f"v1/generations/{r.json()['id']}"), params={"wait": 60},
                                  headers=auth).json()
            assert status["status"] == "done", status


def test_time_limit_fails_the_request_with_the_reason(guarded):
    auth = {"Authorization": "Bearer secret-one"}
    # The most work this service takes (48 latent steps, 100 sampler steps, guided): 4x a request (24 steps,
    # unguided) that an idle 2-core machine finished within the 15 s. A timed-out group stops sampling.
    r = requests.post(guarded("v1/generations"), headers=auth, params={"wait": 60},
                      json=_scratch(duration={"latent_steps": 48}, sampler={"steps": 100, "seed": 0},
                                    guidance={"scale": 3.0}))
    assert r.status_code == 200, r.text
    status = r.json()
    assert status["status"] == "failed" and "time limit" in status["error"], status
    # and the replica is free again
    assert _generate_auth(guarded, auth)["status"] == "done"


def _generate_auth(served, auth) -> dict:
    r = requests.post(served("v1/generations"), json=_scratch(), params={"wait": 60}, headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


def test_service_metrics_reach_the_prometheus_endpoint(served):
    import ray

    _generate(served, _scratch())
    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = ("ray_gaia2_batch_size", "ray_gaia2_queue_length", "ray_gaia2_denoising_steps_per_second",
              "ray_gaia2_seconds_per_generated_second", "ray_gaia2_generations_total", "ray_serve_")
    deadline = time.monotonic() + 60
    while True:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        missing = [w for w in wanted if w not in text]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, missing


def test_request_id_in_the_log_lines_of_a_generation(served):
    import glob
    import os

    import ray

    r = requests.post(served("v1/generations"), json=_scratch(), params={"wait": 120})
    assert r.status_code == 200, r.text
    request_id, gid = r.headers["x-request-id"], r.json()["id"]
    logs = os.path.join(ray._private.worker._global_node.get_logs_dir_path(), "serve")
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [line for path in glob.glob(os.path.join(logs, "replica_gaia2_*.log"))
                 for line in open(path, errors="replace") if request_id in line]
        if any("Decoder" in line and gid in line for line in lines):
            break
        time.sleep(1)
    # The ingress, the generator and the decoder each log this request under its id, naming the generation.
    for deployment in ("Ingress", "Generator", "Decoder"):
        assert any(f"gaia2_{deployment}" in line for line in lines), (deployment, lines)
    assert any("accepted" in line and gid in line for line in lines), lines
