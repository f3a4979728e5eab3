"""The ingress deployment: the HTTP API (FastAPI, ``@serve.ingress``) in front of the generator and the decoder.

A POST is checked here, before anything queues: the body's size (413), the token (401 / 403), the spec
against the models being served and this service's limits (422 naming the field), the queue (503 with
``Retry-After``). An accepted generation (202) is driven by a task of this replica: generator -> decoder ->
results store, under the per-request time limit; it ends done, failed (with the reason) or cancelled, and its
status is in the store for every replica to answer. See ``jobs.serve`` for the API.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from typing import Any

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from ray import serve
from ray.serve.exceptions import BackPressureError

from gaia2.generation.inputs import Geometry, prepare
from gaia2.generation.spec import GenerationSpec, SpecError, parse_spec
from jobs.serve import metrics
from jobs.serve.config import ServeConfig, read_tokens
from jobs.serve.generator import request_cost
from jobs.serve.options import options
from jobs.serve.sources import ServiceSources, check_upload, open_dataset
from jobs.serve.store import FINAL, ID, ResultStore, new_id, redact

log = logging.getLogger("ray.serve")
ERRORS = {401: {"description": "no or malformed bearer token (when tokens are configured)"},
          403: {"description": "a token this service does not accept"}}
NOT_FOUND = {404: {"description": "no such generation (results expire)"}}
FILE = {**ERRORS, **NOT_FOUND, 409: {"description": "the generation is not done"}}
PAGE_DIR = os.path.join(os.path.dirname(__file__), "page")
MEDIA = {"mp4": "video/mp4", "npy": "application/octet-stream", "json": "application/json"}
UPLOADS = "/v1/uploads"

app = FastAPI(title="gaia2 generation service", version="1",
              description="Controllable multi-camera driving video from GAIA-2 world models. POST a generation "
                          "spec, follow its progress, fetch its videos.")


def error(code: int, message: str, headers: dict | None = None, detail: Any = None) -> JSONResponse:
    metrics.rejected().inc(tags={"code": str(code)})
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=code, headers=headers)


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit (the upload limit on ``/v1/uploads``, else the JSON one),
    by its Content-Length or, sent without one, as soon as it has read past the limit."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.inner(scope, receive, send)
        limits = getattr(app.state, "limits", None)
        if limits is None:
            return await self.inner(scope, receive, send)
        upload = scope["path"].rstrip("/").endswith(UPLOADS)
        limit = limits.max_upload_bytes if upload else limits.max_body_bytes
        what = "upload" if upload else "body"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = -1
                if size < 0:
                    return await error(400, "content-length: not a byte count")(scope, receive, send)
                if size > limit:
                    return await error(413, f"{what}: {value.decode(errors='replace')} bytes, this service "
                                            f"takes at most {limit}")(scope, receive, send)
        # Read the body here, counting (a chunked one has no Content-Length), and hand it on whole.
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None   # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                return await error(413, f"{what}: more than {limit} bytes, this service takes at most "
                                        f"{limit}")(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.inner(scope, replay, send)


app.add_middleware(BodyLimit)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own errors in the service's shape; a body it cannot parse (not UTF-8 JSON) is a 422."""
    if exc.status_code == 400 and "parsing the body" in str(exc.detail):
        return error(422, "body: not a JSON document (UTF-8)")
    return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                 headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the field, in the spec's own words when the body is a spec."""
    body = getattr(exc, "body", None)
    if request.url.path.endswith("/v1/generations") and isinstance(body, dict):
        try:
            parse_spec(body)
        except SpecError as err:
            return error(422, str(err).removeprefix("spec: "), detail=_jsonable(exc.errors()))
    parts = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    return error(422, "; ".join(parts) or "invalid request", detail=_jsonable(exc.errors()))


def _jsonable(errors) -> list:
    out = []
    for e in errors:
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))})
    return out


def _clip_shape(geo: Geometry):
    """A stand-in CLIP encoder for validation: the generator computes the real embedding; here only its shape."""
    import numpy as np

    def encode(kind, value):
        v = np.zeros(geo.clip_dim, np.float32)
        v[0] = 1.0
        return v
    return encode


