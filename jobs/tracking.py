"""MLflow tracking: local SQLite by default, a server when MLFLOW_TRACKING_URI says so.

One experiment per job kind, one run per job; a resumed job continues its run, and a job whose recorded run is
gone stops (``RunNotFound``) instead of starting another beside it.

Tracking degrades, it does not kill a job. Every MLflow call made here is retried with exponential backoff when it
fails for a reason that passes (connection refused or reset, timeout, HTTP 429 or 5xx: ``transient``); MLflow's own
HTTP retries are turned off for the duration of these calls, so the bound is this module's. Then:

- training (``RunLogger``, rank 0 of the train loop) gives up after ``attempts`` tries, says so in one warning
  line and appends what it logs (metrics with their steps and timestamps, tags, copies of artifacts) to a JSONL
  buffer in the job's local directory (``Buffer``). The next log call at least ``probe_s`` later tries the server
  again and, once it answers, replays the buffer in order before logging anything new. The end of the loop
  (``RunLogger.close``) tries once more, and the driver flushes what is left after training (``flush_buffer``).
- a driver (starting or resuming a run, registering a model, flushing a buffer) waits up to ``wait_s`` and then
  stops with ``TrackingUnavailable``, naming the server.

Settings (``TrackingConfig``, from the environment; the training driver hands its own to the workers):

    GAIA2_TRACKING_ATTEMPTS       tries of a training-time call before it is buffered      (default 4)
    GAIA2_TRACKING_BACKOFF_S      first wait between tries; doubles after each              (1)
    GAIA2_TRACKING_MAX_BACKOFF_S  longest wait between tries                                (30)
    GAIA2_TRACKING_TIMEOUT_S      one HTTP request's connect and read timeout, seconds      (30)
    GAIA2_TRACKING_PROBE_S        while buffering, the least time between tries of the server (30)
    GAIA2_TRACKING_WAIT_S         how long a driver waits for the server before it stops    (300)

Every URI printed, logged as a param or tag, or put in an error message here goes through
``gaia2.storage.redact``: no credential or query reaches a log line or the tracking store.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator, Mapping

from gaia2.config.base import ConfigError, flatten
from gaia2.storage import redact

# Read once, before anything here calls mlflow.set_tracking_uri, which writes the variable back into
# os.environ: reading it later would send a second job in the same process to the first one's store.
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(workdir: str) -> str:
    return _USER_TRACKING_URI or f"sqlite:///{os.path.abspath(workdir)}/mlflow.db"


@contextmanager
def use_tracking_uri(uri: str | None) -> Iterator[None]:
    """Inside, every job of this process tracks to ``uri`` (None: its workdir's SQLite store) instead of the
    MLFLOW_TRACKING_URI read at import; for tests and notebooks running jobs against a server."""
    global _USER_TRACKING_URI
    saved, _USER_TRACKING_URI = _USER_TRACKING_URI, uri
    try:
        yield
    finally:
        _USER_TRACKING_URI = saved


# ------------------------------------------------------------------------------------------ retries
@dataclass(frozen=True)
class TrackingConfig:
    """How hard a tracking call tries before training buffers it or a driver stops (see the module docstring)."""
    attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: int = 30
    probe_s: float = 30.0
    wait_s: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"tracking.attempts ({ENV['attempts']}): {self.attempts} must be at least 1")
        if self.timeout_s < 1:
            raise ConfigError(f"tracking.timeout_s ({ENV['timeout_s']}): {self.timeout_s} must be at least 1")
        for name in ("backoff_s", "max_backoff_s", "probe_s", "wait_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tracking.{name} ({ENV[name]}): {getattr(self, name)} must not be negative")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "TrackingConfig":
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV[f.name])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
            except ValueError:
                raise ConfigError(f"tracking.{f.name}: {ENV[f.name]}={raw!r} is not a number") from None
        return cls(**values)

    def delays(self) -> Iterator[float]:
        """The waits between tries: backoff_s, doubling, at most max_backoff_s."""
        delay = self.backoff_s
        while True:
            yield min(delay, self.max_backoff_s)
            delay *= 2


ENV = {f: f"GAIA2_TRACKING_{f.upper()}" for f in ("attempts", "backoff_s", "max_backoff_s", "timeout_s", "probe_s",
                                                   "wait_s")}


class TrackingError(RuntimeError):
    """Tracking a job cannot go on with; the message names the run and the server (redacted)."""


class TrackingUnavailable(TrackingError):
    """The tracking server did not answer within the retries."""


class RunNotFound(TrackingError):
    """A resumed job's run is not in the tracking store (deleted, or recorded in another store)."""


def transient(err: BaseException) -> bool:
    """Whether ``err`` says the server is away or overloaded (worth another try), not that the call is wrong."""
    import requests
    import urllib3.exceptions
    from mlflow.exceptions import MlflowException

    passing: tuple[type, ...] = (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout,
                                 requests.exceptions.RetryError, requests.exceptions.ChunkedEncodingError,
                                 urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError,
                                 urllib3.exceptions.NewConnectionError)
    try:
        import botocore.exceptions   # artifacts written straight to S3 by the client

        passing += (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
    except ImportError:
        pass
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:   # MLflow wraps the requests error it caught
        seen.add(id(e))
        if isinstance(e, passing):
            return True
        if isinstance(e, requests.HTTPError) and e.response is not None and (
                e.response.status_code == 429 or e.response.status_code >= 500):
            return True
        if isinstance(e, MlflowException) and e.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
            return True
        e = e.__cause__ or e.__context__
    return False


def reason(err: BaseException) -> str:
    """The first line of ``err``, redacted and cut short, for a warning or an error message."""
    text = redact(str(err).strip().splitlines()[0] if str(err).strip() else "")
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


_MLFLOW_HTTP = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")


@contextmanager
def _one_request(cfg: TrackingConfig) -> Iterator[None]:
    """For the calls inside: MLflow's own retries off (its default backs off for minutes per call), the configured
    timeout, and no "View run at <tracking URI>" line when a run ends (it prints the URI credentials and all).
    MLflow reads these variables at each request."""
    saved = {k: os.environ.get(k) for k in _MLFLOW_HTTP}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(cfg.timeout_s),
                       "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def call(fn: Callable[[], Any], what: str, uri: str, cfg: TrackingConfig, wait: bool) -> Any:
    """``fn()``, tried again after a transient failure: ``cfg.attempts`` tries in all (``wait=False``, training:
    it has better things to do), or until ``cfg.wait_s`` has passed (``wait=True``, a driver); then
    ``TrackingUnavailable`` naming ``what`` and the server. Any other error is raised at once."""
    start, tries, delays = time.monotonic(), 0, cfg.delays()
    while True:
        tries += 1
        try:
            with _one_request(cfg):
                return fn()
        except Exception as err:
            if not transient(err):
                raise
            delay, elapsed = next(delays), time.monotonic() - start
            if (elapsed + delay > cfg.wait_s) if wait else tries >= cfg.attempts:
                # from None: the chained errors print the URL as given, credentials and all
                raise TrackingUnavailable(f"MLflow tracking server {redact(uri)} unreachable ({what}; {tries} "
                                          f"tries over {elapsed:.0f} s): {reason(err)}") from None
            time.sleep(delay)


def _say(line: str) -> None:
    """A line on stdout (a Ray worker's reaches the driver's log), like ``jobs.train_loop.say``."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# -------------------------------------------------------------------------------------------- runs
@contextmanager
def mlflow_run(experiment: str, workdir: str, run_name: str, run_id: str | None = None,
               config: TrackingConfig | None = None, recorded: str = "", fix: str = "") -> Iterator[Any]:
    """Start (or resume, given ``run_id``) a run; artifacts stay under ``workdir`` when tracking locally.

    A resumed run that is not in the store, or was deleted, is ``RunNotFound`` (``recorded``: where its id came
    from; ``fix``: how to start afresh); a server that stays away is ``TrackingUnavailable``. The run ends
    FINISHED, or FAILED if the body raised."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    cfg = config or TrackingConfig.from_env()
    os.makedirs(workdir, exist_ok=True)
    uri = tracking_uri(workdir)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)

    def retried(what: str, fn: Callable[[], Any]) -> Any:
        return call(fn, what, uri, cfg, wait=True)

    if retried(f"looking up experiment {experiment!r}", lambda: client.get_experiment_by_name(experiment)) is None:
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            location = "file://" + os.path.join(os.path.abspath(workdir), "mlartifacts")
        try:
            retried(f"creating experiment {experiment!r}",
                    lambda: client.create_experiment(experiment, artifact_location=location))
        except MlflowException as err:   # another job (or our own lost reply) created it meanwhile
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    retried(f"selecting experiment {experiment!r}", lambda: mlflow.set_experiment(experiment))
    if run_id is not None:
        check_run(client, run_id, uri, cfg, recorded, fix)
    run = retried("starting the run", lambda: mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name))
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        _end_run(client, run.info.run_id, status, uri, cfg)


