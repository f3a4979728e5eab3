"""The batch generation job's pieces: its inputs as named specs, what is already done, its Ray Data stage and its
rejects table (``jobs.generate`` runs them).

    items, rejects = spec_dir_items("specs/")                  # or spec_table_items / shard_items
    items, more = unique_names(items)                           # one output folder per name
    todo = [i for i in items if not is_done(out, i)]
    ds.map_batches(GenerateSpecs, fn_constructor_kwargs={...}, batch_size=4,
                   compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)

Each spec is one row (``name``, ``spec`` JSON, ``base_dir`` its files are relative to); the stage loads the
models once per actor, prepares every row of a batch, samples the rows of one shape together (``batch_key``: the
library draws each request's noise from its own seed, so a spec gives the same latents in any batch or actor),
decodes and writes ``<out>/<name>/``. A spec that fails is a reject row, never a failed job. Latent shards are
read through ``gaia2.storage`` (a local directory or an object-storage URI); ``<out>`` is a local directory.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shutil
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from gaia2 import storage
from gaia2.generation.sources import LATENT_MEMBERS, LatentShards, LocalSources, SourceSample, load_npy
from gaia2.generation.spec import GenerationSpec, SpecError, load_spec, parse_spec, spec_for_sample
from pipelines.evaluation.samples import SampleError, ShardIndex
from pipelines.rejects import Reject, batch_rejects, reject_columns

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
SPEC_FILE = "spec.json"        # the resolved spec a generation folder holds; written last (a complete folder)
PARTIAL = ".partial"           # a generation being written: ``<out>/.<name>.partial``, renamed when complete
# Files of the output directory itself, which a generation's name must not take.
RESERVED = ("rejects.parquet", "generate.json", "mlflow_run.json")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# Reasons of the rejects table (stable strings, as ``gaia2.schema.errors.Reason`` is for clips).
INVALID_SPEC = "invalid_spec"              # the spec does not validate, or does not fit the models / sources
INVALID_NAME = "invalid_name"              # not usable as a folder name
DUPLICATE_NAME = "duplicate_name"          # an earlier spec has the name: its output is not overwritten
GENERATION_FAILED = "generation_failed"    # any other exception while preparing, sampling, decoding or writing

# One row per rejected spec: its name, where it came from (a file, "FILE row I", "sample KEY"), the stage that
# gave up on it (read, name, prepare, sample, decode, write), the reason and, for a person, the detail.
REJECTS_SCHEMA = pa.schema([("name", pa.string()), ("source", pa.string()), ("stage", pa.string()),
                            ("reason", pa.string()), ("detail", pa.string())])


class GenerateInputError(ValueError):
    """The job's inputs (spec files, models, output directory) cannot be used; says which and why."""


@dataclass(frozen=True)
class Item:
    """One spec to generate: its output name, where it came from, the spec, the folder its files are relative to."""
    name: str
    source: str
    spec: GenerationSpec
    base_dir: str

    def row(self) -> dict:
        return {"name": self.name, "spec": spec_json(self.spec), "base_dir": self.base_dir}


def spec_json(spec: GenerationSpec) -> str:
    """The spec as a JSON string: exactly what ``spec.json`` records under ``spec`` (and parses back to ``spec``)."""
    return json.dumps(spec.model_dump(mode="json", exclude_none=True), sort_keys=True)


def reject_row(name: str, source: str, stage: str, reason: str, detail: str) -> dict:
    return {"name": name, "source": source, "stage": stage, "reason": reason, "detail": detail}


def rejects_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)


def with_sampler_steps(spec: GenerationSpec, steps: int | None) -> GenerationSpec:
    """``spec`` with ``sampler.steps`` replaced (None: unchanged); validated like the spec itself."""
    if steps is None:
        return spec
    data = spec.model_dump(mode="json", exclude_none=True)
    return parse_spec({**data, "sampler": {**data["sampler"], "steps": steps}}, spec.name or "spec")


