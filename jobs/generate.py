"""Generate driving videos from specs with a trained world model and tokenizer: one spec here, or many as a Ray job.

    gaia2 generate --spec scenario.yaml --out DIR [--world-model URI] [--tokenizer URI] [--latents LATENTS]
        [--clip DIR] [--device cpu|cuda] [--precision fp32|bf16] [--steps N]
    gaia2 generate --specs DIR_OR_PARQUET --out DIR [--latents LATENTS] [--num-gpus 1 --concurrency 8] ...
    gaia2 generate --from-shards LATENTS --split val [--limit N] [--mode scratch|rollout|edit] --out DIR ...
    gaia2 generate --server URL --spec scenario.yaml --out DIR [--token-env GAIA2_SERVE_TOKEN] [--steps N]
    python -m jobs.generate ...                    # the same job, as a Ray job entry point

Models are export directories or MLflow model URIs (default: the preset's registered ``candidate`` versions,
``models:/gaia2-world-model-tiny@candidate`` and ``models:/gaia2-tokenizer-tiny@candidate``). A world model is
refused with a tokenizer whose registered version carries other latent statistics than its export's.

Latent shards (``--from-shards``, ``--latents``) are a local directory or an object-storage URI (``s3://``,
``gs://``: ``gaia2.storage``, with options and credentials as it takes them); ``--out`` is a local directory.

``--spec`` writes one generation into ``--out`` on this machine (no Ray, no MLflow run): ``video.mp4`` (the
labelled mosaic), ``cameras/<camera>.mp4``, ``latents.npy`` (raw, (T, N, L, H, W)) and ``spec.json`` (the spec as
run). ``--specs`` (a directory of ``*.yaml`` / ``*.yml`` / ``*.json`` specs, or a Parquet file with a ``spec``
column of JSON strings) and ``--from-shards`` (one spec per sample of a split, under that sample's own
conditioning) run the Ray job: ``<out>/<name>/`` per spec, ``<out>/rejects.parquet`` (specs that failed, with the
stage, reason and detail), ``<out>/generate.json`` (counts, models, MLflow run), one MLflow run (experiment
``generation``) with the videos as artifacts. A spec gives the same latents in any batch, on any actor; a rerun
onto the same ``--out`` skips every spec whose folder already records it and generates the rest.

``--server URL`` sends ``--spec`` to a running generation service (``gaia2 serve``, ``jobs.serve``) instead: no
model is loaded here; the same files come back into ``--out``, plus ``generation.json`` (the server's status,
with the generation's id, which a later spec's ``{generation: DIR}`` names). See ``jobs.serve.client``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal, Sequence
from urllib.parse import urlparse

from pydantic import Field

from gaia2 import storage
from gaia2.config.base import ConfigError, StrictModel, build_config
from gaia2.flow.stats import LatentStatsError
from gaia2.generation.spec import SpecError
from jobs.generate_batch import GenerateInputError
from jobs.options import Alias, Command
from jobs.registry import ModelInputError
from jobs.serve.client import ServiceError
from pipelines.evaluation.samples import unreadable

EXPERIMENT = "generation"
REPORT_FILE = "generate.json"
MODELS_DIR = "_models"     # registered models downloaded for the actors, under the output (every node sees it)
# What identifies the models of an output directory: a rerun with others is refused (one set per output and run).
IDENTITY = ("world_model", "tokenizer", "clip", "precision")


class GenerateJob(StrictModel):
    """What is generated, from which models, into where. Exactly one of ``spec``, ``specs``, ``from_shards``."""
    spec: str | None = Field(None, description="one spec file (YAML or JSON), generated on this machine into out")
    specs: str | None = Field(None, description="a directory of spec files, or a Parquet file with a string column "
                                                "'spec' of JSON specs (and optionally 'name'): the Ray job")
    from_shards: str | None = Field(None, description="latent shards (a directory or an s3:// / gs:// URI): one "
                                                      "spec per sample of split, regenerating it under its own "
                                                      "conditioning (the Ray job)")
    split: str = Field("val", min_length=1, description="with from_shards: the split whose samples are generated")
    limit: int | None = Field(None, ge=1, description="with from_shards: the first N samples (keys sorted)")
    mode: Literal["scratch", "rollout", "edit"] = Field(
        "scratch", description="with from_shards: from noise, rolled out from the sample's first context_steps "
                               "latents, or edited from tau_start")
    context_steps: int = Field(3, ge=1, description="with from_shards and mode rollout: context latents")
    tau_start: float = Field(0.5, ge=0.0, le=1.0, description="with from_shards and mode edit: noising flow time")
    seed: int = Field(0, ge=0, description="with from_shards: each sample's sampler seed is a hash of (seed, key)")
    sampler_steps: int | None = Field(None, ge=1, le=1000,
                                      description="sampler steps of every spec (replaces each spec's sampler.steps; "
                                                  "default: the spec's, 50 with from_shards)")
    latents: str | None = Field(None, description="latent shards the specs' {sample: KEY} references come from, "
                                                  "a directory or an s3:// / gs:// URI (default: from_shards)")
    out: str | None = Field(None, description="output: the generation's folder (spec), or one folder per spec; a "
                                              "local directory (each generation is written whole and renamed into "
                                              "place, then read back by the evaluation and MLflow): not a URI")
    world_model: str | None = Field(None, description="world model export directory or MLflow model URI")
    tokenizer: str | None = Field(None, description="tokenizer export directory or MLflow model URI")
    clip: str | None = Field(None, description="CLIP checkpoint directory, for specs with a text prompt or image")
    workdir: str = Field(default_factory=lambda: os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                         description="local MLflow database and artifacts")
    artifact_videos: int = Field(32, ge=0, description="generations (first by name) whose video.mp4 and spec.json "
                                                       "the MLflow run keeps as artifacts")
    server: str | None = Field(None, description="URL of a generation service (gaia2 serve): spec is generated "
                                                 "there and its files downloaded into out; no model loads here")
    token_env: str = Field("GAIA2_SERVE_TOKEN", min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                           description="with server: the environment variable holding the bearer token")


class GenerateConfig(StrictModel):
    """How generation runs (numerics and resources) plus what it reads and writes (``job``)."""
    preset: str = "tiny"
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="--spec: auto = cuda if available; the Ray job: cuda when num_gpus > 0")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="world model arithmetic on a GPU (bf16 autocast)")
    batch_size: int = Field(4, ge=1, description="specs per actor call; those of one shape are sampled together")
    concurrency: int = Field(1, ge=1, description="generator actors (each loads the models once)")
    num_gpus: float = Field(0, ge=0, description="GPUs per generator actor (0: generate on the CPU)")
    num_cpus: float = Field(1, gt=0, description="CPUs per generator actor; on the CPU also its torch threads")
    job: GenerateJob = Field(default_factory=GenerateJob)


def tiny() -> GenerateConfig:
    """One CPU actor; the tiny models registered by the quickstart."""
    return GenerateConfig(preset="tiny", job=GenerateJob(world_model="models:/gaia2-world-model-tiny@candidate",
                                                         tokenizer="models:/gaia2-tokenizer-tiny@candidate"))


def paper() -> GenerateConfig:
    """Eight actors of one GPU each, bf16; the paper models."""
    return GenerateConfig(preset="paper", precision="bf16", batch_size=2, concurrency=8, num_gpus=1, num_cpus=4,
                          job=GenerateJob(world_model="models:/gaia2-world-model-paper@candidate",
                                          tokenizer="models:/gaia2-tokenizer-paper@candidate"))


PRESETS = {"tiny": tiny, "paper": paper}


def load_config(preset: str | None = None, path: str | None = None, overrides: dict | None = None) -> GenerateConfig:
    cfg = build_config(GenerateConfig, PRESETS, preset=preset, overrides=overrides, path=path)
    job = cfg.job
    given = [f for f in ("spec", "specs", "from_shards") if getattr(job, f)]
    if job.server:
        return _check_server(cfg)
    if len(given) != 1:
        raise ConfigError(f"job.spec / job.specs / job.from_shards: give exactly one (--spec FILE, --specs "
                          f"DIR_OR_PARQUET or --from-shards LATENTS; got {given or 'none'})")
    for field in ("out", "world_model", "tokenizer"):
        if not getattr(job, field):
            raise ConfigError(f"job.{field}: required (pass --{field.replace('_', '-')})")
    if storage.is_uri(job.out):
        raise ConfigError(f"job.out: {storage.redact(job.out)!r} is a URI; generations are written to a local "
                          f"directory (inputs may be on object storage: --from-shards, --latents)")
    if job.from_shards and job.latents and storage.absolute(job.latents) != storage.absolute(job.from_shards):
        raise ConfigError(f"job.latents: {storage.redact(job.latents)!r} differs from job.from_shards "
                          f"{storage.redact(job.from_shards)!r} (the samples come from from_shards; leave latents out)")
    for field in ("from_shards", "latents"):
        problem = getattr(job, field) and unreadable(getattr(job, field))
        if problem:
            raise ConfigError(f"job.{field}: {problem} (expected latent shards written by gaia2 encode-latents)")
    if not job.spec and cfg.device == "cuda" and cfg.num_gpus == 0:
        raise ConfigError("num_gpus: 0 with device cuda; give each generator actor a GPU (--num-gpus 1)")
    return cfg


def _check_server(cfg: GenerateConfig) -> GenerateConfig:
    """``--server``: one spec and an output folder; what only a local run uses is refused, not ignored."""
    job = cfg.job
    scheme = urlparse(job.server).scheme
    if scheme not in ("http", "https") or not urlparse(job.server).netloc:
        raise ConfigError(f"job.server: {job.server!r} is not an http(s) URL (e.g. http://host:8000)")
    if job.specs or job.from_shards:
        raise ConfigError("job.server: takes one --spec (--specs / --from-shards are Ray jobs on this machine)")
    for name, flag in (("spec", "--spec"), ("out", "--out")):
        if not getattr(job, name):
            raise ConfigError(f"job.{name}: required with --server (pass {flag})")
    if storage.is_uri(job.out):
        raise ConfigError(f"job.out: {storage.redact(job.out)!r} is a URI; the generation's files come back into a "
                          f"local directory")
    if job.latents:
        raise ConfigError("job.latents: not with --server ({sample: KEY} names the server's dataset; a .npy file "
                          "is uploaded from the spec's {latents: FILE})")
    if job.clip:
        raise ConfigError("job.clip: not with --server (the server has its own CLIP)")
    return cfg


# ------------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class Models:
    world_model: str     # local export directories
    tokenizer: str
    clip: str | None
    record: dict         # what was asked for and which versions (recorded in spec.json, generate.json, MLflow)


def model_refs(job: GenerateJob, precision: str) -> dict:
    """The models as recorded: a registered model by the version its alias names now (``models:/NAME/VERSION``),
    a directory by its absolute path; with the URIs as given. Asks the registry, downloads nothing."""
    from jobs.registry import registered_version

    def ref(uri: str, what: str) -> str:
        version = registered_version(uri, job.workdir, what)
        if version:
            return version
        if urlparse(uri).scheme not in ("", "file"):   # runs:/ (immutable), or a scheme resolve_model refuses
            return uri
        return os.path.abspath(uri.removeprefix("file://"))

    return {"world_model": ref(job.world_model, "world model"), "tokenizer": ref(job.tokenizer, "tokenizer"),
            "clip": os.path.abspath(job.clip) if job.clip else None, "precision": precision,
            "world_model_uri": job.world_model, "tokenizer_uri": job.tokenizer}


def resolve_once(ref: str, workdir: str, what: str, download_to: str | None) -> str:
    """``resolve_model``, reusing a registered version already downloaded to ``download_to`` (versions and runs
    are immutable), so a resumed job does not fetch a large model again."""
    from jobs.registry import resolve_model

    if download_to is None or urlparse(ref).scheme not in ("models", "runs"):
        return resolve_model(ref, workdir, what, download_to)
    marker = download_to + ".json"
    try:
        with open(marker) as f:
            cached = json.load(f)
        if cached["ref"] == ref and os.path.isdir(cached["dir"]):
            return cached["dir"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    path = resolve_model(ref, workdir, what, download_to)
    with open(marker, "w") as f:
        json.dump({"ref": ref, "dir": path}, f)
    return path


def resolve_models(refs: dict, workdir: str, download_to: str | None) -> Models:
    """The models of ``refs`` (``model_refs``) as local directories, checked before anything loads them: both are
    exports of their kind with weights, the world model's config.json carries its latent statistics, their latent
    channels agree, and a registered tokenizer version's statistics (tags) are the world model's."""
    from gaia2.export import WEIGHTS_FILE, read_meta
    from gaia2.flow.stats import require_same
    from jobs.registry import latent_stats_of

    dirs = {}
    for field, what, fmt in (("world_model", "world model", "gaia2-world-model"),
                             ("tokenizer", "tokenizer", "gaia2-tokenizer")):
        path = resolve_once(refs[field], workdir, what, download_to and os.path.join(download_to, field))
        try:
            meta = read_meta(path, fmt)
        except (FileNotFoundError, ValueError) as err:   # they name the directory and what is wrong
            raise ModelInputError(str(err) if path == refs[field] else f"{what} {refs[field]}: {err}") from None
        if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
            raise ModelInputError(f"{what} {refs[field]}: no {WEIGHTS_FILE} in {path}")
        dirs[field] = (path, meta)
    (wm_dir, wm), (tok_dir, tok) = dirs["world_model"], dirs["tokenizer"]
    ours, theirs = f"world model {refs['world_model']}", f"tokenizer {refs['tokenizer']}"
    if wm.get("latent_mean") is None or wm.get("latent_std") is None:
        raise ModelInputError(f"{ours}: its config.json records no latent_mean / latent_std (export it with the "
                              f"training job, which stores the statistics it trained with)")
    if wm["config"].get("latent_dim") != tok["config"].get("latent_dim"):
        raise ModelInputError(f"{ours} takes latents of {wm['config'].get('latent_dim')} channels, {theirs} makes "
                              f"{tok['config'].get('latent_dim')}: a world model only works with its tokenizer")
    if refs["tokenizer"].startswith("models:/"):
        stats = latent_stats_of(refs["tokenizer"])
        if stats is not None:
            require_same(wm["latent_mean"], wm["latent_std"], stats, ours, theirs)
    clip = refs.get("clip")
    if clip and not os.path.isdir(clip):
        raise ModelInputError(f"clip {clip!r}: not a directory (expected a CLIP checkpoint saved with save_pretrained)")
    return Models(wm_dir, tok_dir, clip, refs)


def local_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GenerateInputError("device: cuda, but torch sees no GPU on this machine (use --device cpu)")
    return device


def _latent_sources(latents: str | None, base_dir: str):
    """Sources of specs in ``base_dir`` with samples from latent shards ``latents`` (a directory or a URI)."""
    from jobs.generate_batch import latent_sources

    problem = latents and unreadable(latents)
    if problem:
        raise GenerateInputError(f"latents {problem} (expected latent shards written by gaia2 encode-latents)")
    return latent_sources(latents, base_dir)   # SpecError if it holds no latent shards


# ------------------------------------------------------------------------------------------- one spec
def run_local(cfg: GenerateConfig) -> str:
    """Generate ``job.spec`` into ``job.out`` on this machine; returns the summary (where the videos are)."""
    import tempfile

    from gaia2.generation.generator import Generator
    from gaia2.generation.spec import load_spec
    from jobs.generate_batch import with_sampler_steps

    job = cfg.job
    if not os.path.isfile(job.spec):
        raise GenerateInputError(f"spec {job.spec!r}: no such file")
    spec = with_sampler_steps(load_spec(job.spec), job.sampler_steps)
    sources = _latent_sources(job.latents, os.path.dirname(os.path.abspath(job.spec)))
    device = local_device(cfg.device)
    refs = model_refs(job, cfg.precision)
    with tempfile.TemporaryDirectory() as tmp:   # a registered model is downloaded here and loaded from here
        models = resolve_models(refs, job.workdir, tmp)
        gen = Generator.from_dirs(models.world_model, models.tokenizer, device, cfg.precision, models.clip, refs)
    started = time.perf_counter()
    result = gen.generate(spec, sources, progress=_progress)
    paths = result.write(os.path.abspath(job.out))
    seconds = time.perf_counter() - started
    names = result.request.rig.names
    return "\n".join([
        f"generation: {os.path.abspath(job.out)} ({result.request.info['mode']}, {result.request.steps} latent steps "
        f"= {result.request.frames} frames at {result.request.rig.frame_rate:g} Hz, {len(names)} cameras) in "
        f"{seconds:.1f} s on {device}",
        f"mosaic:     {paths['video']}",
        f"cameras:    {os.path.join(os.path.abspath(job.out), 'cameras')}/{{{','.join(names)}}}.mp4",
        f"latents:    {paths['latents']} {tuple(result.latents.shape)} (T, N, L, H, W)",
        f"spec:       {paths['spec']}",
        f"models:     {_models_line(refs)}",
    ])


def _progress(state: dict) -> None:
    if state["step"] == state["steps"]:
        print(f"[generate] window {state['window'] + 1}/{state['windows']} sampled ({state['steps']} steps)",
              file=sys.stderr, flush=True)


def _models_line(refs: dict) -> str:
    line = f"world model {refs['world_model']}, tokenizer {refs['tokenizer']}"
    return line + (f", CLIP {refs['clip']}" if refs.get("clip") else "") + f"; {refs['precision']}"


# ------------------------------------------------------------------------------------------- the Ray job
def list_items(job: GenerateJob) -> tuple[list, list[dict]]:
    """The job's specs as named items, and the rejects of those that do not parse or cannot be named."""
    from jobs.generate_batch import shard_items, spec_dir_items, spec_table_items, unique_names

    if job.from_shards:
        problem = unreadable(job.from_shards)
        if problem:
            raise GenerateInputError(f"from_shards {problem} (expected latent shards written by gaia2 "
                                     f"encode-latents)")
        items, rejects = shard_items(job.from_shards, job.split, job.limit, job.mode, job.seed,
                                     job.sampler_steps or 50, job.context_steps, job.tau_start), []
    elif os.path.isdir(job.specs):
        items, rejects = spec_dir_items(job.specs, job.sampler_steps)
    elif os.path.isfile(job.specs):
        items, rejects = spec_table_items(job.specs, job.sampler_steps)
    else:
        raise GenerateInputError(f"specs {job.specs!r}: not a directory of spec files nor a Parquet file")
    items, more = unique_names(items)
    return items, rejects + more