def _end_run(client: Any, run_id: str, status: str, uri: str, cfg: TrackingConfig) -> None:
    """Mark the active run ``status``; a server that stays away is a warning (the job's work is done, or already
    failing with its own error), the run then shows RUNNING."""
    import mlflow

    try:
        with _one_request(cfg):
            mlflow.end_run(status)   # pops the active run, then marks it
    except Exception as err:
        try:
            if not transient(err):
                raise
            call(lambda: client.set_terminated(run_id, status), "ending the run", uri, cfg, wait=True)
        except Exception as final:
            _say(f"[tracking] warning: run {run_id} not marked {status} at {redact(uri)}: {reason(final)}")


def check_run(client: Any, run_id: str, uri: str, cfg: TrackingConfig, recorded: str = "", fix: str = "") -> Any:
    """The live run ``run_id`` -> its ``Run``. ``RunNotFound`` if the store has no such run or it was deleted;
    ``TrackingUnavailable`` if the server does not answer (retried); ``TrackingError`` for another refusal."""
    from mlflow.exceptions import MlflowException

    where = f" ({recorded})" if recorded else ""
    fix = f"; {fix}" if fix else ""
    try:
        run = call(lambda: client.get_run(run_id), f"looking up run {run_id}", uri, cfg, wait=True)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RunNotFound(f"run {run_id}{where} is not in the tracking store {redact(uri)}: it was deleted for "
                              f"good, or the job ran against another store (same --workdir and "
                              f"MLFLOW_TRACKING_URI?){fix}") from None
        raise TrackingError(f"looking up run {run_id}{where} in {redact(uri)} failed: {reason(err)}") from None
    if run.info.lifecycle_stage == "deleted":
        raise RunNotFound(f"run {run_id}{where} was deleted in the tracking store {redact(uri)}; restore it to "
                          f"continue it (mlflow runs restore --run-id {run_id}){fix}")
    return run


