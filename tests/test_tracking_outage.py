"""Tracking that degrades, not dies: MLflow calls retried with backoff, training buffering through an outage and
flushing in order with the original steps and times when the server returns, a resumed job whose run is gone (or
whose server stays away) stopping with an ``error:`` line, and credentials redacted from everything printed or
logged. The last test trains the tiny tokenizer against a real ``mlflow server`` (artifacts in the session's S3)
that is killed mid-training and restarted."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from gaia2.config.base import ConfigError
from gaia2.storage import redact
from jobs.tracking import (Buffer, RunLogger, RunNotFound, TrackingConfig, TrackingUnavailable, flush_buffer,
                           mlflow_run, output_run, use_tracking_uri)
from tests.serve_helpers import free_port

SECRET = "pa55-G41A2-s3cret"          # in every tracking URI here; must never be printed or logged
FAST = TrackingConfig(attempts=2, backoff_s=0.01, max_backoff_s=0.05, timeout_s=2, probe_s=0.0, wait_s=0.3)


def _dead_uri() -> str:
    return f"http://gaia2:{SECRET}@127.0.0.1:{free_port()}"   # nothing listens there


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> str:
    """An empty MLflow SQLite database, its tables made once (seconds each time otherwise): tests copy it."""
    from mlflow.tracking import MlflowClient

    path = str(tmp_path_factory.mktemp("store") / "empty.db")
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _store(empty_store: str, directory) -> str:
    """A fresh store at ``directory``/mlflow.db, where a job with that workdir tracks by default -> its URI."""
    os.makedirs(directory, exist_ok=True)
    shutil.copy(empty_store, os.path.join(directory, "mlflow.db"))
    return f"sqlite:///{os.path.abspath(directory)}/mlflow.db"


# ------------------------------------------------------------------------------------------ redaction
@pytest.mark.parametrize("text, expected", [
    ("s3://KEY:SECRET@bucket/p?x", "s3://***@bucket/p"),
    (f"http://user:{SECRET}@host:5000", "http://***@host:5000"),
    ("https://host/api?run=1&token=abc", "https://host/api"),
    ("s3://AKIA:wJal/rXU+Y@bucket/key", "s3://***@bucket/key"),       # an unescaped "/" in the secret
    ("postgresql://u:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("sqlite:////tmp/work/mlflow.db", "sqlite:////tmp/work/mlflow.db"),
    ("/local/path", "/local/path"),
    (f"API request to http://u:{SECRET}@h:1/api/2.0/x failed (url: /api/2.0/x?run_id=7&token=t0k)",
     "API request to http://***@h:1/api/2.0/x failed (url: /api/2.0/x?run_id=7&token=***"),   # greedy: ")" too
    ("gs://a:b@bucket/x and s3://bucket/y?secret=z", "gs://***@bucket/x and s3://bucket/y"),
])
def test_redact_removes_credentials_and_queries_from_locations_and_text(text, expected):
    from jobs.serve.store import redact as service_redact

    assert redact(text) == expected
    assert service_redact is redact   # one mechanism


def test_tracking_config_comes_from_the_environment_and_names_a_bad_variable():
    cfg = TrackingConfig.from_env({"GAIA2_TRACKING_ATTEMPTS": "7", "GAIA2_TRACKING_WAIT_S": "2.5"})
    assert (cfg.attempts, cfg.wait_s, cfg.backoff_s) == (7, 2.5, 1.0)
    assert list(zip(range(6), TrackingConfig(backoff_s=1, max_backoff_s=5).delays())) == [
        (0, 1), (1, 2), (2, 4), (3, 5), (4, 5), (5, 5)]
    with pytest.raises(ConfigError, match="GAIA2_TRACKING_ATTEMPTS='many'"):
        TrackingConfig.from_env({"GAIA2_TRACKING_ATTEMPTS": "many"})
    with pytest.raises(ConfigError, match="tracking.attempts"):
        TrackingConfig.from_env({"GAIA2_TRACKING_ATTEMPTS": "0"})


# --------------------------------------------------------------------------------- retry and buffer
class FlakyClient:
    """An MlflowClient's logging calls, failing like a server that is away while ``down``."""

    def __init__(self) -> None:
        self.down, self.tries, self.logged = False, 0, []

    def _call(self, entry):
        self.tries += 1
        if self.down:
            raise requests.ConnectionError("[Errno 111] Connection refused")
        self.logged.append(entry)

    def log_batch(self, run_id, metrics=(), tags=()):
        self._call(("metrics", [(m.key, m.value, m.timestamp, m.step) for m in metrics]) if metrics
                   else ("tags", {t.key: t.value for t in tags}))

    def log_artifact(self, run_id, path, artifact_path=None):
        with open(path) as f:
            self._call(("artifact", os.path.basename(path), artifact_path, f.read()))


