"""The generation service (``jobs.serve``) under load: batching against no batching, then overload.

    python benchmarks/serve.py [--quick] [--concurrency 1 8 32] [--requests 2] [--sampler-steps 100]
        [--latent-steps 1] [--cameras 1] [--world-model DIR --tokenizer DIR] [--workdir DIR]

It starts a local Ray and Serve of its own (shut down at the end) and deploys the service three times on the same
models, each an application under its own route prefix with its replicas taking no logical CPUs (like the tests'
``tests.serve_helpers.deploy``):

  batched     ``generator.max_batch_size`` 16, ``batch_wait_s`` 0.1, ``max_batch_cost`` large
  unbatched   ``generator.max_batch_size`` 1 (batching off), ``batch_wait_s`` 0 (nothing to wait for)
  overload    as batched, but ``limits.max_queued`` small (4)

Models: by default a randomly initialised tiny world model and tiny tokenizer (``benchmarks.generation``'s
``tiny_generator``, seeded; sampling costs the same whatever the weights), exported with latent statistics 0 / 1;
or trained exports (``--world-model`` / ``--tokenizer``). Requests: ``benchmarks.generation``'s scratch scene on
``sedan6_30hz`` (different seeds), its first ``--cameras`` cameras, ``--latent-steps`` latent steps,
``--sampler-steps`` Euler steps, no guidance.

closed loop     for each concurrency C, C client threads each send a request (``POST /v1/generations?wait=S``,
                then ``GET ?wait=S`` until it ends) and, when it ends, the next, until ``--requests`` x C have been
                sent; for each application in turn (batched, then unbatched). Throughput = generations done /
                wall time from the first send to the last end; latency = each request's send-to-end, p50 / p99.
                ``batching_speedup`` = batched / unbatched throughput at C = 8 (goal >= 3).
where time goes from each done generation's status: its batch size, the sampler's time per request (the batch's
                sampling time / its size), decoding (tokenizer + video encoding), the server-side total and the
                rest of the client's latency (HTTP, queueing before the ingress). Busy fractions: sampler and
                decoder seconds / wall seconds. And measured in this process on the same models (1 torch thread,
                like a replica): sampling one request alone and in batches of 8 and 16, decoding one request; their
                ratio bounds what batching can win when the sampler is the bottleneck.
overload        ``--overload-factor`` x ``max_queued`` requests at once (one thread each, released together) at the
                overload application: ``accepted`` (202 / 200), ``rejected_503`` (503 with a Retry-After),
                ``failed`` (accepted but ended failed or cancelled, any 5xx but 503, a 503 without Retry-After,
                a connection error), ``lost`` (accepted, no final status within ``--deadline`` s); and ``done``.

On a CPU the tiny world model's forward pass is already compute-bound at batch 1 for a few hundred tokens, so
batching wins only where a forward pass over one request is mostly per-call overhead: few tokens per request
(one camera, one latent step: 32 tokens) and many sampler steps make that the dominant cost. The default
settings are those; larger requests are printed beside for honesty (``--cameras 5 --latent-steps 3``). The last
line is one JSON object: {"batching_speedup", "concurrency": {C: {"batched": {...}, "unbatched": {...},
"speedup"}}, "overload": {"accepted", "rejected_503", "failed", "lost", ...}, "components", "settings"}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from benchmarks.generation import RIG  # noqa: E402
from benchmarks.generation import spec as scene_spec  # noqa: E402

FINAL = ("done", "failed", "cancelled")
APPS = ("batched", "unbatched")
GOAL_SPEEDUP = 3.0
SPEEDUP_AT = 8


@dataclass
class Settings:
    concurrency: tuple[int, ...] = (1, 8, 32)
    requests_per_client: int = 2          # requests sent per client thread at each concurrency
    min_requests: int = 8                 # ... and at least this many at each concurrency
    sampler_steps: int = 100
    latent_steps: int = 1
    cameras: int = 1
    max_batch_size: int = 16
    batch_wait_s: float = 0.1
    max_batch_cost: int = 1 << 24
    max_queued: int = 64                  # the measured applications: never the bottleneck
    overload_queued: int = 4              # the overload application's limits.max_queued
    overload_factor: int = 10
    retry_after_s: int = 2
    wait_s: float = 30.0                  # ?wait= of the closed loop's POST / GET
    deadline_s: float = 300.0             # an accepted request still unfinished after this is lost
    warmup: int = 2                       # requests per application before measuring (the decoder loads lazily)
    components: bool = True               # the in-process sampling / decoding figures

    def requests_at(self, concurrency: int) -> int:
        return max(self.min_requests, self.requests_per_client * concurrency)


# ------------------------------------------------------------------------------------------------- models
def tiny_models(work: str, seed: int = 0) -> tuple[str, str]:
    """``benchmarks.generation``'s random tiny world model and tokenizer, exported (latent statistics 0 / 1)
    -> (world model dir, tokenizer dir)."""
    from types import SimpleNamespace

    import torch

    from benchmarks.generation import tiny_generator
    from gaia2.tokenizer.export import save_tokenizer
    from gaia2.world_model.export import save_world_model

    gen, _ = tiny_generator(SimpleNamespace(world_model=None, tokenizer=None, seed=seed), torch.device("cpu"))
    wm = save_world_model(os.path.join(work, "world_model"), gen.world_model,
                          extra={"latent_mean": 0.0, "latent_std": 1.0})
    return wm, save_tokenizer(os.path.join(work, "tokenizer"), gen.tokenizer)


def request_spec(seed: int, s: Settings) -> dict:
    """The scratch scene of ``benchmarks.generation`` on its first ``s.cameras`` cameras."""
    from gaia2.synth.rigs import RIGS

    spec = scene_spec(s.latent_steps, s.sampler_steps, seed)
    spec["rig"] = {"name": RIG, "views": [c.name for c in RIGS[RIG].cameras][:s.cameras]}
    spec["name"] = f"serve-bench-{seed}"
    return spec


# --------------------------------------------------------------------------------------------- applications
def app_overrides(world_model: str, tokenizer: str, work: str, s: Settings) -> dict[str, dict]:
    """Each application's config overrides (the ``tiny`` preset below them)."""
    def app(name: str, generator: dict, limits: dict) -> dict:
        return {"models": {"world_model": world_model, "tokenizer": tokenizer,
                           "workdir": os.path.join(work, "mlflow")},
                "results": {"uri": os.path.join(work, "results", name), "sweep_s": 3600.0},
                "generator": {"max_batch_cost": s.max_batch_cost, "max_ongoing_requests": 64, **generator},
                "limits": {"max_sampler_steps": max(100, s.sampler_steps), "retry_after_s": s.retry_after_s,
                           **limits}}
    batched = {"max_batch_size": s.max_batch_size, "batch_wait_s": s.batch_wait_s}
    return {"batched": app("batched", batched, {"max_queued": s.max_queued}),
            "unbatched": app("unbatched", {"max_batch_size": 1, "batch_wait_s": 0.0}, {"max_queued": s.max_queued}),
            "overload": app("overload", batched, {"max_queued": s.overload_queued})}