RUN_FILE = "mlflow_run.json"


@contextmanager
def output_run(experiment: str, workdir: str, out: str) -> Iterator[tuple[Any, bool]]:
    """The MLflow run of a job that writes ``out`` (a directory or an object-storage URI) -> (run, is it new). Its
    id is kept in ``out/mlflow_run.json``, so re-running onto the same output (a resume) continues the same run,
    or stops with ``RunNotFound`` if that run is gone."""
    from gaia2 import storage

    run_file = storage.join(out, RUN_FILE)
    previous = json.loads(storage.read_text(run_file)).get("run_id") if storage.exists(run_file) else None
    name = f"{experiment}-{storage.basename(storage.absolute(out))}"
    with mlflow_run(experiment, workdir, run_name=name, run_id=previous, recorded=f"recorded in {redact(run_file)}",
                    fix=f"delete {redact(run_file)} to start a new run") as active:
        if previous is None:
            storage.makedirs(out)
            storage.write_text(run_file, json.dumps({"run_id": active.info.run_id}))
        yield active, previous is None


def log_params(params: Mapping[str, Any], config: TrackingConfig | None = None) -> None:
    """``params`` into the active run, string values redacted (the way to log a location: a source, an output, a
    storage URI), retried."""
    import mlflow

    clean = {k: redact(v) if isinstance(v, str) else v for k, v in params.items()}
    call(lambda: mlflow.log_params(clean), "logging params", mlflow.get_tracking_uri(),
         config or TrackingConfig.from_env(), wait=True)


def log_config(config: Mapping[str, Any], tracking: TrackingConfig | None = None) -> None:
    log_params({k: (str(v) if not isinstance(v, (int, float, str, bool)) else v) for k, v in flatten(config).items()},
               tracking)


def set_tags(tags: Mapping[str, Any], config: TrackingConfig | None = None) -> None:
    """``tags`` on the active run, values redacted, retried."""
    import mlflow

    clean = {k: redact(str(v)) for k, v in tags.items()}
    call(lambda: mlflow.set_tags(clean), "setting tags", mlflow.get_tracking_uri(),
         config or TrackingConfig.from_env(), wait=True)


