"""``gaia2 generate --server URL``: the service's command-line client (``jobs.serve.client``).

Against the ``served`` fixture (the service on the tiny models, the fixture latent shards as its dataset): every
mode, from a dataset sample, a chained rollout from the previous output folder, an uploaded ``.npy``; the files
come back in the local command's layout. Against a fake HTTP server: the refusals (401, 403, 413, 503 retried
after its Retry-After, then given up) each as one error line, the token sent but never printed.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
import pytest
import requests
import yaml

from jobs.cli import main as cli
from jobs.serve import client as client_module

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "generation")
FRAMES_PER_LATENT = 8       # the tiny tokenizer
FAST = {"steps": 2}         # sampler steps: each generation ~1-2 s on the tiny models
RESULT = ("video.mp4", "latents.npy", "spec.json", "generation.json")


def _example(name: str, **changes) -> dict:
    with open(os.path.join(EXAMPLES, f"{name}.yaml")) as f:
        spec = yaml.safe_load(f)
    spec.update(changes)
    spec["sampler"] = {**spec.get("sampler", {}), **FAST}
    return spec


def _write(folder, name: str, spec: dict) -> str:
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        yaml.safe_dump(spec, f) if name.endswith(".yaml") else json.dump(spec, f)
    return path


def _generate(url: str, spec: str, out, *extra) -> int:
    return cli(["generate", "--server", url, "--spec", spec, "--out", str(out), *extra])


def _ours(stderr: str) -> list[str]:
    """stderr's lines but those Ray forwards from its actors ("(ServeReplica:... pid=...) ...", maybe coloured)."""
    return [line for line in stderr.strip().splitlines() if not re.match(r"^(\x1b\[[0-9;]*m)?\(", line)]


def _frames(path: str) -> int:
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


def _check_output(out, steps: int | None = None) -> dict:
    """The local command's layout, every camera's video (8 frames per latent step) and generation.json."""
    for name in RESULT:
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "generation.json")) as f:
        status = json.load(f)
    with open(os.path.join(out, "spec.json")) as f:
        resolved = json.load(f)
    latents = np.load(os.path.join(out, "latents.npy"))
    cameras = status["cameras"]
    assert status["status"] == "done" and len(status["id"]) == 32
    assert resolved["cameras"] == cameras and latents.shape[1] == len(cameras)
    assert latents.dtype == np.float32 and np.isfinite(latents).all()
    assert sorted(os.listdir(os.path.join(out, "cameras"))) == sorted(f"{c}.mp4" for c in cameras)
    if steps is not None:
        assert latents.shape[0] == steps == status["steps"]
    frames = latents.shape[0] * FRAMES_PER_LATENT
    assert status["frames"] == frames
    for camera in cameras:
        assert _frames(os.path.join(out, "cameras", f"{camera}.mp4")) == frames, camera
    assert _frames(os.path.join(out, "video.mp4")) == frames
    assert not [n for n in os.listdir(out) if n.endswith(".partial")]
    return status


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    return tmp_path_factory.mktemp("client_specs")


@pytest.fixture(scope="module")
def scratch(served, specs, tmp_path_factory):
    out = tmp_path_factory.mktemp("client") / "scratch"
    spec = _write(specs, "scratch.yaml", _example("scratch", duration={"latent_steps": 3}))
    assert _generate(served.url, spec, out) == 0
    return out


@pytest.fixture(scope="module")
def rollout(served, specs, tmp_path_factory):
    out = tmp_path_factory.mktemp("client") / "rollout"
    spec = _write(specs, "rollout.yaml", _example("rollout", duration={"latent_steps": 5}))
    assert _generate(served.url, spec, out) == 0
    return out


def test_scratch_writes_the_local_layout_and_a_summary(served, scratch, capsys):
    status = _check_output(scratch, steps=3)
    assert status["mode"] == "scratch"
    assert status["cameras"] == ["front", "front_left", "front_right", "rear_left", "rear_right"]   # sedan6_30hz
    with open(scratch / "spec.json") as f:
        resolved = json.load(f)
    assert resolved["spec"]["sampler"]["steps"] == 2 and resolved["latent_shape"][0] == 3