def deploy_apps(port: int, overrides: dict[str, dict], prefix: str = "bench") -> dict[str, str]:
    """Deploy each application at ``/<prefix>-<name>/`` on the running Serve; -> {name: base URL}."""
    from tests.serve_helpers import deploy

    return {name: deploy(port, f"{prefix}-{name}", o).url for name, o in overrides.items()}


def undeploy_apps(prefix: str = "bench", names=("batched", "unbatched", "overload")) -> None:
    from ray import serve

    for name in names:
        try:
            serve.delete(f"{prefix}-{name}")
        except Exception as err:   # noqa: BLE001 - best effort at the end
            print(f"undeploy {prefix}-{name}: {err}", file=sys.stderr)


# --------------------------------------------------------------------------------------------- one request
@dataclass
class Outcome:
    status: str                 # done | failed | cancelled | rejected_503 | http_<code> | error | lost
    latency_s: float
    view: dict = field(default_factory=dict)
    retries: int = 0


def generate_once(session: requests.Session, url: str, spec: dict, s: Settings) -> Outcome:
    """POST ?wait=, then GET ?wait= until the generation ends (a 503 is retried after its Retry-After)."""
    start = time.perf_counter()
    deadline = start + s.deadline_s
    retries = 0
    try:
        while True:
            r = session.post(f"{url}v1/generations", params={"wait": s.wait_s}, json=spec, timeout=s.wait_s + 60)
            if r.status_code != 503 or time.perf_counter() > deadline:
                break
            retries += 1
            time.sleep(float(r.headers.get("Retry-After", 1)))
        if r.status_code not in (200, 202):
            return Outcome(f"http_{r.status_code}", time.perf_counter() - start, _json(r), retries)
        view = r.json()
        while view.get("status") not in FINAL:
            if time.perf_counter() > deadline:
                return Outcome("lost", time.perf_counter() - start, view, retries)
            r = session.get(f"{url}v1/generations/{view['id']}", params={"wait": s.wait_s}, timeout=s.wait_s + 60)
            if r.status_code != 200:
                return Outcome(f"http_{r.status_code}", time.perf_counter() - start, _json(r), retries)
            view = r.json()
        return Outcome(view["status"], time.perf_counter() - start, view, retries)
    except requests.RequestException as err:
        return Outcome("error", time.perf_counter() - start, {"error": f"{type(err).__name__}: {err}"}, retries)