def test_the_logger_buffers_through_an_outage_and_flushes_in_order_at_the_next_log_call(tmp_path, capsys):
    client = FlakyClient()
    path = str(tmp_path / "work" / "mlflow-buffer.jsonl")
    log = RunLogger(_dead_uri(), "run1", path, dataclasses.replace(FAST, probe_s=3600.0), client)
    log.metrics({"loss": 1.0}, step=1)
    client.down = True
    log.metrics({"loss": 0.5, "lr": 0.1}, step=2)        # tried `attempts` times, then buffered
    assert client.tries == 1 + FAST.attempts
    preview = tmp_path / "step-00000003.mp4"
    preview.write_text("video")
    log.artifact(str(preview), "reconstructions")
    preview.unlink()                                     # its owner deletes it at once: the buffer kept a copy
    log.tags({"gaia2.resumed_from": f"s3://k:{SECRET}@bucket/ckpt"})
    log.metrics({"loss": 0.25}, step=3)
    assert client.tries == 1 + FAST.attempts             # no probe before probe_s: buffering costs no request
    buffered = Buffer(path).read()
    assert [r["kind"] for r in buffered] == ["metrics", "artifact", "tags", "metrics"]
    client.down = False
    log.next_probe = 0.0                                 # probe_s has passed
    log.metrics({"loss": 0.125}, step=4)
    kinds = [e[0] for e in client.logged]
    assert kinds == ["metrics", "metrics", "artifact", "tags", "metrics", "metrics"]   # the buffer, then step 4
    steps = [m[3] for e in client.logged if e[0] == "metrics" for m in e[1]]
    assert steps == [1, 2, 2, 3, 4]
    # The buffered metrics keep the times they were logged at, not the flush's.
    assert [m[2] for e in client.logged[1:] if e[0] == "metrics" for m in e[1]][:3] == [
        m["timestamp"] for r in buffered if r["kind"] == "metrics" for m in r["metrics"]]
    assert client.logged[2] == ("artifact", "step-00000003.mp4", "reconstructions", "video")
    assert client.logged[3] == ("tags", {"gaia2.resumed_from": "s3://***@bucket/ckpt"})
    assert not os.path.exists(path) and not os.listdir(Buffer(path).files)
    assert (log.buffered, log.flushed) == (4, 4) and log.close()
    out = capsys.readouterr().out
    assert out.count("unreachable") == 1 and "answers again" in out and "flushed 4 buffered records (3 metrics)" in out
    assert SECRET not in out


def test_a_restarted_worker_flushes_what_the_crashed_one_buffered_first(tmp_path):
    client = FlakyClient()
    path = str(tmp_path / "mlflow-buffer.jsonl")
    client.down = True
    RunLogger(_dead_uri(), "run1", path, FAST, client).metrics({"loss": 1.0}, step=1)   # then the worker dies
    client.down = False
    RunLogger(_dead_uri(), "run1", path, FAST, client).metrics({"loss": 0.5}, step=2)
    assert [e[1][0][3] for e in client.logged] == [1, 2]


