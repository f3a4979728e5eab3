"""``gaia2 serve`` as a person runs it (the work directory's registered candidates, Ctrl-C to stop), and a model
switch under load: the alias moved to a new version and the config re-applied, with no request failed."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import torch

from jobs.registry import log_and_register
from jobs.tracking import mlflow_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = {"rig": {"name": "sedan6_30hz"}, "duration": {"latent_steps": 3}, "action": {"speed": 8.0},
        "sampler": {"steps": 3, "seed": 0}}


def _register(directory: str, workdir: str, name: str, artifact: str) -> None:
    with mlflow_run("registry", workdir, run_name=f"register-{name}"):
        log_and_register(directory, name, artifact)


def test_gaia2_serve_serves_the_workdirs_candidates_until_interrupted(serve_models, latent_shards, tmp_path):
    from tests.serve_helpers import free_port

    wm, tok = serve_models
    work = str(tmp_path / "work")
    _register(wm, work, "gaia2-world-model-tiny", "world_model")     # what the quickstart registers
    _register(tok, work, "gaia2-tokenizer-tiny", "tokenizer")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.serve.cli", "--workdir", work, "--dataset", latent_shards,
                             "--port", str(port), "--set", "generator.num_cpus=0", "--set", "decoder.num_cpus=0",
                             "--set", "ingress.num_cpus=0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("try:"):
                break
        text = "".join(lines)
        assert f"service:  http://127.0.0.1:{port}/" in text, text[-3000:]
        url = f"http://127.0.0.1:{port}/"
        models = requests.get(url + "v1/models", timeout=10).json()
        assert models["world_model"]["ref"] == "models:/gaia2-world-model-tiny/1"
        assert models["world_model"]["uri"] == "models:/gaia2-world-model-tiny@candidate"
        r = requests.post(url + "v1/generations", json=SPEC, params={"wait": 120}, timeout=150)
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        assert requests.get(url.rstrip("/") + r.json()["links"]["video"], timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "service 'gaia2' stopped" in out


def test_gaia2_serve_names_a_missing_model_in_one_line(tmp_path, capsys):
    from jobs.cli import main

    code = main(["serve", "--world-model", str(tmp_path / "nope"), "--tokenizer", str(tmp_path / "nope2"),
                 "--workdir", str(tmp_path / "work")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: world model") and "not a directory" in err


@pytest.fixture(scope="module")
def switching(serve_http, serve_models, latent_shards, tmp_path_factory):
    from tests.serve_helpers import deploy, undeploy

    wm, tok = serve_models
    root = tmp_path_factory.mktemp("switch")
    work = str(root / "work")
    _register(wm, work, "wm-switch", "world_model")
    _register(tok, work, "tok-switch", "tokenizer")
    overrides = {"models": {"world_model": "models:/wm-switch@candidate", "tokenizer": "models:/tok-switch@candidate",
                            "workdir": work}, "dataset": latent_shards, "results": {"uri": str(root / "results")},
                 "generator": {"max_batch_size": 4}}
    served = deploy(serve_http, "switch", overrides)
    yield served, overrides, root
    undeploy("switch")


def test_alias_switch_under_load_drops_no_request(switching, serve_http):
    from gaia2.config.base import deep_merge
    from gaia2.world_model.config import tiny as world_model_tiny
    from gaia2.world_model.export import save_world_model
    from gaia2.world_model.model import WorldModel
    from tests.serve_helpers import deploy

    served, overrides, root = switching
    assert requests.get(served("v1/models")).json()["world_model"]["ref"] == "models:/wm-switch/1"
    spec = {**SPEC, "duration": {"latent_steps": 6}, "sampler": {"steps": 6, "seed": 0}}

    def generate(i: int) -> dict:
        r = requests.post(served("v1/generations"), json={**spec, "sampler": {"steps": 6, "seed": i}},
                          params={"wait": 240}, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    torch.manual_seed(99)
    stats = requests.get(served("v1/models")).json()
    v2 = save_world_model(str(root / "world_model_v2"), WorldModel(world_model_tiny()),
                          extra={"latent_mean": stats["latent_mean"], "latent_std": stats["latent_std"]})
    with cf.ThreadPoolExecutor(6) as pool:
        before = [pool.submit(generate, i) for i in range(6)]
        time.sleep(1.0)                                   # requests in flight on version 1
        _register(v2, overrides["models"]["workdir"], "wm-switch", "world_model")   # the alias moves to 2
        deploy(serve_http, "switch", deep_merge(overrides, {"models": {"revision": 1}}))
        deadline = time.monotonic() + 120
        while requests.get(served("v1/models")).json()["world_model"]["ref"] != "models:/wm-switch/2":
            assert time.monotonic() < deadline, "the generator did not switch to version 2"
            time.sleep(0.5)
        after = [pool.submit(generate, 100 + i) for i in range(4)]
        results = [f.result() for f in before + after]
    assert all(r["status"] == "done" for r in results), [r.get("error") for r in results]
    versions = [r["models"]["world_model"] for r in results]
    assert set(versions[6:]) == {"models:/wm-switch/2"}, versions
    assert set(versions) <= {"models:/wm-switch/1", "models:/wm-switch/2"}
    # Those in flight when the alias moved finished on version 1.
    assert "models:/wm-switch/1" in versions[:6], versions