def _json(r: requests.Response) -> dict:
    try:
        value = r.json()
        return value if isinstance(value, dict) else {"body": value}
    except ValueError:
        return {"body": r.text[:300]}


# ------------------------------------------------------------------------------------------- the closed loop
def closed_loop(url: str, concurrency: int, n: int, s: Settings, seed0: int = 0) -> dict:
    """``concurrency`` clients sending ``n`` requests in all, each the next when its last one ended."""
    lock = threading.Lock()
    sent = [0]
    outcomes: list[Outcome] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if sent[0] >= n:
                        return
                    i = sent[0]
                    sent[0] += 1
                outcome = generate_once(session, url, request_spec(seed0 + i, s), s)
                with lock:
                    outcomes.append(outcome)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return summarise(outcomes, wall, concurrency)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(outcomes: list[Outcome], wall: float, concurrency: int) -> dict:
    done = [o for o in outcomes if o.status == "done"]
    lat = [o.latency_s for o in done]
    v = [o.view for o in done]

    def mean(key) -> float | None:
        values = [key(x) for x in v if key(x) is not None]
        return statistics.fmean(values) if values else None

    sampler = [x["sample_s"] / max(1, x.get("batch") or 1) for x in v if x.get("sample_s") is not None]
    decode = [x["decode_s"] for x in v if x.get("decode_s") is not None]
    server = [x["seconds"] for x in v if x.get("seconds") is not None]
    overhead = [o.latency_s - o.view["seconds"] for o in done if o.view.get("seconds") is not None]
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    errors = sorted({str(o.view.get("error"))[:200] for o in outcomes if o.status != "done"})
    return {
        "concurrency": concurrency, "requests": len(outcomes), "done": len(done),
        "not_done": len(outcomes) - len(done), "statuses": statuses, "errors": errors[:5],
        "wall_s": round(wall, 3), "throughput": round(len(done) / wall, 4) if wall > 0 else None,
        "p50_s": _r(percentile(lat, 50)), "p99_s": _r(percentile(lat, 99)), "mean_s": _r(statistics.fmean(lat))
        if lat else None,
        "retries_503": sum(o.retries for o in outcomes),
        "mean_batch": _r(mean(lambda x: x.get("batch"))),
        "sampler_s_per_request": _r(statistics.fmean(sampler)) if sampler else None,
        "decode_s": _r(statistics.fmean(decode)) if decode else None,
        "server_s": _r(statistics.fmean(server)) if server else None,
        "client_overhead_s": _r(statistics.fmean(overhead)) if overhead else None,
        "sampler_busy": _r(sum(sampler) / wall) if wall > 0 else None,
        "decoder_busy": _r(sum(decode) / wall) if wall > 0 else None,
    }