def test_a_server_that_is_not_there_costs_training_a_moment_and_the_driver_flushes_later(tmp_path, capfd,
                                                                                          empty_store):
    """A real client against a closed port: logging neither raises nor waits long; the buffer, flushed later into
    a store that answers, gives the run every metric at its original step and time."""
    from mlflow.tracking import MlflowClient

    store = _store(empty_store, tmp_path)
    with use_tracking_uri(store), mlflow_run("outage", str(tmp_path), "unit") as run:
        run_id = run.info.run_id
    path = str(tmp_path / "mlflow-buffer.jsonl")
    log = RunLogger(_dead_uri(), run_id, path, FAST)
    start = time.monotonic()
    for step in range(1, 6):
        log.metrics({"loss": 1.0 / step}, step=step)
    assert time.monotonic() - start < 5
    assert not log.close()
    times = [m["timestamp"] for r in Buffer(path).read() for m in r["metrics"]]
    assert flush_buffer(path, store, FAST) == (5, 5)
    history = sorted(MlflowClient(store).get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [(m.step, m.value, m.timestamp) for m in history] == [(s, 1.0 / s, t) for s, t in zip(range(1, 6), times)]
    printed = "".join(capfd.readouterr())
    assert "http://***@127.0.0.1:" in printed and SECRET not in printed


def test_a_driver_retries_then_stops_naming_the_server_redacted(tmp_path):
    uri = _dead_uri()
    start = time.monotonic()
    with use_tracking_uri(uri), pytest.raises(TrackingUnavailable) as err:
        with mlflow_run("outage", str(tmp_path), "r", run_id="0" * 32, config=FAST):
            pass
    assert FAST.wait_s - 0.1 < time.monotonic() - start < FAST.wait_s + 5
    assert redact(uri) in str(err.value) and "unreachable" in str(err.value) and SECRET not in str(err.value)
    with use_tracking_uri(uri), pytest.raises(TrackingUnavailable):
        flush_buffer(_buffer_with_one_record(tmp_path), uri, FAST)


def _buffer_with_one_record(tmp_path) -> str:
    path = str(tmp_path / "left.jsonl")
    Buffer(path).append({"run_id": "0" * 32, "kind": "metrics", "metrics": [
        {"key": "loss", "value": 1.0, "timestamp": 1, "step": 1}]})
    return path


# ------------------------------------------------------------------------------- resumed run gone
def test_a_resumed_output_whose_run_is_gone_stops_instead_of_starting_another(tmp_path, empty_store):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    work, out = str(tmp_path / "work"), str(tmp_path / "out")
    store = _store(empty_store, work)
    with use_tracking_uri(None):
        with output_run("outage", work, out) as (run, new):
            assert new
        with output_run("outage", work, out) as (again, new):   # a resume continues the run
            assert again.info.run_id == run.info.run_id and not new
        client = MlflowClient(store)
        client.delete_run(run.info.run_id)
        with pytest.raises(RunNotFound, match=f"run {run.info.run_id} .*was deleted.*mlflow runs restore"):
            with output_run("outage", work, out):
                pass
        with open(os.path.join(out, "mlflow_run.json"), "w") as f:
            json.dump({"run_id": "f" * 32}, f)
        with pytest.raises(RunNotFound, match="is not in the tracking store .*delete .*mlflow_run.json"):
            with output_run("outage", work, out):
                pass
    exp = client.get_experiment_by_name("outage")
    assert len(client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)) == 1   # no second run


def test_a_job_with_checkpoints_but_no_live_run_stops(tmp_path, s3_server, empty_store):
    from mlflow.tracking import MlflowClient

    from jobs.train_driver import previous_run

    work = str(tmp_path)
    client = MlflowClient(_store(empty_store, work))
    storage = s3_server.bucket("gaia2-outage-ckpt") + "/ray_results"
    s3_server.client().put_object(Bucket="gaia2-outage-ckpt", Key="ray_results/job/checkpoint-00000004/x", Body=b"")
    secret_storage = f"s3://AKIDGAIA2:{SECRET}@gaia2-outage-ckpt/ray_results"   # pyarrow takes the key from here
    tags = {"gaia2.job_name": "job", "gaia2.storage": redact(storage)}
    with use_tracking_uri(None):
        with pytest.raises(RunNotFound, match="checkpoint-00000004.*has no run of it") as err:
            previous_run("outage", work, tags, secret_storage, "job", FAST)
        assert SECRET not in str(err.value) and "s3://***@gaia2-outage-ckpt/ray_results/job" in str(err.value)
        with mlflow_run("outage", work, "job") as run:
            for k, v in tags.items():
                client.set_tag(run.info.run_id, k, v)
        assert previous_run("outage", work, tags, storage, "job", FAST) == run.info.run_id
        client.delete_run(run.info.run_id)
        with pytest.raises(RunNotFound, match=f"run {run.info.run_id} was deleted"):
            previous_run("outage", work, tags, storage, "job", FAST)
        assert previous_run("outage", work, tags, str(tmp_path / "fresh"), "job", FAST) is None   # nothing to resume


def test_output_run_keeps_its_record_on_object_storage(tmp_path, s3_server, empty_store):
    out = s3_server.bucket("gaia2-outage-out") + "/job-out"
    _store(empty_store, tmp_path)
    with use_tracking_uri(None):
        with output_run("outage", str(tmp_path), out) as (run, new):
            assert new and run.info.run_name == "outage-job-out"
        with output_run("outage", str(tmp_path), out) as (again, new):
            assert again.info.run_id == run.info.run_id and not new
    assert "job-out/mlflow_run.json" in s3_server.keys("gaia2-outage-out")