def find_run(experiment: str, workdir: str, tags: Mapping[str, str], config: TrackingConfig | None = None,
             deleted: bool = False) -> Any:
    """The most recent run of ``experiment`` carrying all ``tags`` -> its id, or None (how a restarted job finds
    its run again without any local state). Deleted runs count only with ``deleted=True``, which returns the
    ``Run`` itself (its ``info.lifecycle_stage`` says)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    cfg, uri = config or TrackingConfig.from_env(), tracking_uri(workdir)
    client = MlflowClient(uri)
    exp = call(lambda: client.get_experiment_by_name(experiment), f"looking up experiment {experiment!r}", uri, cfg,
               wait=True)
    if exp is None:
        return None
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = call(lambda: client.search_runs([exp.experiment_id], filter_string=query, max_results=1,
                                           run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY,
                                           order_by=["attributes.start_time DESC"]),
                "searching for the job's run", uri, cfg, wait=True)
    if not runs:
        return None
    return runs[0] if deleted else runs[0].info.run_id


# ------------------------------------------------------------------------------ buffered logging
BUFFER_FILE = "mlflow-buffer.jsonl"
MAX_METRICS, MAX_TAGS = 1000, 100   # per request (MLflow's log_batch limits)


class Buffer:
    """What training logged while the server was away, oldest first: one JSON record a line, ``{"run_id", "kind":
    "metrics", "metrics": [{"key", "value", "timestamp", "step"}]}`` (``"tags"``: ``{"tags": {k: v}}``;
    ``"artifact"``: ``{"path", "artifact_path"}``, the file copied beside the buffer, since its owner may delete it).
    Only one process writes it (rank 0, or the driver once training is over)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.files = os.path.splitext(self.path)[0] + "-files"

    def append(self, record: dict) -> None:
        if record["kind"] == "artifact":
            keep = os.path.join(self.files, uuid.uuid4().hex[:12])
            os.makedirs(keep, exist_ok=True)
            record = {**record, "path": shutil.copy2(record["path"], keep)}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        records = []
        with open(self.path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:   # the last line of a process killed mid-write
                    _say(f"[tracking] warning: skipped a partial line of {self.path}")
        return records

    def keep(self, records: list[dict]) -> None:
        """Replace the contents with ``records`` (what is left to log), atomically."""
        if not records:
            if os.path.exists(self.path):
                os.remove(self.path)
            return
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(tmp, self.path)

    def __len__(self) -> int:
        return len(self.read())


def _groups(records: list[dict]) -> Iterator[list[dict]]:
    """Consecutive records of one run and kind, each group one request (artifacts one by one)."""
    group: list[dict] = []
    for r in records:
        if group:
            same = r["kind"] == group[0]["kind"] != "artifact" and r["run_id"] == group[0]["run_id"]
            size = sum(len(g.get("metrics", ())) + len(g.get("tags", ())) for g in [*group, r])
            if not same or size > (MAX_METRICS if r["kind"] == "metrics" else MAX_TAGS):
                yield group
                group = []
        group.append(r)
    if group:
        yield group


def _log_group(client: Any, group: list[dict]) -> None:
    from mlflow.entities import Metric, RunTag

    run_id, kind = group[0]["run_id"], group[0]["kind"]
    if kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(m["key"], m["value"], m["timestamp"], m["step"])
                                          for r in group for m in r["metrics"]])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for r in group for k, v in r["tags"].items()])
    else:
        client.log_artifact(run_id, group[0]["path"], group[0]["artifact_path"])


def replay(buffer: Buffer, client: Any, uri: str, cfg: TrackingConfig, wait: bool) -> tuple[int, int]:
    """Log what ``buffer`` holds, oldest first, each group retried (``call``) and then removed from the buffer ->
    (records, metrics) logged. ``TrackingUnavailable`` leaves the rest in place. A record the server refuses for
    good (not an outage) is dropped with a warning: it would block every later one."""
    records = buffer.read()
    done, metrics = 0, 0
    for group in _groups(records):
        try:
            call(lambda: _log_group(client, group), f"flushing {len(records) - done} buffered records", uri, cfg, wait)
            metrics += sum(len(r.get("metrics", ())) for r in group)
        except TrackingUnavailable:
            buffer.keep(records[done:])
            raise
        except Exception as err:
            _say(f"[tracking] warning: dropped {len(group)} buffered {group[0]['kind']} record(s) the server "
                 f"refused: {reason(err)}")
        for r in group:
            if r["kind"] == "artifact":
                shutil.rmtree(os.path.dirname(r["path"]), ignore_errors=True)
        done += len(group)
        buffer.keep(records[done:])
    return done, metrics