def _r(x: float | None, n: int = 4) -> float | None:
    return None if x is None else round(float(x), n)


# ------------------------------------------------------------------------------------------------ overload
def overload(url: str, s: Settings, seed0: int = 100_000) -> dict:
    """``overload_factor`` x ``overload_queued`` requests released at once; then every accepted one followed to
    its end (or the deadline)."""
    n = s.overload_factor * s.overload_queued
    barrier = threading.Barrier(n)

    def fire(i: int) -> tuple[str, dict, bool]:
        with requests.Session() as session:
            spec = request_spec(seed0 + i, s)
            barrier.wait()
            try:
                r = session.post(f"{url}v1/generations", json=spec, timeout=120)
            except requests.RequestException as err:
                return "error", {"error": f"{type(err).__name__}: {err}"}, False
            return str(r.status_code), _json(r), "Retry-After" in r.headers

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(fire, range(n)))
    fired_s = time.perf_counter() - started
    counts = {"fired": n, "max_queued": s.overload_queued, "accepted": 0, "rejected_503": 0, "failed": 0, "lost": 0,
              "done": 0, "rejected_503_without_retry_after": 0, "other_4xx": 0, "connection_errors": 0}
    accepted: list[str] = []
    for code, body, retry_after in answers:
        if code in ("200", "202"):
            counts["accepted"] += 1
            accepted.append(body["id"])
        elif code == "503":
            if retry_after:
                counts["rejected_503"] += 1
            else:
                counts["rejected_503_without_retry_after"] += 1
                counts["failed"] += 1
        elif code == "error":
            counts["connection_errors"] += 1
            counts["failed"] += 1
        elif code.startswith("5"):
            counts["failed"] += 1
        else:
            counts["other_4xx"] += 1
    final = follow_all(url, accepted, s.deadline_s)
    for gid in accepted:
        status = final.get(gid)
        if status is None:
            counts["lost"] += 1
        elif status == "done":
            counts["done"] += 1
        else:
            counts["failed"] += 1
    counts["fire_s"] = round(fired_s, 3)
    counts["drain_s"] = round(time.perf_counter() - started, 3)
    return counts


def follow_all(url: str, ids: list[str], deadline_s: float) -> dict[str, str]:
    """Each id's final status (done / failed / cancelled), those not final by the deadline left out."""
    deadline = time.monotonic() + deadline_s
    final: dict[str, str] = {}
    with requests.Session() as session:
        while len(final) < len(ids) and time.monotonic() < deadline:
            for gid in ids:
                if gid in final:
                    continue
                try:
                    r = session.get(f"{url}v1/generations/{gid}", timeout=30)
                except requests.RequestException:
                    continue
                if r.status_code == 200 and r.json().get("status") in FINAL:
                    final[gid] = r.json()["status"]
            if len(final) < len(ids):
                time.sleep(0.25)
    return final