# ------------------------------------------------------------------- a real server, killed mid-training
class MlflowServer:
    """``mlflow server`` on ``port`` with a SQLite backend and artifacts proxied to ``artifacts`` (S3)."""

    def __init__(self, root: str, artifacts: str) -> None:
        self.port, self.root, self.artifacts = free_port(), root, artifacts
        self.process: subprocess.Popen | None = None
        self.log = os.path.join(root, "server.log")

    def start(self, timeout_s: float = 300.0) -> None:   # seconds on an idle machine; minutes on a loaded one
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db", "--artifacts-destination", self.artifacts],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)   # its own group: kill takes uvicorn too
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.25)
        with open(self.log) as f:
            raise RuntimeError(f"mlflow server did not answer in {timeout_s:g} s; its log ends:\n{f.read()[-3000:]}")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def api(self, endpoint: str, **params):
        r = requests.get(f"http://127.0.0.1:{self.port}/api/2.0/mlflow/{endpoint}", params=params, timeout=5)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone

    root = tmp_path_factory.mktemp("pretrained")
    save_random_lpips_backbone(str(root / "torch"))
    return {"dino_path": save_random_dinov2(str(root / "dino")), "lpips_torch_home": str(root / "torch")}


STEPS, GAN_STEPS, VAL_EVERY = 40, 2, 20   # steps are cheap; enough of them to outlast a restart on an idle box


def _overrides(shards, standins) -> dict:
    return {"model": {"dim": 32, "heads": 2}, "loss": standins,
            "data": {"shards": shards, "batch_size": 2, "shuffle_buffer": 8, "val_samples": 2},
            "schedule": {"steps": STEPS, "log_every": 1, "val_every": VAL_EVERY, "checkpoint_every": 100,
                         "preview_clips": 1},
            "gan": {"steps": GAN_STEPS}, "workers": {"max_failures": 0}}


def _outage(server: MlflowServer, buffer: str, done: threading.Event, record: dict) -> None:
    """Kill the server once training has logged step 2, let training buffer, then restart the server."""
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not done.is_set():
            try:
                exp = server.api("experiments/get-by-name", experiment_name="tokenizer")["experiment"]
                runs = requests.post(f"http://127.0.0.1:{server.port}/api/2.0/mlflow/runs/search", timeout=5,
                                     json={"experiment_ids": [exp["experiment_id"]]}).json().get("runs", [])
                history = server.api("metrics/get-history", run_id=runs[0]["info"]["run_id"], metric_key="loss")
                if max((m["step"] for m in history.get("metrics", [])), default=0) >= 2:
                    break
            except (requests.RequestException, KeyError, IndexError):
                pass
            time.sleep(0.2)
        server.kill()
        record["killed"] = time.time()
        while time.monotonic() < deadline and not done.is_set() and len(Buffer(buffer)) < 3:
            time.sleep(0.1)   # training goes on meanwhile, buffering
        record["buffered_at_restart"] = len(Buffer(buffer))
        record["restarting"] = time.time()
        server.start()
        record["restarted"] = time.time()
    except BaseException as err:   # reported by the test
        record["error"] = err