# ----------------------------------------------------------------------------------------------- inputs
def spec_dir_items(directory: str, sampler_steps: int | None = None) -> tuple[list[Item], list[dict]]:
    """A directory of spec files (``*.yaml``, ``*.yml``, ``*.json``, sorted by file name) -> (items, rejects).
    A spec is named by its ``name``, else its file's stem."""
    files = sorted(f for f in os.listdir(directory) if f.endswith(SPEC_SUFFIXES)
                   and os.path.isfile(os.path.join(directory, f)))
    if not files:
        raise GenerateInputError(f"specs {directory!r}: no spec files (*.yaml, *.yml, *.json)")
    base = os.path.abspath(directory)
    items, rejects = [], []
    for f in files:
        path, stem = os.path.join(base, f), os.path.splitext(f)[0]
        try:
            spec = with_sampler_steps(load_spec(path), sampler_steps)
        except SpecError as err:
            rejects.append(reject_row(stem, path, "read", INVALID_SPEC, str(err)))
            continue
        items.append(Item(spec.name or stem, path, spec, base))
    return items, rejects


def spec_table_items(path: str, sampler_steps: int | None = None) -> tuple[list[Item], list[dict]]:
    """A Parquet file with a string column ``spec`` (one JSON spec per row) and optionally ``name`` -> (items,
    rejects). A row is named by its ``name`` column, else the spec's ``name``, else ``row-NNNNNN``."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise GenerateInputError(f"specs {path!r}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    if "spec" not in table.column_names or not pa.types.is_string(table.schema.field("spec").type):
        raise GenerateInputError(f"specs {path!r}: needs a string column 'spec' of JSON specs (has "
                                 f"{table.column_names})")
    texts = table.column("spec").to_pylist()
    names = table.column("name").to_pylist() if "name" in table.column_names else [None] * len(texts)
    base, where = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    items, rejects = [], []
    for i, (text, name) in enumerate(zip(texts, names)):
        source = f"{os.path.abspath(path)} row {i}"
        try:
            if text is None:
                raise SpecError(f"{where} row {i}: spec is null")
            try:
                data = json.loads(text)
            except ValueError as err:
                raise SpecError(f"{where} row {i}: spec is not JSON ({err})") from None
            spec = with_sampler_steps(parse_spec(data, f"{where} row {i}"), sampler_steps)
        except SpecError as err:
            rejects.append(reject_row(str(name or f"row-{i:06d}"), source, "read", INVALID_SPEC, str(err)))
            continue
        items.append(Item(str(name or spec.name or f"row-{i:06d}"), source, spec, base))
    return items, rejects


def latent_steps_of(root: str, split: str, keys: list[str]) -> dict[str, int]:
    """Latent steps T of each sample in ``keys`` of latent shards ``root`` (a directory or a URI), from the header
    of its ``<key>.latents.npy`` (only the header is read)."""
    try:
        index = ShardIndex(root, split, what="latents")
    except SampleError as err:
        raise GenerateInputError(str(err)) from None
    steps, missing = {}, []
    for key in keys:
        try:
            f = io.BytesIO(index.members(key, ("latents.npy",), limit=4096)["latents.npy"])
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            steps[key] = int(read(f)[0][0])
        except (SampleError, ValueError, EOFError, IndexError):
            missing.append(key)
    if missing:
        raise GenerateInputError(f"latents {storage.redact(root)!r}: no readable {split}/*.tar member "
                                 f"<key>.latents.npy for {missing[:5]}")
    return steps


class StoredLatentShards(LatentShards):
    """``gaia2.generation.sources.LatentShards`` read through ``gaia2.storage``: latent shards in a local
    directory or at an object-storage URI, each sample's members read by offset (``ShardIndex``)."""

    def __init__(self, root: str, scenario=None) -> None:
        try:
            self.index = ShardIndex(root, what="latents")
        except SampleError as err:
            raise SpecError(str(err)) from None
        self.root, self.scenario, self._where = self.index.root, scenario, self.index.where

    def keys(self, split: str | None = None) -> list[str]:
        return sorted(k for k, s in self.index.split.items() if split is None or s == split)

    def __call__(self, key: str) -> SourceSample:
        key = self.resolve(key)
        if key not in self._where:
            raise SpecError(f"sample {key!r}: not in the latent shards at {storage.redact(self.root)!r}")
        try:
            members = self.index.members(key, LATENT_MEMBERS)
        except SampleError as err:
            raise SpecError(str(err)) from None
        arrays = {m: load_npy(members[m], f"sample {key!r} {m}") for m in LATENT_MEMBERS[1:]}
        return SourceSample(key, json.loads(members["json"]), arrays["latents.npy"], arrays["boxes.npy"],
                            arrays["boxes_valid.npy"], arrays["clip.npy"],
                            self.scenario(key) if self.scenario else None)


