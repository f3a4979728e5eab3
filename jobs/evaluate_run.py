"""The evaluation job's steps (``jobs.evaluate`` is its config and command): samples and candidates, generation,
measurement in an actor pool with the real-video cache, the validation loss, then the report, MLflow and
promotion (``jobs.evaluate_report``, ``jobs.evaluate_promote``).

Everything a step writes is kept under the output directory and reused by a rerun: generations (skipped when
their folder records the same spec), fake-video measurements (``measurements/<model>/<settings>/<key>.npz``),
real-video measurements (the cache), exported checkpoints; the MLflow run continues (``mlflow_run.json``).
Shards are read through ``gaia2.storage``. An object-storage ``--out`` gets a copy of the local working directory
(``<workdir>/evaluations/<name>``) at the end (``publish``), and its ``mlflow_run.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from urllib.parse import urlparse

import numpy as np

from gaia2 import storage
from jobs.evaluate import (REPORT_FILE, EvaluateConfig, EvaluationError, metric_names, protocol_digest,
                           protocol_record, wanted)
from jobs.evaluate_models import Candidate, checkpoint_candidates, recorded_step, tag_for
from pipelines.evaluation.cache import FeatureCache, dataset_fingerprint, path_digest
from pipelines.evaluation.measure import CLIP_METRICS, FRAME_METRICS, MOTION_METRIC, Settings, pack, unpack

MEASURED = ("fdd", "fid", "fvd", "fvmd", "iou", "action")   # the measurements of a video (loss is not one)
MEASURE_VERSION = "1"                                       # bump when a measurement's code changes its numbers
FRAME_RATE_TOLERANCE = 0.05                                 # relative: a sample's frame_rate vs protocol.frame_rate


def say(line: str) -> None:
    print(f"[evaluate] {line}", flush=True)


class Evaluation:
    def __init__(self, cfg: EvaluateConfig) -> None:
        self.cfg, self.job = cfg, cfg.job
        self.metrics = wanted(cfg)
        self.measured = [m for m in self.metrics if m in MEASURED]

    # ------------------------------------------------------------------------------------------- inputs
    def samples(self) -> list:
        from jobs.generate_batch import shard_items
        from pipelines.evaluation.samples import SampleError, ShardIndex

        job = self.job
        # With windows_per_clip the selection needs every key (and the pixel shards' clip ids) before the limit.
        items = shard_items(job.latents, job.split, None if job.windows_per_clip else job.samples, job.mode,
                            job.seed, job.sampler_steps, job.context_steps, job.tau_start)
        try:
            real = ShardIndex(job.shards, job.split)
        except SampleError as err:
            raise EvaluationError(str(err)) from None
        missing = [i.name for i in items if i.name not in real.where]
        if missing:
            raise EvaluationError(f"shards {storage.redact(job.shards)!r}: split {job.split!r} lacks {len(missing)} "
                                  f"of the latent shards' samples (e.g. {missing[:3]}); give the pixel shards the "
                                  f"latents were encoded from")
        if job.windows_per_clip:
            from pipelines.evaluation.samples import first_windows

            unknown = [i.name for i in items if i.name not in real.clip]
            if unknown:
                raise EvaluationError(f"job.windows_per_clip: the index of shards {storage.redact(job.shards)!r} "
                                      f"names no clip for {len(unknown)} samples (e.g. {unknown[:3]}); rebuild them "
                                      f"with gaia2 shards build, or leave windows_per_clip null")
            keep = set(first_windows([i.name for i in items], real.clip, real.window, job.windows_per_clip))
            items = [i for i in items if i.name in keep][:job.samples]
        self._check_frame_rate(real, [i.name for i in items])
        return items

    def _check_frame_rate(self, real, keys: list[str]) -> None:
        """A protocol defined at a frame rate (nuScenes: the cameras' 12 Hz) is not followed by shards cut at
        another (a 16-frame clip at 2 Hz spans 8 s, not 1.3 s): refused before anything is generated."""
        from pipelines.evaluation.samples import SampleError

        want = self.cfg.protocol.frame_rate
        if want is None:
            return
        off = []
        for key in keys:
            try:
                rate = json.loads(real.members(key, ("json",))["json"]).get("frame_rate")
            except (SampleError, ValueError) as err:
                raise EvaluationError(f"protocol.frame_rate: cannot read sample {key!r}'s frame rate ({err})") \
                    from None
            if not rate or abs(float(rate) / want - 1) > FRAME_RATE_TOLERANCE:
                off.append(f"{key} at {rate} Hz")
        if off:
            raise EvaluationError(
                f"protocol.frame_rate: the {self.cfg.protocol.name} protocol's videos are at {want:g} Hz, but "
                f"{len(off)} of the {len(keys)} samples are not (e.g. {', '.join(off[:3])}); build the shards at "
                f"{want:g} Hz (window.grid_hz), or --set protocol.frame_rate=null to evaluate anyway (the report "
                f"then lists it among the protocol's deviations)")

    def candidates(self, out: str) -> list[Candidate]:
        from jobs.registry import registered_version

        job = self.job
        if job.checkpoints:
            return checkpoint_candidates(job.checkpoints, os.path.join(out, "_models", "checkpoints"))
        ref = registered_version(job.world_model, job.workdir, "world model")
        if ref is None:   # a directory by its absolute path; a runs:/ URI as given (it names one immutable model)
            ref = job.world_model if urlparse(job.world_model).scheme not in ("", "file") else \
                os.path.abspath(job.world_model.removeprefix("file://"))
        return [Candidate(tag_for(ref), ref)]

    def settings(self) -> Settings:
        n, m = self.cfg.networks, self.cfg.measure
        networks = {metric: os.path.abspath(getattr(n, field)) for metric, field in
                    (("fdd", "fdd"), ("fid", "fid"), ("fvd", "fvd"), ("iou", "segmenter")) if metric in self.measured}
        tracker = n.tracker if n.tracker == "lucas-kanade" else os.path.abspath(n.tracker)
        return Settings(networks=networks, resolutions={k: list(v) for k, v in n.resolutions.items()},
                        tracker=tracker, fvmd_cells=m.fvmd_cells, frames_per_video=m.frames_per_video,
                        clips_per_video=m.clips_per_video, fvd_clip_frames=m.fvd_clip_frames,
                        frame_sizes={k: list(v) for k, v in m.frame_sizes.items()}, batch_size=m.batch_size)

    def fingerprints(self, settings: Settings) -> dict[str, str]:
        """Each measurement's identity (what determines its numbers), loading each network once here: a bad path
        or checkpoint fails now, before anything is generated."""
        from gaia2.evaluation.features import load_extractor
        from gaia2.evaluation.fvmd import load_tracker

        s, out = settings, {}
        for metric in self.measured:
            # what else decides the numbers; written only when not the default, so older caches stay valid
            sized = f"|size={'x'.join(map(str, s.frame_sizes[metric]))}" if metric in s.frame_sizes else ""
            if metric in FRAME_METRICS + CLIP_METRICS:
                size = tuple(s.resolutions[metric]) if metric in s.resolutions else None
                extractor = load_extractor(metric, s.networks[metric], "cpu", size, s.batch_size,
                                           clip_frames=s.fvd_clip_frames)
                pick = f"frames={s.frames_per_video}" if metric in FRAME_METRICS else f"clips={s.clips_per_video}" + (
                    f"|length={s.fvd_clip_frames}" if s.fvd_clip_frames != 16 else "")
                out[metric] = f"{extractor.fingerprint}|{pick}{sized}|v{MEASURE_VERSION}"
            elif metric == MOTION_METRIC:
                tracker = load_tracker(s.tracker)
                weights = path_digest(s.tracker) if os.path.exists(s.tracker) else ""
                out[metric] = (f"{tracker.name}|{weights}|cells={s.fvmd_cells}|clips={s.clips_per_video}{sized}"
                               f"|v{MEASURE_VERSION}")
            elif metric == "iou":
                from gaia2.evaluation.agent_iou import load_segmenter

                load_segmenter(s.networks["iou"], "cpu")
                out[metric] = f"{path_digest(s.networks['iou'])}|v{MEASURE_VERSION}"
            elif metric == "action":
                out[metric] = f"ego-motion|v{MEASURE_VERSION}"
        return out

    # ---------------------------------------------------------------------------------------------- run
    def run(self) -> dict:
        from jobs.evaluate_promote import holder_candidate
        from jobs.evaluate_report import compute_metrics, track
        from jobs.runtime import init_ray

        started = time.perf_counter()
        job, cfg = self.job, self.cfg
        items = self.samples()
        keys = [i.name for i in items]
        name = job.name or self._name()
        # An object-storage output is written here first and copied there at the end (``publish``).
        target = job.out if job.out and storage.is_uri(job.out) else None
        out = os.path.abspath(job.out if job.out and not target else os.path.join(job.workdir, "evaluations", name))
        os.makedirs(out, exist_ok=True)
        settings = self.settings()
        fingerprints = self.fingerprints(settings)
        dataset = dataset_fingerprint(job.shards, job.split)
        protocol = protocol_digest({"dataset": dataset, "split": job.split, "keys": keys, "mode": job.mode,
                                    "steps": job.sampler_steps, "seed": job.seed, "context": job.context_steps,
                                    "tau_start": job.tau_start, "measurements": fingerprints,
                                    "bootstrap": cfg.bootstrap, "level": cfg.level,
                                    "loss_samples": job.loss_samples or job.samples})
        candidates = self.candidates(out)
        holder = holder_candidate(job, candidates[0], protocol) if job.promote else None
        if holder is not None and holder.candidate is not None:
            candidates.append(holder.candidate)
        say(f"{len(keys)} samples of {job.split!r} ({job.mode}, {job.sampler_steps} steps), metrics "
            f"{', '.join(self.metrics)}; {len(candidates)} model(s): {', '.join(c.tag for c in candidates)} -> {out}"
            + (f" (then copied to {storage.redact(target)})" if target else ""))
        init_ray()
        failures: list[dict] = []
        models = {}
        for cand in candidates:   # the loss alone needs no generation
            models[cand.tag] = self.generate(cand, items if self.measured else [], out, failures)
        cache_root = os.path.abspath(job.cache or os.path.join(job.workdir, "feature-cache"))
        caches = {m: FeatureCache(cache_root, dataset, m, fp) for m, fp in fingerprints.items()}
        digest = hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()[:12]
        fake_dirs = {c.tag: os.path.join(out, "measurements", c.tag, digest) for c in candidates}
        measured = self.measure(settings, keys, candidates, out, caches, fake_dirs, failures) if self.measured \
            else {}
        losses = {}
        if "loss" in self.metrics:
            for cand in candidates:
                losses[cand.tag] = self.loss(models[cand.tag].world_model, out, cand.tag)
        results = []
        cameras: set[str] = set()   # the cameras measured, for the protocol record
        for cand in candidates:
            fake = {k: _read(os.path.join(fake_dirs[cand.tag], f"{k}.npz")) for k in keys}
            cameras.update(str(c) for v in fake.values() if v is not None for c in v["cameras"])
            if self.measured and not any(v is not None for v in fake.values()):
                first = next((f for f in failures if f["model"] == cand.tag), None)
                raise EvaluationError(
                    f"{cand.tag}: none of the {len(keys)} samples could be generated and measured"
                    + (f" ({sum(f['model'] == cand.tag for f in failures)} failures; first, {first['key']} at "
                       f"{first['stage']}: {first['detail']})" if first else ""))
            real = {m: {k: caches[m].get(k) for k in keys} for m in caches}
            metrics, counts = compute_metrics(self.metrics, keys, real, fake, losses.get(cand.tag), cfg)
            step = cand.step if cand.step is not None else recorded_step(models[cand.tag].world_model)
            results.append({"tag": cand.tag, "role": cand.role, "world_model": cand.world_model, "step": step,
                            "checkpoint": cand.source, "models": models[cand.tag].record, "metrics": metrics,
                            "counts": counts})
        report = {"name": name, "out": storage.redact(target) if target else out,
                  "protocol": protocol_record(cfg, protocol, len(keys), sorted(cameras)),
                  "dataset": dataset, "split": job.split,
                  "mode": job.mode, "metrics_asked": self.metrics, "metric_names": metric_names(self.metrics),
                  "tracker": settings.tracker, "fingerprints": fingerprints, "candidates": results,
                  "counts": {"samples": len(keys), "failures": len(failures), **measured}, "failures": failures,
                  "level": cfg.level, "bootstrap": cfg.bootstrap,
                  "settings": asdict(settings)}
        if target:
            report["working_copy"] = out
        report = track(report, cfg, out, holder, run_file_in=target or out)
        report["seconds"] = round(time.perf_counter() - started, 1)
        _write_json(os.path.join(out, REPORT_FILE), report)
        if target:
            n = publish(out, target)
            say(f"copied {n} files to {storage.redact(target)}")
        return report

    def _name(self) -> str:
        job = self.job
        base = os.path.basename(job.checkpoints.split(",")[0].rstrip("/")) if job.checkpoints else tag_for(
            job.world_model.replace("@", "-at-"))
        return f"{base}-{job.mode}"[:100]

    # ------------------------------------------------------------------------------------------ generate
    def generate(self, cand: Candidate, items: list, out: str, failures: list[dict]):
        """Regenerate every sample with ``cand`` into ``<out>/generations/<tag>/`` (those already there skipped);
        returns its resolved models."""
        from jobs.generate import GenerateConfig, GenerateJob, _generate, model_refs, resolve_models
        from jobs.generate_batch import clear_partial, is_done

        g, job = self.cfg.generation, self.job
        gen_dir = os.path.join(out, "generations", cand.tag)
        os.makedirs(gen_dir, exist_ok=True)
        gcfg = GenerateConfig(preset=self.cfg.preset, device=g.device, precision=g.precision, batch_size=g.batch_size,
                              concurrency=g.concurrency, num_gpus=g.num_gpus, num_cpus=g.num_cpus,
                              job=GenerateJob(from_shards=job.latents, world_model=cand.world_model,
                                              tokenizer=job.tokenizer, workdir=job.workdir, out=gen_dir))
        refs = model_refs(gcfg.job, g.precision)
        models = resolve_models(refs, job.workdir, os.path.join(out, "_models", cand.tag))
        clear_partial(gen_dir)
        todo = [i for i in items if not is_done(gen_dir, i)]
        if todo:
            say(f"{cand.tag}: generating {len(todo)} samples ({len(items) - len(todo)} already done)")
            t0 = time.perf_counter()
            for row in _generate(gcfg, todo, models, gen_dir):
                if row["status"] != "generated":
                    failures.append({"model": cand.tag, "key": str(row["name"]), "stage": str(row["reject_stage"]),
                                     "detail": f"{row['reject_reason']}: {row['reject_detail']}"})
            say(f"{cand.tag}: generated in {time.perf_counter() - t0:.1f} s")
        return models

    # ------------------------------------------------------------------------------------------- measure
    def measure(self, settings: Settings, keys: list[str], candidates: list[Candidate], out: str,
                caches: dict[str, FeatureCache], fake_dirs: dict[str, str], failures: list[dict]) -> dict[str, int]:
        """Measure every real video some measurement of the cache lacks, and every generation not yet measured,
        in one pass of the actor pool; results are written as they stream in."""
        import ray

        from pipelines.evaluation.measure import MeasureVideos

        rows = []
        for key in keys:
            missing = [m for m in self.measured if not caches[m].has(key)]
            if missing:
                rows.append({"key": key, "side": "real", "tag": "real", "folder": "", "cameras": "",
                             "wants": ",".join(missing)})
        reused = len(keys) - len(rows)
        for cand in candidates:
            for key in keys:
                folder = os.path.join(out, "generations", cand.tag, key)
                have = _read(os.path.join(fake_dirs[cand.tag], f"{key}.npz"))
                if not os.path.isfile(os.path.join(folder, "spec.json")):
                    continue   # its generation failed (a failure row says why)
                if have is not None and all(_has(have, m) for m in self.measured):
                    continue
                rows.append({"key": key, "side": "fake", "tag": cand.tag, "folder": folder, "cameras": "",
                             "wants": ",".join(self.measured)})
        say(f"measuring {len(rows)} videos ({sum(r['side'] == 'real' for r in rows)} real; {reused} real videos' "
            f"measurements reused from the cache)")
        counts = {"real_measured": sum(r["side"] == "real" for r in rows), "real_reused": reused,
                  "fake_measured": sum(r["side"] == "fake" for r in rows)}
        if not rows:
            return counts
        m = self.cfg.measure
        blocks = max(1, math.ceil(len(rows) / m.rows_per_call))
        device = "cuda" if m.num_gpus > 0 else "cpu"
        ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            MeasureVideos, fn_constructor_kwargs={
                "settings": settings.to_json(), "shards": storage.absolute(self.job.shards),
                "latents": storage.absolute(self.job.latents), "split": self.job.split, "device": device,
                "num_threads": max(1, int(m.num_cpus))},
            batch_size=m.rows_per_call, compute=ray.data.ActorPoolStrategy(size=min(m.concurrency, blocks)),
            num_cpus=m.num_cpus, num_gpus=m.num_gpus)
        t0 = time.perf_counter()
        done = 0
        for row in ds.iter_rows():
            key, side, tag = str(row["key"]), str(row["side"]), str(row["tag"])
            if row["status"] != "ok":
                failures.append({"model": tag, "key": key, "stage": f"measure {side}", "detail": str(row["detail"])})
                continue
            arrays = unpack(row["result"])
            if side == "real":
                for metric in self.measured:
                    part = _part(arrays, metric)
                    if part is not None:
                        caches[metric].put(key, part)
            else:
                os.makedirs(fake_dirs[tag], exist_ok=True)
                _write_bytes(os.path.join(fake_dirs[tag], f"{key}.npz"), pack(arrays))
            done += 1
        say(f"measured {done} videos in {time.perf_counter() - t0:.1f} s")
        return counts

    # ---------------------------------------------------------------------------------------------- loss
    def loss(self, model_dir: str, out: str, tag: str) -> dict:
        """The validation flow loss of the world model in ``model_dir`` on the latent split (a Ray task with the
        measuring actors' resources); kept in ``measurements/<tag>/loss.json`` for a rerun."""
        import ray

        n = self.job.loss_samples or self.job.samples
        path = os.path.join(out, "measurements", tag, f"loss-{self.job.split}-{n}-{self.job.seed}.json")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
        m = self.cfg.measure
        task = ray.remote(num_cpus=m.num_cpus, num_gpus=m.num_gpus)(validation_loss_task)
        t0 = time.perf_counter()
        result = ray.get(task.remote(model_dir, storage.absolute(self.job.latents), self.job.split,
                                     self.job.loss_samples or self.job.samples, self.job.seed, "cuda" if m.num_gpus > 0 else "cpu",
                                     max(1, int(m.num_cpus))))
        say(f"{tag}: validation loss {result['val_loss']:.4f} on {int(result['samples'])} samples in "
            f"{time.perf_counter() - t0:.1f} s")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_json(path, result)
        return result


def validation_loss_task(model_dir: str, latents: str, split: str, max_samples: int | None, seed: int, device: str,
                         num_threads: int, task: str | None = None, batch_size: int = 4) -> dict:
    """The flow loss of the exported world model in ``model_dir`` on ``split`` of latent shards ``latents``: the
    training objective with no dropout, tau (and the task, unless ``task`` fixes it) drawn with ``seed`` in one
    fixed order of samples and batches, so every model sees the same draws. The tau and task distributions are
    the paper's (every preset trains with them); the latent statistics are the export's own."""
    import torch

    from gaia2.evaluation.flow_loss import validation_loss
    from gaia2.export import read_meta
    from gaia2.world_model.export import FORMAT, load_world_model
    from gaia2.world_model.train_config import paper_flow
    from pipelines.evaluation.samples import ShardIndex
    from pipelines.world_model.train_data import MEMBERS, to_samples

    if device == "cpu":
        torch.set_num_threads(num_threads)
    model = load_world_model(model_dir, device)
    meta = read_meta(model_dir, FORMAT)
    index = ShardIndex(latents, split)
    keys = index.keys()[:max_samples]
    cfg = model.cfg

    def batches():
        for start in range(0, len(keys), batch_size):
            raw = [index.members(k, MEMBERS) for k in keys[start:start + batch_size]]
            rows = {m: np.asarray([r[m] for r in raw], dtype=object) for m in MEMBERS}
            arrays = to_samples(rows, cfg.cameras, cfg.conditioning.max_agents)
            yield {k: torch.as_tensor(v) for k, v in arrays.items()}

    flow = paper_flow().model_copy(update={"latent_mean": meta["latent_mean"], "latent_std": meta["latent_std"]})
    return validation_loss(model, batches(), flow, seed=seed, device=device, task=task)


def publish(local: str, target: str) -> int:
    """Copy the evaluation's output ``local`` to ``target`` (an object-storage URI), but ``_models/`` (model
    downloads and exported checkpoints, which the registry and the run's checkpoints hold) and temporary files;
    ``evaluation.json`` last, so a reader that finds it finds everything it names. Returns the files copied."""
    files = [rel for rel in storage.list_files(local) if not rel.startswith("_models/")
             and not rel.endswith((".partial", storage.PARTIAL)) and rel != REPORT_FILE]
    for rel in [*files, REPORT_FILE]:
        storage.upload_file(os.path.join(local, rel), storage.join(target, rel))
    return len(files) + 1


def _part(arrays: dict[str, np.ndarray], metric: str) -> dict[str, np.ndarray] | None:
    """The arrays of one measurement out of a video's measurements."""
    names = {"iou": ("iou.inter", "iou.union"), "action": ("motion", "command")}.get(metric, (metric,
                                                                                                f"{metric}.camera"))
    if not all(n in arrays for n in names):
        return None
    return {"cameras": arrays["cameras"], **{n: arrays[n] for n in names}}


def _has(arrays: dict[str, np.ndarray], metric: str) -> bool:
    return _part(arrays, metric) is not None


def _read(path: str) -> dict[str, np.ndarray] | None:
    try:
        with open(path, "rb") as f:
            return unpack(f.read())
    except (OSError, ValueError):
        return None


def _write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_json(path: str, value: dict) -> None:
    _write_bytes(path, json.dumps(value, indent=1, sort_keys=True, default=_plain).encode())


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