# ------------------------------------------------------------------------------------------- the components
def components(world_model: str, tokenizer: str, s: Settings, batches=(1, 8, 16)) -> dict:
    """Sampling one request alone and in batches, and decoding one, in this process (1 torch thread)."""
    import torch

    from gaia2.generation.generator import Generator
    from gaia2.generation.spec import parse_spec
    from gaia2.generation.video import decode_latents, write_outputs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = Generator.from_dirs(world_model, tokenizer, "cpu")
        reqs = [gen.prepare(parse_spec(request_spec(i, s))) for i in range(max(batches))]
        gen.sample(reqs[:1])
        out = {}
        for b in batches:
            t = time.perf_counter()
            latents = gen.sample(reqs[:b])
            out[f"sample_s_per_request_batch_{b}"] = _r((time.perf_counter() - t) / b)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            frames = decode_latents(gen.tokenizer, latents[0], "cpu")
            t1 = time.perf_counter()
            write_outputs(tmp, frames, latents[0], gen.resolved(reqs[0]), reqs[0].rig)
            t2 = time.perf_counter()
        out.update({"decode_s": _r(t1 - t), "write_videos_s": _r(t2 - t1)})
        best = min(out[f"sample_s_per_request_batch_{b}"] for b in batches)
        one = out["sample_s_per_request_batch_1"]
        out["sampler_batching_bound"] = _r(one / best, 3)
        # If the sampler and the decoder each have a core: throughput ~ 1 / max(stage) per request.
        dec = out["decode_s"] + out["write_videos_s"]
        out["pipeline_bound"] = _r(max(one, dec) / max(best, dec), 3)
        return out
    finally:
        torch.set_num_threads(threads)


# -------------------------------------------------------------------------------------------------- the run
def warm_up(urls: dict[str, str], s: Settings) -> None:
    for name, url in urls.items():
        with requests.Session() as session:
            for i in range(s.warmup):
                o = generate_once(session, url, request_spec(900_000 + i, s), s)
                if o.status != "done":
                    raise RuntimeError(f"warm-up of {name}: {o.status}: {o.view.get('error')}")