def test_the_summary_says_where_the_files_are_and_progress_goes_to_stderr(served, specs, tmp_path, capsys):
    spec = _write(specs, "one.json", _example("scratch", duration={"latent_steps": 1}))
    out = tmp_path / "one"
    assert _generate(served.url, spec, out, "--steps", "1") == 0
    printed = capsys.readouterr()
    assert f"mosaic:     {out}/video.mp4" in printed.out
    assert f"cameras:    {out}/cameras/{{front,front_left,front_right,rear_left,rear_right}}.mp4" in printed.out
    assert "(1, 5, 16, 4, 8) (T, N, L, H, W)" in printed.out and f"{out}/generation.json" in printed.out
    assert "accepted by" in printed.err and " done" in printed.err   # progress lines, ending done
    assert "generation:" not in printed.err
    _check_output(out, steps=1)
    with open(out / "spec.json") as f:
        assert json.load(f)["spec"]["sampler"]["steps"] == 1   # --steps replaces the spec's


def test_rollout_from_a_dataset_sample(rollout):
    status = _check_output(rollout, steps=5)
    assert status["mode"] == "rollout"


def _chained(specs, previous, name: str) -> str:
    # A relative folder: relative to the spec's own folder, like a local spec's paths.
    spec = _example("rollout", duration={"latent_steps": 6},
                    mode={"kind": "rollout", "context": {"generation": os.path.relpath(previous, specs)},
                          "context_steps": 3})
    spec.pop("inherit")   # a generation brings its rig, not a sample's conditioning
    return _write(specs, name, spec)


def test_chained_rollout_from_the_previous_output_folder(served, specs, scratch, tmp_path):
    out = tmp_path / "chained"
    assert _generate(served.url, _chained(specs, scratch, "chained.yaml"), out) == 0
    status = _check_output(out, steps=6)
    with open(scratch / "generation.json") as f:
        previous = json.load(f)
    sent = json.loads((out / "spec.json").read_text())["spec"]
    assert sent["mode"]["context"] == {"generation": previous["id"]}             # the folder became the id
    assert status["cameras"] == previous["cameras"]                              # the generation's rig
    # The first k latents continue the previous generation's last k.
    ours, theirs = np.load(out / "latents.npy"), np.load(scratch / "latents.npy")
    np.testing.assert_allclose(ours[:3], theirs[-3:], rtol=1e-4, atol=1e-4)


def test_chained_rollout_from_a_generation_on_a_sample_rig(served, specs, rollout, tmp_path, capsys):
    # A sample's cameras may expose before its frame grid (negative offsets in the rig recorded): it chains all
    # the same (gaia2.generation.inputs._rig_from_resolved shifts them, keeping their relative timing).
    code = _generate(served.url, _chained(specs, rollout, "chained_sample.yaml"), tmp_path / "chained")
    assert code == 0, capsys.readouterr().err[-2000:]
    _check_output(tmp_path / "chained", steps=6)


def test_rollout_from_an_uploaded_npy(served, specs, scratch, tmp_path, capsys):
    spec = _example("rollout", duration={"latent_steps": 4}, rig={"name": "sedan6_30hz"},
                    mode={"kind": "rollout", "context": {"latents": str(scratch / "latents.npy")}, "context_steps": 2})
    spec.pop("inherit")   # nothing to inherit from a bare latents file
    path = _write(specs, "upload.yaml", spec)
    out = tmp_path / "upload"
    assert _generate(served.url, path, out) == 0
    assert "uploaded" in capsys.readouterr().err
    assert _check_output(out, steps=4)["mode"] == "rollout"
    upload_id = json.loads((out / "spec.json").read_text())["spec"]["mode"]["context"]["latents"]
    assert len(upload_id) == 32 and os.sep not in upload_id     # the server never sees a path
    np.testing.assert_allclose(np.load(out / "latents.npy")[:2], np.load(scratch / "latents.npy")[-2:],
                               rtol=1e-4, atol=1e-4)


def test_inpaint_and_edit_of_a_dataset_sample(served, specs, tmp_path):
    for mode in ("inpaint", "edit"):
        path = _write(specs, f"{mode}.yaml", _example(mode))
        out = tmp_path / mode
        assert _generate(served.url, path, out) == 0, mode
        status = _check_output(out)
        assert status["mode"] == mode and status["steps"] == 3   # the source sample's length