def latent_sources(latents: str | None, base_dir: str = ".") -> LocalSources:
    """The command line's sources (``LocalSources``: files relative to ``base_dir``, the spec's folder) with their
    samples from latent shards ``latents`` read through ``gaia2.storage`` (a directory or an object-storage URI).
    ``SpecError`` if it holds no latent shards."""
    sources = LocalSources(None, base_dir)
    sources.shards = StoredLatentShards(latents) if latents else None
    return sources


def shard_items(root: str, split: str, limit: int | None, mode: str, seed: int, sampler_steps: int,
                context_steps: int, tau_start: float) -> list[Item]:
    """One spec per sample of ``split`` of latent shards ``root`` (a directory or a URI; the first ``limit``
    keys, sorted), regenerating it under its own recorded conditioning (``spec_for_sample``) over its own latent
    steps; each sample's seed is a hash of (``seed``, key). Named by the key."""
    from pipelines.tokenizer.latents_stages import sample_seed

    keys = StoredLatentShards(root).keys(split)[:limit]   # SpecError if it holds no latent shards
    if not keys:
        raise GenerateInputError(f"from_shards {storage.redact(root)!r}: split {split!r} has no samples")
    steps = latent_steps_of(root, split, keys)
    base = storage.absolute(root)
    return [Item(key, f"sample {key}", spec_for_sample(key, steps[key], mode, seed=sample_seed(seed, key),
                                                       tau_start=tau_start, context_steps=context_steps,
                                                       sampler_steps=sampler_steps), base)
            for key in keys]


def unique_names(items: list[Item]) -> tuple[list[Item], list[dict]]:
    """Items whose names can be output folders, the first of each name -> (kept, rejects of the others)."""
    kept: dict[str, Item] = {}
    rejects = []
    for item in items:
        if not NAME.match(item.name) or item.name in RESERVED:
            rejects.append(reject_row(item.name, item.source, "name", INVALID_NAME,
                                      f"name {item.name!r}: a generation's folder name is 1-128 letters, digits, "
                                      f"'_', '.' or '-', starting with a letter or digit, and not one of {RESERVED}"))
        elif item.name in kept:
            rejects.append(reject_row(item.name, item.source, "name", DUPLICATE_NAME,
                                      f"name {item.name!r} is already the name of {kept[item.name].source} (names "
                                      f"must be unique: one output folder each)"))
        else:
            kept[item.name] = item
    return list(kept.values()), rejects


def is_done(out_dir: str, item: Item) -> bool:
    """Whether ``<out>/<name>/spec.json`` exists and records this very spec (then the generation is skipped)."""
    try:
        with open(os.path.join(out_dir, item.name, SPEC_FILE)) as f:
            recorded = json.load(f).get("spec")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == json.loads(spec_json(item.spec))


def batch_order(item: Item) -> tuple:
    """Sort key putting specs that are likely to share a ``batch_key`` next to each other (the exact key needs the
    models); only the grouping changes with it, never a spec's result."""
    s = item.spec
    return (s.mode.kind, s.sampler.steps, s.sampler.schedule, s.guidance.enabled,
            json.dumps(s.duration.model_dump() if s.duration else None, sort_keys=True), item.name)