def flush_buffer(path: str, uri: str, config: TrackingConfig | None = None) -> tuple[int, int]:
    """What a training left in its buffer at ``path`` (rank 0's last flush failed, or an earlier attempt crashed
    while buffering), logged by the driver, which waits up to ``wait_s`` for the server -> (records, metrics).
    ``TrackingUnavailable`` says the buffer stays, for the job's next run."""
    from mlflow.tracking import MlflowClient

    buffer = Buffer(path)
    if not os.path.exists(buffer.path):
        return 0, 0
    cfg = config or TrackingConfig.from_env()
    try:
        done = replay(buffer, MlflowClient(uri), uri, cfg, wait=True)
    except TrackingUnavailable as err:
        raise TrackingUnavailable(f"{err}; {len(buffer)} records stay buffered in {buffer.path} and are logged "
                                  f"when the job runs again") from None
    if done[0]:
        _say(f"[tracking] flushed {done[0]} buffered records ({done[1]} metrics) from {buffer.path}")
    return done


class RunLogger:
    """Logs into an existing run from any process (e.g. rank 0 of a Ray Train worker group) without touching the
    run's state: the driver owns start and end, so a worker restart never ends the run. A server that goes away
    costs ``attempts`` tries once, then a buffer in ``buffer`` (the module docstring says how it is flushed)."""

    def __init__(self, tracking_uri: str, run_id: str, buffer: str, config: TrackingConfig | None = None,
                 client: Any = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri, self.run_id = tracking_uri, run_id
        self.cfg = config or TrackingConfig.from_env()
        self.client = client or MlflowClient(tracking_uri)
        self.buffer = Buffer(buffer)
        self.buffered = self.flushed = 0   # records, this logger's life
        # An earlier attempt left records (it crashed while buffering): they go first, at the first log call.
        self.down_since: float | None = time.time() if os.path.exists(self.buffer.path) else None
        self.next_probe = 0.0

    @classmethod
    def for_loop(cls, loop_config: Mapping[str, Any]) -> "RunLogger":
        """The logger of rank 0, from what the driver put in the train loop's config."""
        return cls(loop_config["tracking_uri"], loop_config["run_id"], loop_config["tracking_buffer"],
                   TrackingConfig(**loop_config["tracking"]))

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [{"key": k, "value": float(v), "timestamp": now, "step": int(step)} for k, v in values.items()]
        if batch:
            self._log({"kind": "metrics", "metrics": batch})

    def artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._log({"kind": "artifact", "path": os.path.abspath(path), "artifact_path": artifact_path})

    def tags(self, values: Mapping[str, Any]) -> None:
        if values:
            self._log({"kind": "tags", "tags": {k: redact(str(v)) for k, v in values.items()}})

    def close(self) -> bool:
        """At the end of training: one more go at the buffer -> whether nothing is left in it (if something is,
        the driver flushes it, waiting for the server)."""
        if self.down_since is not None:
            self._flush(attempts=True)
        if self.down_since is not None:
            _say(f"[tracking] warning: MLflow at {redact(self.uri)} still unreachable at the end of training; "
                 f"{len(self.buffer)} records stay buffered in {self.buffer.path} for the driver to flush")
        return self.down_since is None

    def _log(self, record: dict) -> None:
        record = {"run_id": self.run_id, **record}
        if self.down_since is not None and time.monotonic() >= self.next_probe:
            self._flush(attempts=False)
        if self.down_since is None:
            try:
                call(lambda: _log_group(self.client, [record]), f"logging {record['kind']}", self.uri, self.cfg,
                     wait=False)
                return
            except TrackingUnavailable as err:
                self.down_since, self.next_probe = time.time(), time.monotonic() + self.cfg.probe_s
                _say(f"[tracking] warning: {err}; training goes on, buffering what it logs in {self.buffer.path} "
                     f"until the server answers again (tried at a log call every {self.cfg.probe_s:g} s or more)")
        self.buffer.append(record)
        self.buffered += 1

    def _flush(self, attempts: bool) -> None:
        """Replay the buffer: one try of the server (a probe), or ``attempts`` tries of each request."""
        cfg = self.cfg if attempts else TrackingConfig(**{**asdict(self.cfg), "attempts": 1})
        try:
            records, metrics = replay(self.buffer, self.client, self.uri, cfg, wait=False)
        except TrackingUnavailable:
            self.next_probe = time.monotonic() + self.cfg.probe_s
            return
        self.flushed += records
        _say(f"[tracking] MLflow at {redact(self.uri)} answers again after {time.time() - self.down_since:.0f} s: "
             f"flushed {records} buffered records ({metrics} metrics) with their original steps and times")
        self.down_since = None