def test_a_spec_the_server_refuses_is_one_line_naming_the_field(served, specs, tmp_path, capsys):
    limit = served.config.limits.max_sampler_steps
    spec = _example("scratch", duration={"latent_steps": 1})
    spec["sampler"]["steps"] = limit + 1          # valid as a spec, over this service's limit: the server's 422
    path = _write(specs, "too_many_steps.yaml", spec)
    out = tmp_path / "refused"
    assert _generate(served.url, path, out) == 2
    err = _ours(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and "HTTP 422" in err[0]
    assert f"sampler.steps: {limit + 1}, this service takes at most {limit}" in err[0]
    assert not out.exists()

    spec = _example("edit", mode={"kind": "edit", "source": {"sample": "no_such_sample"}})
    assert _generate(served.url, _write(specs, "unknown_sample.yaml", spec), out) == 2
    err = capsys.readouterr().err
    assert "HTTP 422" in err and "no_such_sample" in err


def test_a_bad_spec_fails_here_before_anything_is_sent(specs, tmp_path, capsys):
    from tests.serve_helpers import free_port

    path = _write(specs, "bad.yaml", _example("scratch", duration={"seconds": -1.0}))
    nobody = f"http://127.0.0.1:{free_port()}/"    # nothing listens: a request would say "cannot connect"
    assert _generate(nobody, path, tmp_path / "bad") == 2
    err = capsys.readouterr().err
    assert "duration.seconds" in err and "connect" not in err
    missing = _example("rollout", mode={"kind": "rollout", "context": {"generation": str(tmp_path)}})
    missing.pop("inherit")
    assert _generate(nobody, _write(specs, "missing.yaml", missing), tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "mode.context.generation" in err and "no generation.json" in err
    assert _generate(nobody, os.path.join(str(specs), "absent.yaml"), tmp_path / "x") == 2
    assert "absent.yaml" in capsys.readouterr().err
    assert _generate("ftp://host/", path, tmp_path / "x") == 2
    assert "job.server" in capsys.readouterr().err


def test_ctrl_c_cancels_the_generation_on_the_server(served, specs, tmp_path, capsys, monkeypatch):
    spec = _write(specs, "long.yaml", _example("scratch", duration={"latent_steps": 6}, sampler={"steps": 80}))
    original = client_module.Progress.__call__

    def interrupted(self, status):
        original(self, status)
        if status.get("status") not in client_module.FINAL:
            raise KeyboardInterrupt   # as Ctrl-C while following the generation

    monkeypatch.setattr(client_module.Progress, "__call__", interrupted)
    assert _generate(served.url, spec, tmp_path / "long") == 2
    err = capsys.readouterr().err
    assert "interrupted: cancelled generation" in err
    gid = err.split("interrupted: cancelled generation ")[1].split()[0]
    deadline = time.monotonic() + 30
    while (status := requests.get(served(f"v1/generations/{gid}"), timeout=10).json())["status"] not in (
            "done", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status["status"] == "cancelled"
    assert not (tmp_path / "long").exists()


# ---------------------------------------------------------------------------------------- a fake service
GID = "0123456789abcdef0123456789abcdef"


class Fake:
    """A stand-in service answering from a script: ``replies[(method, path)]`` is a list of (code, headers, body)
    popped per call (the last one repeats); every request is recorded."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], list] = {}
        self.seen: list[tuple[str, str, dict, bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                fake.seen.append((self.command, path, dict(self.headers), body))
                script = fake.replies.get((self.command, path)) or [(404, {}, {"error": "id: none"})]
                code, headers, reply = script.pop(0) if len(script) > 1 else script[0]
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/prefix/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self) -> int:
        return sum(1 for m, p, *_ in self.seen if m == "POST" and p.endswith("/v1/generations"))


@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.server.shutdown()


def _done_service(fake: Fake) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 1, 16, 4, 8), np.float32))
    done = {"id": GID, "status": "done", "mode": "scratch", "steps": 1, "frames": 8, "frame_rate": 30.0,
            "cameras": ["front"]}
    base = f"/prefix/v1/generations/{GID}"
    fake.replies[("GET", base)] = [(200, {}, {"id": GID, "status": "running", "progress": {
        "window": 0, "windows": 1, "step": 1, "steps": 2, "fraction": 0.5}}), (200, {}, done)]
    for name, data in (("video.mp4", b"mp4"), ("cameras/front.mp4", b"cam"), ("latents.npy", buf.getvalue()),
                       ("spec.json", b'{"models": {"world_model": "wm", "tokenizer": "tok", "precision": "fp32"}}')):
        fake.replies[("GET", f"{base}/{name}")] = [(200, {}, data)]


def test_503_is_retried_after_its_retry_after_then_succeeds(fake, specs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_RETRY_AFTER_S", 0.05)   # the server's Retry-After, capped for the test
    busy = (503, {"Retry-After": "1"}, {"error": "queue: 32 generations are waiting or running"})
    fake.replies[("POST", "/prefix/v1/generations")] = [busy, busy, (202, {}, {"id": GID, "status": "queued"})]
    _done_service(fake)
    path = _write(specs, "fake.yaml", _example("scratch", duration={"latent_steps": 1}))
    out = tmp_path / "fake"
    assert _generate(fake.url, path, out) == 0
    err = capsys.readouterr().err
    assert fake.posts() == 3 and err.count("the server is busy (queue: 32") == 2
    assert "window 1/1, step 1/2, 50%" in err
    assert (out / "cameras" / "front.mp4").read_bytes() == b"cam"
    assert json.loads((out / "generation.json").read_text())["id"] == GID


def test_503_gives_up_after_a_bounded_number_of_retries(fake, specs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_RETRY_AFTER_S", 0.01)
    fake.replies[("POST", "/prefix/v1/generations")] = [(503, {"Retry-After": "5"}, {"error": "queue: full"})]
    path = _write(specs, "fake.yaml", _example("scratch", duration={"latent_steps": 1}))
    assert _generate(fake.url, path, tmp_path / "x") == 2
    err = _ours(capsys.readouterr().err)
    assert fake.posts() == client_module.RETRIES_503 + 1
    assert err[-1].startswith("error: ") and "HTTP 503" in err[-1] and "queue: full" in err[-1]


@pytest.mark.parametrize("code,message,expected", [
    (401, "authorization: a bearer token is required", "$MY_TOKEN"),
    (403, "authorization: this token is not accepted", "forbidden"),
    (413, "body: 2000000 bytes, this service takes at most 1048576", "too large"),
])
def test_refusals_are_one_error_line_and_the_token_is_never_printed(fake, specs, tmp_path, capsys, monkeypatch,
                                                                   code, message, expected):
    monkeypatch.setenv("MY_TOKEN", "s3cret-token")
    fake.replies[("POST", "/prefix/v1/generations")] = [(code, {}, {"error": message})]
    path = _write(specs, "fake.yaml", _example("scratch", duration={"latent_steps": 1}))
    assert _generate(fake.url, path, tmp_path / "x", "--token-env", "MY_TOKEN") == 2
    printed = capsys.readouterr()
    err = _ours(printed.err)
    assert len(err) == 1 and f"HTTP {code}" in err[0] and message in err[0] and expected in err[0]
    assert "s3cret" not in printed.err + printed.out
    assert fake.seen[-1][2]["Authorization"] == "Bearer s3cret-token"


def test_an_upload_over_the_limit_names_the_file(fake, specs, scratch_npy, tmp_path, capsys):
    fake.replies[("POST", "/prefix/v1/uploads")] = [(413, {}, {"error": "upload: 9999 bytes, this service takes "
                                                                         "at most 100"})]
    spec = _example("rollout", duration={"latent_steps": 4}, rig={"name": "sedan6_30hz"},
                    mode={"kind": "rollout", "context": {"latents": scratch_npy}, "context_steps": 2})
    spec.pop("inherit")
    assert _generate(fake.url, _write(specs, "up.yaml", spec), tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "HTTP 413" in err and f"upload {scratch_npy}" in err and fake.posts() == 0
    assert fake.seen[0][2]["Content-Type"] == "application/octet-stream"


@pytest.fixture
def scratch_npy(tmp_path) -> str:
    path = str(tmp_path / "latents.npy")
    np.save(path, np.zeros((3, 5, 16, 4, 8), np.float32))
    return path
