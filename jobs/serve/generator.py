"""The generator deployment: the world model and the sampler, batched by cost.

    latents = await generator.generate.remote({"id": ID, "spec": {...}})

``generate`` prepares the spec (off the event loop) with the models loaded when it arrived, then joins a
``@serve.batch`` queue sized by cost: a request costs cameras x latent steps x tokens per latent, doubled
under guidance, and a batch holds at most ``max_batch_cost`` of it (and ``max_batch_size`` requests). Gathered
batches wait for the sampler, which each time it is free takes the oldest request and every waiting request of
its shape (``batch_key``) and models within that budget, and samples them in one pass in a worker thread. Progress and
cancellation go through the results store: the sampler's progress is written to each request's
``progress.json`` (at most a few times a second) and a group whose requests were all cancelled stops.

Models switch in ``reconfigure`` (Serve calls it when the ``user_config`` changes: a new ``revision`` or other
URIs) and every ``refresh_s``: the alias is looked up, and a new version pair is loaded beside the old one and
then swapped in. A request holds the models it was prepared with, so requests in flight finish on the old
ones; the old ones are freed when the last such request is done.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from ray import serve

from gaia2.generation.sampler import batch_key
from gaia2.generation.spec import SpecError, parse_spec
from jobs.serve import metrics
from jobs.serve.models import current_refs, describe, fetch, identity
from jobs.serve.sources import ServiceSources, open_dataset
from jobs.serve.store import ResultStore

log = logging.getLogger("ray.serve")


class _CostNotCount(logging.Filter):
    """Serve warns when ``max_batch_size`` exceeds ``max_ongoing_requests``; ours counts cost, not requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will never achieve the configured `max_batch_size`" not in record.getMessage()


log.addFilter(_CostNotCount())
TOO_BIG = 1 << 62
PROGRESS_EVERY_S = 0.25


class Cancelled(Exception):
    """Every request of a group was cancelled."""


def request_cost(request, geometry) -> int:
    """cameras x latent steps x tokens per latent, doubled under guidance (the batch's budget unit)."""
    h, w = geometry.grid_hw
    return len(request.rig.names) * request.steps * h * w * (2 if request.guided else 1)


@dataclass
class Loaded:
    generator: object      # gaia2.generation.generator.Generator
    refs: dict
    info: dict


@dataclass
class Item:
    gid: str
    request: object        # gaia2.generation.inputs.Request
    loaded: Loaded
    cost: int
    max_count: int


def batch_cost(items: list[Item]) -> int:
    """``@serve.batch``'s size of a candidate batch: the sum of costs, or "too big" past the request count."""
    if len(items) > min(i.max_count for i in items):
        return TOO_BIG
    return sum(i.cost for i in items)