def test_training_goes_on_through_a_server_outage_and_the_run_ends_whole(
        ray_session, tokenizer_shards, standins, s3_server, empty_store, tmp_path, capfd, monkeypatch):
    import yaml
    from mlflow.tracking import MlflowClient

    from gaia2.config.base import deep_merge
    from gaia2.tokenizer.train_config import train_config
    from jobs.cli import main
    from jobs.specs import SPECS
    from jobs.train_driver import run

    bucket = s3_server.bucket("gaia2-mlflow")
    server = MlflowServer(str(tmp_path), f"{bucket}/mlartifacts")
    _store(empty_store, tmp_path)   # the server's backend, its tables made
    server.start()
    uri = f"http://gaia2:{SECRET}@127.0.0.1:{server.port}"
    for var, value in {"ATTEMPTS": "2", "BACKOFF_S": "0.2", "MAX_BACKOFF_S": "1", "TIMEOUT_S": "5",
                       "PROBE_S": "0.5", "WAIT_S": "600"}.items():   # the driver outwaits a slow restart
        monkeypatch.setenv(f"GAIA2_TRACKING_{var}", value)
    work, name = str(tmp_path / "work"), "outage"
    cfg = train_config("tiny", overrides=_overrides(tokenizer_shards, standins))
    cfg = cfg.model_copy(update={"job": cfg.job.model_copy(update={"name": name, "workdir": work})})
    buffer = os.path.join(SPECS["tokenizer"].local_dir(cfg), "mlflow-buffer.jsonl")
    done, record = threading.Event(), {}
    outage = threading.Thread(target=_outage, args=(server, buffer, done, record), daemon=True)
    started = time.time()
    try:
        outage.start()
        with use_tracking_uri(uri):
            outcome = run(SPECS["tokenizer"], cfg)
        finished = time.time()
        done.set()
        outage.join(timeout=180)
        assert "error" not in record, record.get("error")

        # Every step's metrics are in the run, once each; the outage's at their original steps and times.
        client = MlflowClient(uri)
        losses = client.get_metric_history(outcome.run_id, "loss")
        assert sorted(m.step for m in losses) == list(range(1, STEPS + GAN_STEPS + 1))
        during = [m for m in losses if record["killed"] * 1000 < m.timestamp < record["restarted"] * 1000]
        assert len(during) >= 3   # logged while the server was away, flushed later with the time they were logged
        lines = ""
        for _ in range(50):   # Ray forwards the worker's lines to the driver's output asynchronously
            lines += "".join(capfd.readouterr())
            if "flushed" in lines:
                break
            time.sleep(0.2)
        assert "training goes on, buffering" in lines and "flushed" in lines, lines[-3000:]
        # The worker flushes at its next log call if the server is back before training ends, else the driver does.
        flushed = [tuple(map(int, m)) for m in re.findall(r"flushed (\d+) buffered records \((\d+) metrics\)", lines)]
        by_worker = "answers again" in lines
        # Artifacts landed in S3 through the server: the previews (one logged during the outage) and the model.
        run_prefix = f"mlartifacts/{client.get_run(outcome.run_id).info.experiment_id}/{outcome.run_id}/artifacts/"
        keys = s3_server.keys("gaia2-mlflow", run_prefix)
        previews = sorted(k.rsplit("/", 1)[1] for k in keys if "/reconstructions/" in k)
        assert previews == [f"step-{s:08d}.mp4" for s in (VAL_EVERY, 2 * VAL_EVERY, STEPS + GAN_STEPS)], keys
        models = s3_server.keys("gaia2-mlflow", f"mlartifacts/{client.get_run(outcome.run_id).info.experiment_id}/")
        assert any(k.endswith("model.safetensors") for k in models), models
        assert not os.path.exists(buffer)
        data = client.get_run(outcome.run_id).data
        stored = json.dumps([data.params, data.tags])

        # A job whose run was deleted does not resume under another one; nor does one whose server stays away.
        client.delete_run(outcome.run_id)
        config = tmp_path / "job.yaml"
        config.write_text(yaml.safe_dump(deep_merge(_overrides(tokenizer_shards, standins),
                                                    {"job": {"name": name, "workdir": work}})))
        with use_tracking_uri(uri):
            deleted = main(["train", "tokenizer", "--config", str(config)])
            deleted_err = capfd.readouterr().err
            server.kill()
            monkeypatch.setenv("GAIA2_TRACKING_WAIT_S", "1")
            away = main(["train", "tokenizer", "--config", str(config)])
            away_err = capfd.readouterr().err
        assert deleted == 2 and f"error: job '{name}' has checkpoints" in deleted_err
        assert f"MLflow run {outcome.run_id} was deleted" in deleted_err, deleted_err[-2000:]
        assert away == 2 and f"error: MLflow tracking server http://***@127.0.0.1:{server.port} unreachable" in away_err
    finally:
        done.set()
        if server.process is not None and server.process.poll() is None:
            server.kill()

    # Nothing printed or logged holds the credentials: this test's output, the Ray workers' logs, the server's
    # log, the run's params and tags.
    printed = lines + deleted_err + away_err + stored
    session_logs = ray_session._private.worker._global_node.get_logs_dir_path()
    for log in [server.log] + [os.path.join(session_logs, f) for f in os.listdir(session_logs)]:
        if os.path.isfile(log) and os.path.getmtime(log) >= started:
            with open(log, errors="replace") as f:
                printed += f.read()
    assert SECRET not in printed
    report = {"steps": STEPS + GAN_STEPS, "outage_s": round(record["restarted"] - record["killed"], 1),
              "buffered_at_restart": record["buffered_at_restart"], "loss_steps_logged_during_outage": len(during),
              "flushed_records_metrics": flushed, "flushed_by": "worker" if by_worker else "driver",
              "job_s": round(finished - started, 1)}
    print("outage:", json.dumps(report))
