"""The generation service's command-line client: ``gaia2 generate --server URL``.

    gaia2 generate --server http://host:8000 --spec scenario.yaml --out DIR [--token-env GAIA2_SERVE_TOKEN]

The spec is read and validated here (``gaia2.generation.spec``; a bad field fails before anything is sent), then
sent as read, as JSON, after its source references are made into what the service takes (it never opens a path
a client names):

  ``{latents: FILE.npy}``       a local file (relative paths: the spec's folder) is uploaded (``POST /v1/uploads``)
                                and replaced by the upload's id; an upload id passes through.
  ``{generation: FOLDER}``      a folder this client wrote (its ``generation.json``) is replaced by that
                                generation's id on the server (chained rollouts); an id passes through.
  ``{sample: KEY}``             passes through (a sample of the dataset the server was configured with).

It then follows the generation (``GET /v1/generations/{id}``; progress on stderr) and, when it is done, downloads
``video.mp4``, ``cameras/<camera>.mp4``, ``latents.npy`` and ``spec.json`` into ``--out`` (the layout of a local
``gaia2 generate --spec``), plus ``generation.json`` (the server's status of it, with its ``id``). Ctrl-C cancels
the generation on the server (``DELETE``) before exiting. A 503 (queue full, models loading) is retried after
its ``Retry-After``, a bounded number of times; every other refusal (401, 403, 404, 413, 422) is one error line
naming what the server named. The bearer token comes from an environment variable (``--token-env``, default
``GAIA2_SERVE_TOKEN``) and is never printed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

ID = re.compile(r"^[0-9a-f]{32}$")           # the service's ids (jobs.serve.store.ID)
FINAL = ("done", "failed", "cancelled")
STATUS_FILE = "generation.json"
RETRIES_503 = 5                               # 503s retried (after their Retry-After) before giving up
MAX_RETRY_AFTER_S = 60.0                      # a Retry-After longer than this is waited this long
CONNECT_RETRIES = 3                           # connection errors retried while following a generation
POLL_S = (0.2, 1.0)                           # polling interval: first, most
TIMEOUT_S = 60.0                              # one HTTP request's connect / read timeout
CHUNK = 1 << 20


class ServiceError(Exception):
    """The service refused or failed the generation, or cannot be reached; the message names why."""


# ------------------------------------------------------------------------------------------------ HTTP
@dataclass
class Client:
    """The service's HTTP API (``jobs.serve``) under ``url``, with an optional bearer token."""
    url: str
    token: str | None = None
    token_env: str = "GAIA2_SERVE_TOKEN"        # named in a 401's message (the token itself never is)
    retries: int = RETRIES_503
    timeout: float = TIMEOUT_S
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        import requests

        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServiceError(f"server: {self.url!r} is not an http(s) URL (e.g. http://host:8000)")
        self.url = self.url.rstrip("/") + "/"
        # What messages print: without any user:password@ of the URL.
        self.shown = urlparse(self.url)._replace(netloc=parsed.netloc.rsplit("@", 1)[-1]).geturl()
        self.session = requests.Session()
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def endpoint(self, path: str) -> str:
        return self.url + path.lstrip("/")

    def request(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,), **kwargs):
        """One call; a 503 is retried after its Retry-After (``retries`` times), any other status not in ``ok``
        raises ``ServiceError`` with the server's own message."""
        import requests

        kwargs.setdefault("timeout", self.timeout)
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, self.endpoint(path), **kwargs)
            except requests.ConnectionError as err:
                raise ServiceError(f"server {self.shown}: cannot connect ({_reason(err)})") from None
            except requests.Timeout:
                raise ServiceError(f"server {self.shown}: no answer to {method} {path} within {self.timeout:g} s"
                                   ) from None
            if response.status_code in ok:
                return response
            if response.status_code == 503 and attempt < self.retries:
                wait = retry_after(response)
                self.log(f"[generate] {what}: the server is busy ({server_message(response)}); retrying in "
                         f"{wait:g} s ({attempt + 1}/{self.retries})")
                self.sleep(wait)
                continue
            raise ServiceError(refusal(response, what, self.shown, attempt, self.token_env, bool(self.token)))
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,), **kwargs) -> dict:
        response = self.request(method, path, what, ok, **kwargs)
        try:
            value = response.json()
        except ValueError:
            raise ServiceError(f"server {self.shown}: {what}: not a JSON answer (HTTP {response.status_code}); is "
                               f"this a gaia2 generation service?") from None
        if not isinstance(value, dict):
            raise ServiceError(f"server {self.shown}: {what}: unexpected answer {str(value)[:200]!r}")
        return value

    # ---------------------------------------------------------------------------------------- the API
    def upload(self, path: str) -> dict:
        """A local ``.npy`` -> {"id", "shape", ...} (``POST /v1/uploads``, raw bytes)."""
        with open(path, "rb") as f:
            data = f.read()
        return self.json("POST", "v1/uploads", f"upload {path}", ok=(200, 201), data=data,
                         headers={"Content-Type": "application/octet-stream"})

    def submit(self, spec: dict, wait: float = 0.0) -> dict:
        """``POST /v1/generations`` -> the status (202: accepted; 200: done within ``wait``)."""
        params = {"wait": wait} if wait > 0 else None
        return self.json("POST", "v1/generations", "spec", ok=(200, 202), json=spec, params=params)

    def status(self, gid: str, wait: float = 0.0) -> dict:
        params = {"wait": wait} if wait > 0 else None
        return self.json("GET", f"v1/generations/{gid}", f"generation {gid}", params=params,
                         timeout=self.timeout + wait)

    def cancel(self, gid: str) -> dict:
        return self.json("DELETE", f"v1/generations/{gid}", f"cancel {gid}")

    def download(self, gid: str, name: str, dest: str) -> str:
        """``GET /v1/generations/{id}/{name}`` streamed into ``dest`` (written whole, then renamed into place)."""
        response = self.request("GET", f"v1/generations/{gid}/{name}", f"download {name}", stream=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.partial"
        try:
            with open(tmp, "wb") as f:
                for chunk in response.iter_content(CHUNK):
                    f.write(chunk)
            os.replace(tmp, dest)
        finally:
            response.close()
            if os.path.exists(tmp):
                os.remove(tmp)
        return dest

    def follow(self, gid: str, progress: Callable[[dict], None] | None = None) -> dict:
        """Poll a generation until it ends; each status goes to ``progress``; -> the final status."""
        interval, errors = POLL_S[0], 0
        while True:
            try:
                status = self.status(gid)
                errors = 0
            except ServiceError as err:
                errors += 1          # a connection dropping now and then must not lose a running generation
                if "cannot connect" not in str(err) or errors > CONNECT_RETRIES:
                    raise
                self.log(f"[generate] {err}; retrying ({errors}/{CONNECT_RETRIES})")
                self.sleep(interval)
                continue
            if progress is not None:
                progress(status)
            if status.get("status") in FINAL:
                return status
            self.sleep(interval)
            interval = min(POLL_S[1], interval * 1.5)


def _reason(err: Exception) -> str:
    text = str(err)
    m = re.search(r"\] ([^'\")]+)", text)     # urllib3's "[Errno 111] Connection refused"
    return m.group(1).strip() if m else text.splitlines()[0][:200]


def retry_after(response) -> float:
    """The seconds a 503 asks for (``Retry-After``: seconds or an HTTP date; 1 s when absent)."""
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def server_message(response) -> str:
    """The service's ``{"error": ...}`` (or the start of whatever else it answered)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    if isinstance(body, dict) and body.get("detail"):     # FastAPI / Serve's own {"detail": ...}
        return str(body["detail"])[:300]
    text = (response.text or "").strip().splitlines()
    return text[0][:300] if text else response.reason or "no message"


REFUSALS = {401: "not authorised",
            403: "forbidden",
            404: "not found",
            409: "not ready",
            413: "too large",
            422: "refused",
            503: "busy"}


def refusal(response, what: str, url: str, attempt: int = 0, token_env: str = "GAIA2_SERVE_TOKEN",
            has_token: bool = False) -> str:
    code = response.status_code
    label = REFUSALS.get(code, "failed")
    message = server_message(response)
    if code == 401:
        message += (f" (the token in ${token_env} was sent)" if has_token else
                    f" (set ${token_env} to your token, or name another variable with --token-env)")
    elif code == 403:
        message += f" (the token in ${token_env})"
    if code == 503:
        tries = f" after {attempt + 1} attempt{'s' if attempt else ''}" if attempt else ""
        return f"server {url} {label}{tries} (HTTP 503): {message}"
    return f"server {url}: {what} {label} (HTTP {code}): {message}"


# ------------------------------------------------------------------------------------------- the spec
def read_spec(path: str) -> dict:
    """The spec file's mapping as read (validated with ``load_spec``, which names a bad field)."""
    import yaml

    from gaia2.generation.spec import load_spec

    load_spec(path)            # SpecError naming the field
    with open(path) as f:
        text = f.read()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def source_refs(spec: dict) -> list[tuple[str, dict]]:
    """The mode's source references (``mode.context`` / ``mode.source``) as (field, mapping), to rewrite in place."""
    mode = spec.get("mode")
    if not isinstance(mode, dict):
        return []
    return [(f"mode.{key}", mode[key]) for key in ("context", "source") if isinstance(mode.get(key), dict)]


def resolve_sources(spec: dict, base_dir: str, client: Client) -> dict:
    """``spec`` (a copy) with local files uploaded and local generation folders replaced by their ids."""
    spec = json.loads(json.dumps(spec))
    for where, ref in source_refs(spec):
        if isinstance(ref.get("latents"), str):
            value = ref["latents"]
            path = value if os.path.isabs(value) else os.path.join(base_dir, value)
            if os.path.isfile(path):
                up = client.upload(path)
                client.log(f"[generate] uploaded {value} as {up['id']} {tuple(up.get('shape', ()))}")
                ref["latents"] = up["id"]
            elif not ID.match(value):
                raise ServiceError(f"{where}.latents: {value!r} is neither a file ({path}) nor an upload id")
        elif isinstance(ref.get("generation"), str):
            value = ref["generation"]
            path = value if os.path.isabs(value) else os.path.join(base_dir, value)
            if os.path.isdir(path):
                ref["generation"] = generation_id(path, f"{where}.generation")
            elif not ID.match(value):
                raise ServiceError(f"{where}.generation: {value!r} is neither a folder ({path}) nor a generation id")
    return spec


def generation_id(folder: str, where: str) -> str:
    """The server id of an output folder this client wrote (its ``generation.json``)."""
    file = os.path.join(folder, STATUS_FILE)
    try:
        with open(file) as f:
            gid = json.load(f).get("id")
    except FileNotFoundError:
        npy = os.path.join(folder, "latents.npy")
        hint = f"; a local output's latents can be uploaded instead: {{latents: {npy}}}" if os.path.isfile(npy) else ""
        raise ServiceError(f"{where}: {folder} has no {STATUS_FILE} (not written by gaia2 generate --server){hint}"
                           ) from None
    except (OSError, ValueError, AttributeError) as err:
        raise ServiceError(f"{where}: cannot read {file} ({err})") from None
    if not isinstance(gid, str) or not ID.match(gid):
        raise ServiceError(f"{where}: {file} records no generation id")
    return gid


# ------------------------------------------------------------------------------------------- progress
class Progress:
    """The generation's state on stderr: one updating line on a terminal, else one line per change."""

    def __init__(self, gid: str, stream=None) -> None:
        self.gid = gid
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last: str | None = None
        self.width = 0

    def __call__(self, status: dict) -> None:
        line = describe_progress(status)
        if line == self.last:
            return
        self.last = line
        text = f"[generate] {self.gid[:8]} {line}"
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
            if status.get("status") in FINAL:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last is not None and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def describe_progress(status: dict) -> str:
    state = status.get("status", "?")
    p = status.get("progress") or {}
    parts = [state]
    if p.get("windows"):
        parts.append(f"window {int(p.get('window', 0)) + 1}/{p['windows']}")
    if p.get("steps"):
        parts.append(f"step {p.get('step', 0)}/{p['steps']}")
    if p.get("fraction") is not None:
        parts.append(f"{100 * float(p['fraction']):.0f}%")
    if state == "failed" and status.get("error"):
        parts.append(str(status["error"]))
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- the run
RESULT_FILES = ("video.mp4", "latents.npy", "spec.json")


def fetch_results(client: Client, status: dict, out: str) -> dict[str, str]:
    """A done generation's files into ``out`` (the local command's layout) and ``generation.json`` last."""
    gid = status["id"]
    os.makedirs(out, exist_ok=True)
    paths = {}
    for camera in status.get("cameras") or []:
        paths[f"cameras/{camera}"] = client.download(gid, f"cameras/{camera}.mp4",
                                                     os.path.join(out, "cameras", f"{camera}.mp4"))
    for name in RESULT_FILES:
        paths[name.split(".")[0]] = client.download(gid, name, os.path.join(out, name))
    path = os.path.join(out, STATUS_FILE)
    with open(path + ".partial", "w") as f:
        json.dump({k: v for k, v in status.items() if k != "links"}, f, indent=1, sort_keys=True)
    os.replace(path + ".partial", path)
    paths["status"] = path
    return paths


def generate_remote(server: str, spec_path: str, out: str, token: str | None = None,
                    sampler_steps: int | None = None, client: Client | None = None,
                    token_env: str = "GAIA2_SERVE_TOKEN") -> str:
    """The whole client run (see the module); returns the summary."""
    if not os.path.isfile(spec_path):
        raise ServiceError(f"spec {spec_path!r}: no such file")
    spec = read_spec(spec_path)
    if sampler_steps is not None:
        spec["sampler"] = {**(spec.get("sampler") or {}), "steps": sampler_steps}
    client = client or Client(server, token, token_env=token_env)
    started = time.perf_counter()
    body = resolve_sources(spec, os.path.dirname(os.path.abspath(spec_path)), client)
    status = client.submit(body)
    gid = status.get("id")
    if not isinstance(gid, str) or not ID.match(gid):
        raise ServiceError(f"server {client.shown}: accepted the spec but answered no generation id")
    client.log(f"[generate] {gid} accepted by {client.shown}: {status.get('mode')}, {status.get('steps')} latent "
               f"steps, {len(status.get('cameras') or [])} cameras")
    progress = Progress(gid)
    try:
        progress(status)
        if status.get("status") not in FINAL:
            status = client.follow(gid, progress)
    except KeyboardInterrupt:
        progress.close()
        cancel_on_interrupt(client, gid)
        raise ServiceError(f"interrupted: generation {gid} cancelled on {client.shown}") from None
    finally:
        progress.close()
    if status.get("status") != "done":
        raise ServiceError(f"generation {gid} {status.get('status')}: {status.get('error') or 'no reason given'}")
    out = os.path.abspath(out)
    try:
        paths = fetch_results(client, status, out)
    except KeyboardInterrupt:
        raise ServiceError(f"interrupted while downloading: generation {gid} is done on {client.shown} (its files "
                           f"stay there until they expire)") from None
    return summary(client.shown, status, out, paths, time.perf_counter() - started)


def cancel_on_interrupt(client: Client, gid: str) -> None:
    """``DELETE`` the generation (one try, short timeout: the person wants out)."""
    try:
        client.session.delete(client.endpoint(f"v1/generations/{gid}"), timeout=10)
        client.log(f"[generate] interrupted: cancelled generation {gid}")
    except Exception as err:   # noqa: BLE001 - say so, and still exit
        client.log(f"[generate] interrupted: could not cancel generation {gid} ({type(err).__name__}); "
                   f"DELETE {client.shown}v1/generations/{gid} to cancel it")


def summary(url: str, status: dict, out: str, paths: dict, seconds: float) -> str:
    import numpy as np

    names = status.get("cameras") or []
    try:
        shape = tuple(np.load(paths["latents"], mmap_mode="r").shape)
    except (OSError, ValueError):
        shape = None
    try:
        with open(paths["spec"]) as f:
            models = json.load(f).get("models") or {}
    except (OSError, ValueError):
        models = {}
    models = models or status.get("models") or {}
    line = f"world model {models.get('world_model')}, tokenizer {models.get('tokenizer')}"
    line += (f", CLIP {models['clip']}" if models.get("clip") else "")
    line += f"; {models['precision']}" if models.get("precision") else ""
    rate = status.get("frame_rate")
    server_s = status.get("seconds")
    return "\n".join([
        f"generation: {out} ({status.get('mode')}, {status.get('steps')} latent steps = {status.get('frames')} frames"
        f"{f' at {rate:g} Hz' if rate else ''}, {len(names)} cameras) in {seconds:.1f} s on {url}"
        f"{f' ({server_s:.1f} s on the server)' if isinstance(server_s, (int, float)) else ''}",
        f"mosaic:     {paths['video']}",
        f"cameras:    {os.path.join(out, 'cameras')}/{{{','.join(names)}}}.mp4",
        f"latents:    {paths['latents']} {shape} (T, N, L, H, W)",
        f"spec:       {paths['spec']}",
        f"models:     {line}",
        f"server:     {paths['status']} (id {status['id']})",
    ])


def run_remote(cfg) -> str:
    """``gaia2 generate --server``: ``cfg`` is ``jobs.generate.GenerateConfig``."""
    job = cfg.job
    token = os.environ.get(job.token_env, "").strip() or None
    return generate_remote(job.server, job.spec, job.out, token, job.sampler_steps, token_env=job.token_env)