class GeneratorDeployment:
    def __init__(self, store_uri: str, dataset: str | None, replica_threads: int = 0) -> None:
        import torch

        if replica_threads > 0:
            torch.set_num_threads(replica_threads)
        self.store = ResultStore(store_uri)
        self.sources = ServiceSources(self.store, open_dataset(dataset))
        self.loaded: Loaded | None = None
        self.config: dict | None = None
        self._switch = asyncio.Lock()
        self._refresher: asyncio.Task | None = None
        self._pending: list[tuple[Item, asyncio.Future]] = []    # gathered by Serve, waiting for the sampler
        self._sampler: asyncio.Task | None = None

    # ----------------------------------------------------------------------------------------- models
    async def reconfigure(self, config: dict) -> None:
        self.config = dict(config)
        self.generate_batch.set_max_batch_size(int(config["max_batch_cost"]))
        self.generate_batch.set_batch_wait_timeout_s(float(config["batch_wait_s"]))
        await self.refresh()
        if self._refresher is None and config.get("refresh_s", 0) > 0:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, float(self.config.get("refresh_s") or 60)))
            if not self.config.get("refresh_s"):
                continue
            try:
                await self.refresh()
            except Exception as err:   # the registry being down must not stop serving what is loaded
                log.warning("model refresh failed, still serving %s: %s", self.loaded and self.loaded.refs, err)

    async def refresh(self) -> dict:
        """Look the aliases up; load and swap in the versions they name if they are not the loaded ones."""
        async with self._switch:
            config = self.config
            refs = await asyncio.to_thread(current_refs, config)
            if self.loaded is not None and identity(self.loaded.refs) == identity(refs):
                return self.loaded.info
            loaded = await asyncio.to_thread(self._load, refs, config)
            before = self.loaded.refs if self.loaded else None
            self.loaded = loaded
            self.store.write_json(f"{self.store.root}/service/models.json", loaded.info)
            log.info("serving world model %s with tokenizer %s (was %s)", refs["world_model"], refs["tokenizer"],
                     before and before["world_model"])
            metrics.model_switches().inc()
            return loaded.info

    def _load(self, refs: dict, config: dict) -> Loaded:
        import torch

        from gaia2.generation.generator import Generator

        models = fetch(refs, config["workdir"])
        device = config["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        gen = Generator.from_dirs(models.world_model, models.tokenizer, device, config["precision"], models.clip,
                                  refs, decode=False)
        info = describe(refs, gen.geometry, gen.latent_mean, gen.latent_std, time.time())
        return Loaded(gen, refs, info)

    def check_health(self) -> None:
        if self.config is not None and self.loaded is None:
            raise RuntimeError("no models loaded")

    # ------------------------------------------------------------------------------------- generation
    async def generate(self, job: dict) -> dict:
        """{"id", "spec"} -> {"latents", "resolved", "rig", "models", "sample_s", "frames", "frame_rate"} or
        {"error": reason} for a spec the models cannot take (it was validated against the models the ingress
        saw; they may have switched since)."""
        loaded = self.loaded
        if loaded is None:
            return {"error": "the service has no models loaded yet"}
        gid = job["id"]
        try:
            request = await asyncio.to_thread(self._prepare, loaded, job["spec"])
        except SpecError as err:
            return {"error": str(err)}
        item = Item(gid, request, loaded, request_cost(request, loaded.generator.geometry),
                    int(self.config["max_batch_size"]))
        log.info("generation %s: prepared on %s, cost %d, waiting for a batch", gid, loaded.refs["world_model"],
                 item.cost)
        out = await self.generate_batch(item)
        log.info("generation %s: sampled%s", gid, f" ({out['error']})" if "error" in out else
                 f" in a batch of {out['batch']} in {out['sample_s']:.2f} s")
        return out

    def _prepare(self, loaded: Loaded, spec: dict):
        return loaded.generator.prepare(parse_spec(spec), self.sources)

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.05, batch_size_fn=batch_cost,
                 max_concurrent_batches=1024)
    async def generate_batch(self, items: list[Item]) -> list[dict]:
        """Serve's batch (gathered by cost, ``batch_wait_s``) joins the sampler's queue. Serve forms a batch as
        soon as the previous one is handed over, so under load its batches would stay as small as what arrived
        together; instead every gathered batch waits here and the sampler, each time it is free, takes the
        oldest request and every waiting request of its shape, up to the cost budget."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.extend(zip(items, futures))
        if self._sampler is None or self._sampler.done():
            self._sampler = loop.create_task(self._sampling_loop())
        return list(await asyncio.gather(*futures))

    def _next_group(self) -> list[tuple[Item, asyncio.Future]]:
        """The oldest waiting request and the waiting requests of its shape and models, within the budget."""
        first = self._pending[0][0]
        key = (id(first.loaded), batch_key(first.request))
        budget, count = int(self.config["max_batch_cost"]), int(self.config["max_batch_size"])
        group, rest, cost = [], [], 0
        for entry in self._pending:
            item = entry[0]
            if (id(item.loaded), batch_key(item.request)) == key and len(group) < count \
                    and (not group or cost + item.cost <= budget):
                group.append(entry)
                cost += item.cost
            else:
                rest.append(entry)
        self._pending = rest
        return group

    async def _sampling_loop(self) -> None:
        while self._pending:
            entries = self._next_group()
            live = []
            for item, future in entries:
                if self.store.cancelled(item.gid):
                    future.set_result({"error": "cancelled"})
                else:
                    live.append((item, future))
            if not live:
                continue
            group = [item for item, _ in live]
            metrics.batch_size().observe(len(group))
            metrics.batch_cost().observe(sum(i.cost for i in group))
            log.info("sampling %d request(s) %s", len(group), ",".join(i.gid for i in group))
            try:
                results = await asyncio.to_thread(self._sample, group)
            except Cancelled:
                results = [{"error": "cancelled"} for _ in group]
            except Exception as err:   # noqa: BLE001 - a failed batch fails its requests with the reason
                log.exception("sampling failed for %s", ",".join(i.gid for i in group))
                results = [{"error": f"sampling failed: {type(err).__name__}: {err}"} for _ in group]
            for (_, future), result in zip(live, results):
                if not future.done():
                    future.set_result(result)

    def _sample(self, group: list[Item]) -> list[dict]:
        gen = group[0].loaded.generator
        requests = [i.request for i in group]
        last = [0.0]
        lock = threading.Lock()
        steps = [0]

        def progress(state: dict) -> None:
            steps[0] += 1
            now = time.monotonic()
            final = state["step"] == state["steps"] and state["window"] == state["windows"] - 1
            if now - last[0] < PROGRESS_EVERY_S and not final:
                return
            with lock:
                last[0] = now
                total = state["windows"] * state["steps"]
                done = state["window"] * state["steps"] + state["step"]
                value = {**state, "fraction": round(done / total, 4), "at": time.time()}
                live = 0
                for item in group:
                    if self.store.cancelled(item.gid):
                        continue
                    live += 1
                    self.store.set_progress(item.gid, value)
                if not live:
                    raise Cancelled()

        started = time.perf_counter()
        latents = gen.sample(requests, progress)
        seconds = time.perf_counter() - started
        steps_per_s = steps[0] * len(group) / max(seconds, 1e-9)
        metrics.denoising_steps_per_s().set(steps_per_s)
        out = []
        for item, lat in zip(group, latents):
            r = item.request
            video_s = r.frames / r.rig.frame_rate
            metrics.seconds_per_generated_second().observe(seconds / max(video_s, 1e-9))
            out.append({"latents": lat, "resolved": gen.resolved(r), "rig": r.rig, "models": item.loaded.refs,
                        "sample_s": seconds, "batch": len(group), "frames": int(r.frames),
                        "frame_rate": float(r.rig.frame_rate), "cameras": list(r.rig.names),
                        "mode": r.info.get("mode"), "video_s": video_s})
        return out