def run(port: int, world_model: str, tokenizer: str, work: str, s: Settings, prefix: str = "bench",
        log=print) -> dict:
    """Deploy the three applications on the running Serve (HTTP on ``port``), measure, undeploy; -> the result."""
    overrides = app_overrides(world_model, tokenizer, work, s)
    t = time.perf_counter()
    try:
        urls = deploy_apps(port, overrides, prefix)
        log(f"deployed {', '.join(urls)} in {time.perf_counter() - t:.1f} s")
        warm_up(urls, s)
        per: dict[str, dict] = {}
        for c in s.concurrency:
            n = s.requests_at(c)
            row = {}
            for name in APPS:
                row[name] = closed_loop(urls[name], c, n, s, seed0=1000 * c)
                r = row[name]
                log(f"C={c:<3} {name:<9} {r['done']}/{r['requests']} done in {r['wall_s']:.1f} s: "
                    f"{r['throughput']} gen/s, p50 {r['p50_s']} s, p99 {r['p99_s']} s, mean batch {r['mean_batch']}, "
                    f"sampler {r['sampler_s_per_request']} s/req, decode {r['decode_s']} s, overhead "
                    f"{r['client_overhead_s']} s")
            b, u = row["batched"]["throughput"], row["unbatched"]["throughput"]
            row["speedup"] = _r(b / u, 3) if b and u else None
            per[str(c)] = row
        over = overload(urls["overload"], s)
        log(f"overload: {json.dumps(over)}")
    finally:
        undeploy_apps(prefix, tuple(overrides))
    comp = components(world_model, tokenizer, s) if s.components else None
    at = per.get(str(SPEEDUP_AT)) or per[str(s.concurrency[len(s.concurrency) // 2])]
    return {"batching_speedup": at["speedup"], "speedup_at_concurrency": at["batched"]["concurrency"],
            "goal_speedup": GOAL_SPEEDUP, "concurrency": per, "overload": over, "components": comp,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()}}


def table(result: dict) -> str:
    rows = [("C", "application", "gen/s", "p50 s", "p99 s", "batch", "sampler s/req", "decode s", "server s",
             "overhead s", "sampler busy", "decoder busy")]
    for c, row in result["concurrency"].items():
        for name in APPS:
            r = row[name]
            rows.append((c, name, *(str(r[k]) for k in ("throughput", "p50_s", "p99_s", "mean_batch",
                                                        "sampler_s_per_request", "decode_s", "server_s",
                                                        "client_overhead_s", "sampler_busy", "decoder_busy"))))
        rows.append((c, "speedup", str(row["speedup"]), *[""] * 9))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    verdict = "ok" if (result["batching_speedup"] or 0) >= GOAL_SPEEDUP else "MISSED"
    lines.append(f"batching speedup at C={result['speedup_at_concurrency']}: {result['batching_speedup']} "
                 f"(goal >= {GOAL_SPEEDUP}: {verdict})")
    o = result["overload"]
    lines.append(f"overload: {o['fired']} at once against max_queued {o['max_queued']}: accepted {o['accepted']} "
                 f"(done {o['done']}), rejected 503 {o['rejected_503']}, failed {o['failed']}, lost {o['lost']}")
    if result.get("components"):
        lines.append("in-process (1 thread): " + ", ".join(f"{k} {v}" for k, v in result["components"].items()))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Settings()
    p.add_argument("--quick", action="store_true", help="smoke run: C 1 and 8, few requests, 20 sampler steps")
    p.add_argument("--concurrency", type=int, nargs="+", default=list(d.concurrency))
    p.add_argument("--requests", type=int, default=d.requests_per_client, help="requests per client thread")
    p.add_argument("--sampler-steps", type=int, default=d.sampler_steps)
    p.add_argument("--latent-steps", type=int, default=d.latent_steps)
    p.add_argument("--cameras", type=int, default=d.cameras)
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size)
    p.add_argument("--batch-wait", type=float, default=d.batch_wait_s)
    p.add_argument("--overload-queued", type=int, default=d.overload_queued)
    p.add_argument("--overload-factor", type=int, default=d.overload_factor)
    p.add_argument("--deadline", type=float, default=d.deadline_s, help="seconds before an accepted request is lost")
    p.add_argument("--no-components", action="store_true", help="skip the in-process sampling / decoding figures")
    p.add_argument("--world-model", help="a world-model export directory instead of the random tiny model")
    p.add_argument("--tokenizer", help="with --world-model: its tokenizer export directory")
    p.add_argument("--workdir", help="models and results (default: a temporary directory, deleted)")
    p.add_argument("--num-cpus", type=int, default=None, help="Ray's logical CPUs (default: the machine's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if bool(args.world_model) != bool(args.tokenizer):
        p.error("--world-model and --tokenizer go together")
    s = Settings(concurrency=tuple(args.concurrency), requests_per_client=args.requests,
                 sampler_steps=args.sampler_steps, latent_steps=args.latent_steps, cameras=args.cameras,
                 max_batch_size=args.max_batch_size, batch_wait_s=args.batch_wait,
                 overload_queued=args.overload_queued, overload_factor=args.overload_factor,
                 deadline_s=args.deadline, components=not args.no_components)
    if args.quick:
        s.concurrency, s.requests_per_client, s.min_requests, s.sampler_steps = (1, 8), 1, 4, 20
        s.overload_factor, s.warmup = 5, 1

    import ray
    from ray import serve

    from tests.serve_helpers import free_port

    with tempfile.TemporaryDirectory(prefix="gaia2-serve-bench-") as tmp:
        work = os.path.abspath(args.workdir or tmp)
        os.makedirs(work, exist_ok=True)
        if args.world_model:
            wm, tok, models = os.path.abspath(args.world_model), os.path.abspath(args.tokenizer), "given exports"
        else:
            wm, tok = tiny_models(os.path.join(work, "models"), args.seed)
            models = "tiny world model and tiny tokenizer, random initialisation"
        port = free_port()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            print(f"serve benchmark: {models}; requests: {RIG} x {s.cameras} camera(s), {s.latent_steps} latent "
                  f"step(s), {s.sampler_steps} sampler steps; concurrency {list(s.concurrency)}; Serve on port "
                  f"{port}", flush=True)
            result = run(port, wm, tok, work, s, log=lambda line: print(line, flush=True))
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
    result["models"] = models
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