def clear_partial(out_dir: str) -> None:
    """Remove the folders of generations a stopped run was writing (they are redone)."""
    for path in glob.glob(os.path.join(out_dir, f".*{PARTIAL}")):
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- stage
class GenerateSpecs:
    """Callable Ray Data stage: rows (``name``, ``spec`` JSON, ``base_dir``) -> (``name``, ``status``
    "generated" | "rejected", the reject columns); each generation written to ``<out_dir>/<name>/``.

    Used as an actor pool, the models loaded once per actor (``Generator.from_dirs``). The rows of a batch that
    share a ``batch_key`` are sampled in one call (a failed call is retried row by row, so only the row that
    fails is rejected); each is decoded, written into ``<out>/.<name>.partial`` and renamed into place.
    """

    def __init__(self, world_model: str, tokenizer: str, out_dir: str, latents: str | None = None,
                 clip: str | None = None, device: str = "cpu", precision: str = "fp32", models: dict | None = None,
                 num_threads: int | None = None) -> None:
        import torch

        from gaia2.generation.generator import Generator

        if num_threads and device == "cpu":
            torch.set_num_threads(num_threads)
        self.gen = Generator.from_dirs(world_model, tokenizer, device, precision, clip, models)
        self.out_dir, self.latents = out_dir, latents
        self._sources: dict = {}

    def sources(self, base_dir: str):
        """The specs' sources: samples of ``latents``, files relative to ``base_dir`` (one per folder, its shard
        index read once per actor)."""
        if base_dir not in self._sources:
            shared = next(iter(self._sources.values()), None)
            if shared is None:
                self._sources[base_dir] = latent_sources(self.latents, base_dir)
            else:
                sources = LocalSources(None, base_dir)
                sources.shards = shared.shards
                self._sources[base_dir] = sources
        return self._sources[base_dir]

    def _sample(self, idx: list[int], requests: list, rejects: list[Reject | None]) -> dict[int, np.ndarray]:
        try:
            return dict(zip(idx, self.gen.sample([requests[i] for i in idx])))
        except Exception as err:   # retried one by one below: only a request that fails alone is rejected
            if len(idx) == 1:
                rejects[idx[0]] = _reject("sample", err)
                return {}
        out = {}
        for i in idx:
            out.update(self._sample([i], requests, rejects))
        return out

    def _write(self, name: str, request, latents: np.ndarray, rejects: list[Reject | None], i: int) -> None:
        from gaia2.generation.generator import Result

        try:
            frames = self.gen.decode(latents)
        except Exception as err:
            rejects[i] = _reject("decode", err)
            return
        try:
            write_generation(Result(request, latents, frames, self.gen.resolved(request)), self.out_dir, name)
        except Exception as err:
            rejects[i] = _reject("write", err)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from gaia2.generation.sampler import batch_key

        names = [str(n) for n in batch["name"]]
        n = len(names)
        rejects: list[Reject | None] = list(batch_rejects(batch, n))
        requests: list = [None] * n
        for i in range(n):
            if rejects[i] is not None:
                continue
            try:
                spec = parse_spec(json.loads(str(batch["spec"][i])), names[i])
                requests[i] = self.gen.prepare(spec, self.sources(str(batch["base_dir"][i])))
            except Exception as err:   # a bad spec must not take the job down: it becomes a reject row
                rejects[i] = _reject("prepare", err)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            if request is not None and rejects[i] is None:
                groups.setdefault(batch_key(request), []).append(i)
        for idx in groups.values():
            for i, latents in self._sample(idx, requests, rejects).items():
                self._write(names[i], requests[i], latents, rejects, i)
        status = ["rejected" if r is not None else "generated" for r in rejects]
        return {"name": np.asarray(names, dtype=object), "status": np.asarray(status, dtype=object)} \
            | reject_columns(rejects)


def _reject(stage: str, err: Exception) -> Reject:
    """A ``SpecError`` is the spec's fault (its message names the field or sample); anything else is a failure of
    the generation, with the exception's type."""
    if isinstance(err, SpecError):
        return Reject(stage, INVALID_SPEC, str(err))
    return Reject(stage, GENERATION_FAILED, f"{type(err).__name__}: {err}")


def write_generation(result, out_dir: str, name: str) -> None:
    """Write ``result`` (a ``Result``) as ``<out_dir>/<name>/``: into ``.<name>.partial`` first, then renamed into
    place (replacing an earlier generation of that name), so the folder is never half old, half new."""
    final = os.path.join(out_dir, name)
    tmp = os.path.join(out_dir, f".{name}{PARTIAL}")
    shutil.rmtree(tmp, ignore_errors=True)
    result.write(tmp)
    if os.path.lexists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