class Ingress:
    def __init__(self, generator, decoder, config: dict) -> None:
        self.cfg = ServeConfig.model_validate(config)
        self.generator = generator
        self.decoder = decoder
        self.store = ResultStore(self.cfg.results_uri)
        self.dataset = open_dataset(self.cfg.dataset)
        self.sources = ServiceSources(self.store, self.dataset)
        self.tokens = read_tokens(self.cfg.auth)
        self.tasks: dict[str, asyncio.Task] = {}
        self._sweeper: asyncio.Task | None = None
        app.state.limits = self.cfg.limits
        log.info("ingress: results in %s, dataset %s, %s", redact(self.cfg.results_uri), self.cfg.dataset,
                 f"{len(self.tokens)} bearer token(s)" if self.tokens else "no authentication")

    async def __del__(self) -> None:
        """Serve's graceful shutdown (a redeploy, a scale-down): finish the generations this replica accepted,
        within ``graceful_shutdown_timeout_s`` (the time limit); new requests already go to other replicas."""
        tasks = [t for t in getattr(self, "tasks", {}).values() if not t.done()]
        if tasks:
            log.info("ingress stopping: finishing %d accepted generation(s) first", len(tasks))
            await asyncio.wait(tasks, timeout=self.cfg.limits.time_limit_s)

    # ---------------------------------------------------------------------------------------- helpers
    def _auth(self, request: Request) -> JSONResponse | None:
        if not self.tokens:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error(401, "authorization: a bearer token is required (Authorization: Bearer <token>)",
                         headers={"WWW-Authenticate": 'Bearer realm="gaia2"'})
        token = token.strip()
        if not any(hmac.compare_digest(token.encode(), t.encode()) for t in self.tokens):
            return error(403, "authorization: this token is not accepted")
        return None

    def _models(self) -> dict | None:
        return self.store.read_json(f"{self.store.root}/service/models.json")

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        r = self.cfg.results
        while True:
            try:
                deleted = await asyncio.to_thread(self.store.sweep, r.ttl_s, r.max_bytes)
                if deleted:
                    log.info("results sweep deleted %d: %s", len(deleted), ", ".join(deleted[:20]))
                await asyncio.to_thread(self._fail_orphans)
            except Exception as err:   # noqa: BLE001 - housekeeping must not stop serving
                log.warning("results sweep failed: %s", err)
            await asyncio.sleep(r.sweep_s)

    def _fail_orphans(self) -> None:
        """Generations left unfinished past their time limit by a replica that stopped: failed, with the reason
        (nothing accepted stays "running" forever)."""
        grace = self.cfg.limits.time_limit_s + 60.0
        now = time.time()
        for gid in self.store.unfinished():
            if gid in self.tasks:
                continue
            status = self.store.status(gid) or {}
            if now - float(status.get("created") or now) > grace:
                self._finish(gid, "failed", "lost: the replica driving it stopped before it finished")

    def _links(self, request: Request, gid: str, status: dict) -> dict:
        base = f"{request.scope.get('root_path', '').rstrip('/')}/v1/generations/{gid}"
        links = {"self": base}
        if status.get("status") == "done":
            links.update(video=f"{base}/video.mp4", latents=f"{base}/latents.npy", spec=f"{base}/spec.json",
                         cameras={c: f"{base}/cameras/{c}.mp4" for c in status.get("cameras", [])})
        return links

    def _view(self, request: Request, gid: str, status: dict) -> dict:
        view = {k: v for k, v in status.items() if k != "spec"}
        if status.get("status") in ("queued", "running"):
            progress = self.store.progress(gid)
            if progress:
                view["progress"] = progress
                if status["status"] == "queued":
                    view["status"] = "running"
        elif status.get("status") in ("decoding", "done"):
            view["progress"] = {**(self.store.progress(gid) or {}), "fraction": 1.0}
        view["links"] = self._links(request, gid, status)
        return view

    def _set(self, gid: str, **changes) -> dict:
        status = {**(self.store.status(gid) or {"id": gid}), **changes}
        self.store.set_status(gid, status)
        return status

    async def _validate(self, raw: dict, models: dict) -> dict:
        """The spec against the served models and the limits -> what the status records; ``SpecError``."""
        lim = self.cfg.limits
        spec = parse_spec(raw)
        if spec.sampler.steps > lim.max_sampler_steps:
            raise SpecError(f"sampler.steps: {spec.sampler.steps}, this service takes at most {lim.max_sampler_steps}")
        g = models["geometry"]
        geo = Geometry(window=g["window"], cameras=g["cameras"], max_cameras=g["max_cameras"],
                       latent_dim=g["latent_dim"], grid_hw=tuple(g["grid_hw"]), max_agents=g["max_agents"],
                       clip_dim=g["clip_dim"], scenario_dim=g["scenario_dim"], temporal_factor=g["temporal_factor"],
                       frame_hw=tuple(g["frame_hw"]))
        if spec.agents and len(spec.agents) > geo.max_agents:
            raise SpecError(f"agents: {len(spec.agents)} agents, the world model takes at most {geo.max_agents}")
        if spec.duration and spec.duration.latent_steps and spec.duration.latent_steps > lim.max_latent_steps:
            raise SpecError(f"duration.latent_steps: {spec.duration.latent_steps}, this service generates at most "
                            f"{lim.max_latent_steps}")
        request = await asyncio.to_thread(prepare, spec, geo, self.sources, _clip_shape(geo) if models.get("clip")
                                          else None)
        if request.steps > lim.max_latent_steps:
            raise SpecError(f"duration: {request.steps} latent steps ({request.frames} frames), this service "
                            f"generates at most {lim.max_latent_steps}")
        h, w = geo.grid_hw
        cost = request_cost(request, geo)
        if cost > self.cfg.generator.max_batch_cost:
            raise SpecError(f"duration: {request.steps} latent steps x {len(request.rig.names)} cameras x {h * w} "
                            f"tokens{' x 2 (guidance)' if request.guided else ''} = {cost} exceeds this service's "
                            f"largest batch ({self.cfg.generator.max_batch_cost}); ask for fewer steps or cameras")
        return {"mode": request.info.get("mode"), "cameras": list(request.rig.names), "steps": request.steps,
                "frames": request.frames, "frame_rate": request.rig.frame_rate, "cost": cost,
                "sampler_steps": spec.sampler.steps}

    # ------------------------------------------------------------------------------------ the pipeline
    async def _run(self, gid: str, raw: dict) -> None:
        started = time.time()
        try:
            await asyncio.wait_for(self._pipeline(gid, raw), self.cfg.limits.time_limit_s)
        except asyncio.TimeoutError:
            self.store.cancel(gid)   # the generator and decoder drop it when they next look
            self._finish(gid, "failed", f"time limit: not finished within {self.cfg.limits.time_limit_s:g} s")
        except asyncio.CancelledError:
            self._finish(gid, "cancelled", "cancelled by the client")
        except Exception as err:   # noqa: BLE001 - an accepted request fails with its reason, never silently
            log.exception("generation %s failed", gid)
            self._finish(gid, "failed", f"{type(err).__name__}: {err}")
        finally:
            self.tasks.pop(gid, None)
            metrics.queue_length().set(len(self.tasks))
            log.info("generation %s finished in %.2f s", gid, time.time() - started)

    async def _call(self, method, payload: dict):
        """A handle call, waiting out backpressure (the request is already accepted), cancelled with its task."""
        while True:
            response = method.remote(payload)
            try:
                return await response
            except BackPressureError:
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                response.cancel()
                raise

    async def _pipeline(self, gid: str, raw: dict) -> None:
        self._set(gid, dispatched=time.time())   # "running" once the generator reports progress
        out = await self._call(self.generator.generate, {"id": gid, "spec": raw})
        if "error" in out:
            return self._finish(gid, "cancelled" if out["error"] == "cancelled" else "failed", out["error"])
        if self.store.cancelled(gid):
            return self._finish(gid, "cancelled", "cancelled by the client")
        self._set(gid, status="decoding", sample_s=round(out["sample_s"], 3), batch=out["batch"],
                  models={k: out["models"].get(k) for k in ("world_model", "tokenizer", "clip")})
        decoded = await self._call(self.decoder.decode, {"id": gid, **{k: out[k] for k in (
            "latents", "resolved", "rig", "models")}})
        if "error" in decoded:
            return self._finish(gid, "cancelled" if decoded["error"] == "cancelled" else "failed", decoded["error"])
        if self.store.cancelled(gid):
            return self._finish(gid, "cancelled", "cancelled by the client")
        self._finish(gid, "done", None, decode_s=round(decoded["decode_s"], 3), files=decoded["files"],
                     video_s=out["video_s"])

    def _finish(self, gid: str, status: str, reason: str | None, **extra) -> None:
        now = time.time()
        current = self.store.status(gid) or {}
        if current.get("status") in FINAL:
            return
        self._set(gid, status=status, error=reason, finished=now,
                  seconds=round(now - float(current.get("created", now)), 3), **extra)
        metrics.generations().inc(tags={"status": status})
        log.info("generation %s %s%s", gid, status, f": {reason}" if reason else "")

    async def _wait(self, gid: str, seconds: float) -> dict | None:
        seconds = min(seconds, self.cfg.limits.max_wait_s)
        deadline = time.monotonic() + seconds
        task = self.tasks.get(gid)
        if task is not None:
            await asyncio.wait({task}, timeout=seconds)
        while True:
            status = self.store.status(gid)
            if status is None or status.get("status") in FINAL or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(0.2)

    # ---------------------------------------------------------------------------------------- the API
    @app.post("/v1/generations", status_code=202, summary="start a generation",
              responses={200: {"description": "done within ?wait"}, **ERRORS,
                         413: {"description": "body over limits.max_body_bytes"},
                         422: {"description": "the spec, naming the field"},
                         503: {"description": "queue full or models not loaded: retry after Retry-After"}})
    async def create(self, request: Request, spec: GenerationSpec = Body(...),
                     wait: float = Query(0.0, ge=0.0, le=3600.0, description="seconds to wait for the result")):
        self._start_sweeper()
        if (denied := self._auth(request)) is not None:
            return denied
        raw = await request.json()
        models = self._models()
        if models is None:
            return error(503, "models: not loaded yet", headers={"Retry-After": str(self.cfg.limits.retry_after_s)})
        try:
            facts = await self._validate(raw, models)
        except SpecError as err:
            return error(422, str(err).removeprefix("spec: "))
        if len(self.tasks) >= self.cfg.limits.max_queued:
            return error(503, f"queue: {len(self.tasks)} generations are waiting or running, the most this "
                              f"service holds; retry later", headers={"Retry-After": str(self.cfg.limits.retry_after_s)})
        gid = new_id()
        status = {"id": gid, "status": "queued", "created": time.time(), "spec": raw, "error": None, **facts}
        self.store.set_status(gid, status)
        self.tasks[gid] = asyncio.get_running_loop().create_task(self._run(gid, raw))
        metrics.queue_length().set(len(self.tasks))
        log.info("generation %s accepted: %s, %d latent steps, %d cameras, cost %d", gid, facts["mode"],
                 facts["steps"], len(facts["cameras"]), facts["cost"])
        if wait > 0:
            status = await self._wait(gid, wait) or status
            if status.get("status") in FINAL:
                return JSONResponse(self._view(request, gid, status), status_code=200)
        return JSONResponse(self._view(request, gid, status), status_code=202,
                            headers={"Location": self._links(request, gid, status)["self"]})

    @app.get("/v1/generations/{gid}", summary="a generation's status, progress and links",
             responses={**ERRORS, **NOT_FOUND})
    async def get(self, request: Request, gid: str = Path(..., pattern=ID.pattern),
                  wait: float = Query(0.0, ge=0.0, le=3600.0)):
        if (denied := self._auth(request)) is not None:
            return denied
        status = await self._wait(gid, wait) if wait > 0 else self.store.status(gid)
        if status is None:
            return error(404, f"id: no generation {gid} (results expire)")
        return self._view(request, gid, status)

    @app.delete("/v1/generations/{gid}", summary="cancel a generation, or delete a finished one's results",
                responses={**ERRORS, **NOT_FOUND})
    async def delete(self, request: Request, gid: str = Path(..., pattern=ID.pattern)):
        if (denied := self._auth(request)) is not None:
            return denied
        status = self.store.status(gid)
        if status is None:
            return error(404, f"id: no generation {gid}")
        if status.get("status") in FINAL:
            self.store.delete_generation(gid)
            return {"id": gid, "status": "deleted"}
        self.store.cancel(gid)
        task = self.tasks.get(gid)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        else:   # another replica drives it: it sees the mark at its next step
            self._finish(gid, "cancelled", "cancelled by the client")
        return {"id": gid, "status": "cancelled"}

    async def _file(self, request: Request, gid: str, name: str):
        if (denied := self._auth(request)) is not None:
            return denied
        status = self.store.status(gid)
        if status is None:
            return error(404, f"id: no generation {gid}")
        if status.get("status") != "done":
            return error(409, f"id: generation {gid} is {status.get('status')}, not done")
        if name.startswith("cameras/") and name[len("cameras/"):-len(".mp4")] not in status.get("cameras", []):
            return error(404, f"camera: no camera {name[len('cameras/'):-len('.mp4')]!r} in this generation "
                              f"(it has {status.get('cameras')})")
        path = self.store.result_path(gid, name)
        media = MEDIA[name.rsplit(".", 1)[-1]]
        local = self.store.local_file(path)
        if local is not None:
            return FileResponse(local, media_type=media)
        data = self.store.read_bytes(path)
        if data is None:
            return error(404, f"{name}: deleted")
        return Response(data, media_type=media)

    @app.get("/v1/generations/{gid}/video.mp4", summary="the mosaic of every camera", responses=FILE)
    async def video(self, request: Request, gid: str = Path(..., pattern=ID.pattern)):
        return await self._file(request, gid, "video.mp4")

    @app.get("/v1/generations/{gid}/latents.npy", summary="the raw latents (T, N, L, H, W)", responses=FILE)
    async def latents(self, request: Request, gid: str = Path(..., pattern=ID.pattern)):
        return await self._file(request, gid, "latents.npy")

    @app.get("/v1/generations/{gid}/spec.json", summary="the spec as run", responses=FILE)
    async def spec_json(self, request: Request, gid: str = Path(..., pattern=ID.pattern)):
        return await self._file(request, gid, "spec.json")

    @app.get("/v1/generations/{gid}/cameras/{camera}.mp4", summary="one camera's video", responses=FILE)
    async def camera(self, request: Request, gid: str = Path(..., pattern=ID.pattern),
                     camera: str = Path(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")):
        return await self._file(request, gid, f"cameras/{camera}.mp4")

    @app.post(UPLOADS, status_code=201, summary="upload latents (.npy) for a spec to name",
              responses={**ERRORS, 413: {"description": "over limits.max_upload_bytes"},
                         422: {"description": "not a float .npy array the served model takes"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload(self, request: Request):
        if (denied := self._auth(request)) is not None:
            return denied
        data = await request.body()
        models = self._models()
        try:
            arr = check_upload(data, models and models["geometry"], self.cfg.limits.max_latent_steps)
        except SpecError as err:
            return error(422, str(err))
        uid = new_id()
        from gaia2.schema.sample import npy_bytes

        self.store.write_bytes(self.store.upload_path(uid), npy_bytes(arr))
        return JSONResponse({"id": uid, "shape": list(arr.shape), "dtype": "float32",
                             "expires_in_s": self.cfg.results.ttl_s}, status_code=201)

    @app.get("/v1/models", summary="the models served",
             responses={**ERRORS, 503: {"description": "models not loaded yet"}})
    async def models(self, request: Request):
        if (denied := self._auth(request)) is not None:
            return denied
        models = self._models()
        if models is None:
            return error(503, "models: not loaded yet", headers={"Retry-After": str(self.cfg.limits.retry_after_s)})
        return models

    @app.get("/v1/options", summary="what a spec may name here", responses=ERRORS)
    async def options(self, request: Request):
        if (denied := self._auth(request)) is not None:
            return denied
        models = self._models()
        lim = self.cfg.limits
        return options(self.dataset.keys() if self.dataset else [],
                       {"max_latent_steps": lim.max_latent_steps, "max_sampler_steps": lim.max_sampler_steps,
                        "max_upload_bytes": lim.max_upload_bytes, "max_body_bytes": lim.max_body_bytes},
                       models and models["geometry"])

    @app.get("/healthz", summary="liveness")
    async def healthz(self):
        return {"status": "ok"}

    @app.get("/readyz", summary="readiness: models loaded",
             responses={503: {"description": "models not loaded yet"}})
    async def readyz(self):
        models = self._models()
        if models is None:
            return error(503, "models: not loaded yet", headers={"Retry-After": str(self.cfg.limits.retry_after_s)})
        return {"status": "ready", "world_model": models["world_model"], "tokenizer": models["tokenizer"],
                "queue": len(self.tasks)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self):
        path = os.path.join(PAGE_DIR, "index.html")
        if not os.path.isfile(path):
            return HTMLResponse("<p>gaia2 generation service: see <a href='docs'>docs</a></p>")
        return FileResponse(path, media_type="text/html")

    @app.get("/page/{name}", include_in_schema=False)
    async def page_asset(self, name: str = Path(..., pattern=r"^[A-Za-z0-9_-]+\.(js|css)$")):
        path = os.path.join(PAGE_DIR, name)
        if not os.path.isfile(path):
            return error(404, f"page asset {name!r}: none")
        return FileResponse(path, media_type="text/javascript" if name.endswith(".js") else "text/css")


IngressDeployment = serve.ingress(app)(Ingress)