def check_output(out: str, refs: dict) -> None:
    """Refuse an output directory an earlier run filled with other models (``generate.json``)."""
    try:
        with open(os.path.join(out, REPORT_FILE)) as f:
            before = json.load(f)["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    changed = [k for k in IDENTITY if before.get(k) != refs.get(k)]
    if changed:
        raise GenerateInputError(
            f"out {out!r}: generated before with {', '.join(f'{k} {before.get(k)}' for k in changed)}; this run has "
            f"{', '.join(f'{k} {refs.get(k)}' for k in changed)} (an output directory holds one set of models and "
            f"one MLflow run: give another --out)")


def _write_json(path: str, value: dict) -> None:
    tmp = f"{path}.partial"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _generate(cfg: GenerateConfig, todo: list, models: Models, out: str) -> list[dict]:
    """Run the Ray Data job over ``todo`` -> each spec's status row (name, status, reject columns)."""
    import math

    import ray

    from jobs.generate_batch import GenerateSpecs, batch_order

    job = cfg.job
    rows = [item.row() for item in sorted(todo, key=batch_order)]
    blocks = max(1, math.ceil(len(rows) / cfg.batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    device = "cuda" if cfg.num_gpus > 0 and cfg.device != "cpu" else "cpu"
    ds = ds.map_batches(
        GenerateSpecs, fn_constructor_kwargs={
            "world_model": models.world_model, "tokenizer": models.tokenizer, "out_dir": out,
            "latents": storage.absolute(job.latents or job.from_shards) if (job.latents or job.from_shards) else None,
            "clip": models.clip, "device": device, "precision": cfg.precision, "models": models.record,
            "num_threads": max(1, int(cfg.num_cpus))},
        batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=min(cfg.concurrency, blocks)),
        num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
    return ds.take_all()


def _log_generations(run_id: str, out: str, generated: list[str], done: list[str], cap: int) -> int:
    """Log ``video.mp4`` and ``spec.json`` of completed generations under ``generations/<name>/``, up to ``cap``
    in the run (those of earlier attempts count; a regenerated one is logged again); returns how many it holds."""
    import mlflow

    logged = {os.path.basename(a.path) for a in mlflow.MlflowClient().list_artifacts(run_id, "generations")}
    for name in sorted(done):
        if (name in logged and name not in generated) or (name not in logged and len(logged) >= cap):
            continue
        for file in ("video.mp4", "spec.json"):
            mlflow.log_artifact(os.path.join(out, name, file), artifact_path=f"generations/{name}")
        logged.add(name)
    return len(logged)


def run_batch(cfg: GenerateConfig) -> dict:
    """The Ray job: list the specs, skip those done, generate the rest with tracking; returns the report (also
    ``<out>/generate.json``)."""
    import mlflow
    import pyarrow.parquet as pq

    from jobs.generate_batch import clear_partial, is_done, reject_row, rejects_table
    from jobs.runtime import init_ray
    from jobs.tracking import log_config, log_params, output_run, tracking_uri

    started = time.perf_counter()
    job = cfg.job
    out = os.path.abspath(job.out)
    # Bad input fails here, before Ray starts or an MLflow run is opened.
    if job.latents:
        _latent_sources(job.latents, ".")
    items, rejects = list_items(job)
    refs = model_refs(job, cfg.precision)
    check_output(out, refs)
    todo = [item for item in items if not is_done(out, item)]
    pending = {item.name for item in todo}
    skipped = [item.name for item in items if item.name not in pending]
    n_specs = len(items) + len(rejects)
    # Models are fetched and checked only when there is something to generate (a finished job's rerun is a no-op).
    models = resolve_models(refs, job.workdir, os.path.join(out, MODELS_DIR)) if todo else None
    print(f"[generate] {n_specs} specs -> {out}: {len(todo)} to generate, {len(skipped)} already "
          f"done, {len(rejects)} rejected before generating; {_models_line(refs)}", flush=True)
    with output_run(EXPERIMENT, job.workdir, out) as (active, new):
        run_id = active.info.run_id
        report = {"status": "running", "models": refs, "run_id": run_id}
        _write_json(os.path.join(out, REPORT_FILE), report)
        if new:
            log_params({k: v for k, v in refs.items() if v is not None})   # redacted, retried
            log_config({**cfg.model_dump(exclude={"job"}),
                        "job": {k: v for k, v in job.model_dump().items() if v is not None and k not in refs}})
        clear_partial(out)
        statuses = []
        if todo:
            init_ray()
            statuses = _generate(cfg, todo, models, out)
        sources = {item.name: item.source for item in items}
        generated = sorted(str(s["name"]) for s in statuses if s["status"] == "generated")
        for s in statuses:
            if s["status"] != "generated":
                name = str(s["name"])
                rejects.append(reject_row(name, sources[name], str(s["reject_stage"]), str(s["reject_reason"]),
                                          str(s["reject_detail"])))
        rejects.sort(key=lambda r: (r["name"], r["source"]))
        table = os.path.join(out, "rejects.parquet")
        pq.write_table(rejects_table(rejects), table + ".partial")
        os.replace(table + ".partial", table)
        reasons: dict[str, int] = {}
        for r in rejects:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        seconds = round(time.perf_counter() - started, 3)
        counts = {"specs": n_specs, "generated": len(generated), "skipped": len(skipped), "rejected": len(rejects)}
        artifacts = _log_generations(run_id, out, generated, generated + skipped, job.artifact_videos)
        report = {"status": "done", "counts": counts, "reasons": reasons, "generated": generated, "skipped": skipped,
                  "rejected": sorted({r["name"] for r in rejects}), "models": refs, "run_id": run_id,
                  "tracking_uri": storage.redact(tracking_uri(job.workdir)), "artifact_videos": artifacts, "seconds": seconds,
                  "out": out}
        _write_json(os.path.join(out, REPORT_FILE), report)
        mlflow.log_metrics({**counts, "seconds": seconds, **{f"rejected.{k}": v for k, v in reasons.items()}})
        for path in (table, os.path.join(out, REPORT_FILE)):
            mlflow.log_artifact(path, artifact_path="generation")
    return report


def batch_summary(report: dict) -> str:
    c, out = report["counts"], report["out"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report["reasons"].items())) or "none"
    return "\n".join([
        f"generations: {out}/<name>/{{video.mp4,cameras/*.mp4,latents.npy,spec.json}}: {c['generated']} generated, "
        f"{c['skipped']} already done (skipped), {c['rejected']} rejected of {c['specs']} specs in "
        f"{report['seconds']:.1f} s",
        f"rejects:     {out}/rejects.parquet (reasons: {reasons})",
        f"models:      {_models_line(report['models'])}",
        f"report:      {out}/{REPORT_FILE}",
        f"mlflow:      run {report['run_id']} in experiment '{EXPERIMENT}' at {report['tracking_uri']} "
        f"({report['artifact_videos']} videos under generations/)",
    ])


def _work(cfg: GenerateConfig) -> str:
    if cfg.job.server:
        from jobs.serve.client import run_remote

        return run_remote(cfg)
    if cfg.job.spec:
        return run_local(cfg)
    return batch_summary(run_batch(cfg))


COMMAND = Command(
    prog="python -m jobs.generate", description=__doc__.splitlines()[0],
    aliases=(Alias("--spec", "job.spec", "one spec file: generate it here, into --out", metavar="FILE"),
             Alias("--specs", "job.specs", "a directory of spec files or a Parquet file of JSON specs (Ray job)",
                   metavar="DIR_OR_PARQUET"),
             Alias("--from-shards", "job.from_shards", "latent shards: one spec per sample of --split (Ray job)",
                   metavar="LATENTS"),
             Alias("--split", "job.split", "with --from-shards: the split"),
             Alias("--limit", "job.limit", "with --from-shards: the first N samples", int),
             Alias("--mode", "job.mode", "with --from-shards: scratch, rollout or edit"),
             Alias("--out", "job.out", "output directory"),
             Alias("--world-model", "job.world_model", "world model export directory or MLflow model URI",
                   metavar="URI"),
             Alias("--tokenizer", "job.tokenizer", "tokenizer export directory or MLflow model URI", metavar="URI"),
             Alias("--latents", "job.latents", "latent shards the specs' sample references come from"),
             Alias("--clip", "job.clip", "CLIP checkpoint directory (text prompts, images)", metavar="DIR"),
             Alias("--steps", "job.sampler_steps", "sampler steps of every spec", int),
             Alias("--workdir", "job.workdir", "local MLflow database and artifacts"),
             Alias("--device", "device", "cpu, cuda or auto"),
             Alias("--precision", "precision", "fp32 or bf16"),
             Alias("--batch-size", "batch_size", "specs per generator actor call", int),
             Alias("--num-gpus", "num_gpus", "GPUs per generator actor", float),
             Alias("--num-cpus", "num_cpus", "CPUs per generator actor", float),
             Alias("--concurrency", "concurrency", "generator actors", int),
             Alias("--server", "job.server", "a generation service's URL: generate --spec there, download into "
                                             "--out", metavar="URL"),
             Alias("--token-env", "job.token_env", "with --server: environment variable of the bearer token",
                   metavar="VAR")),
    presets=tuple(PRESETS), build=load_config, work=_work,
    input_errors=(GenerateInputError, ModelInputError, SpecError, LatentStatsError, ServiceError))


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
