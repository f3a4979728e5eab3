"""Ray job: build balanced, geofenced WebDataset shards from a clip source.

    python -m jobs.build_shards --source CLIPS --out SHARDS [--preset tiny|paper] [--config FILE] [--set a.b=value ...]
    ray job submit --working-dir . -- python -m jobs.build_shards --source s3://... --out s3://...

Each build is one MLflow run (experiment ``shards``); re-running onto the same output resumes it. Exit 2
with ``error: ...`` for bad input or configuration, an output another build holds, or a finished build that
fails its gate (``--max-reject-fraction``, ``--min-samples``; everything written is kept).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from pydantic import Field

from gaia2.config.base import ConfigError, StrictModel, build_config
from gaia2.config.shards import PRESETS, ShardBuildConfig
from jobs.options import Alias, Command

EXPERIMENT = "shards"


class BuildJob(StrictModel):
    source: str | None = Field(None, description="clip directory (<root>/<clip_id>/clip.json), .parquet manifest "
                                                 "(a local path or an s3:// / gs:// URI), or a nuScenes dataset "
                                                 "(nuscenes:///<root>?version=v1.0-trainval, nuscenes+s3://...)")
    out: str | None = Field(None, description="output directory for shards, manifest, rejects, report; a local "
                                              "path or an s3:// / gs:// URI")
    workdir: str = Field(default_factory=lambda: os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                         description="local MLflow database and artifacts")


class BuildShardsConfig(ShardBuildConfig):
    """The shard build's config (``gaia2.config.shards``) plus where it reads and writes (``job``)."""
    job: BuildJob = Field(default_factory=BuildJob)

    def build(self) -> ShardBuildConfig:
        """What the pipeline builds with (and fingerprints for resume): everything but ``job``."""
        return ShardBuildConfig.model_validate(self.model_dump(exclude={"job"}))


def load_config(preset: str | None = None, path: str | None = None, overrides: dict | None = None
                ) -> BuildShardsConfig:
    presets = {name: (lambda fn=fn: BuildShardsConfig.model_validate(fn().model_dump())) for name, fn in PRESETS.items()}
    cfg = build_config(BuildShardsConfig, presets, preset=preset, overrides=overrides, path=path)
    for field in ("source", "out"):
        if not getattr(cfg.job, field):
            raise ConfigError(f"job.{field}: required (pass --{field})")
    if not cfg.embedding.clip_path:
        raise ConfigError("embedding.clip_path: required (a local directory with a transformers CLIP vision "
                          "model); pass --clip-path or set it in --config")
    if not os.path.isdir(cfg.embedding.clip_path):
        raise ConfigError(f"embedding.clip_path: {cfg.embedding.clip_path!r} is not a directory")
    if cfg.detection.kind == "network" and not os.path.isdir(cfg.detection.checkpoint or ""):
        raise ConfigError(f"detection.checkpoint: {cfg.detection.checkpoint!r} is not a directory")
    return cfg


ARTIFACTS = ("report.json", "config.yaml", "geofences.geojson", "manifest.parquet", "rejects.parquet")


def _log_outputs(out: str, result) -> None:
    """The build's report, config, manifest, rejects and plots as run artifacts (fetched first from object storage)."""
    import tempfile

    import mlflow

    from gaia2 import storage

    with tempfile.TemporaryDirectory(prefix="gaia2-build-artifacts-") as tmp:
        for name in ARTIFACTS:
            local = os.path.join(tmp, name)
            with open(local, "wb") as f:
                f.write(storage.read_bytes(storage.join(out, name)))
            mlflow.log_artifact(local, artifact_path="build")
        os.makedirs(os.path.join(tmp, "plots"))
        for plot in result.report.get("plots", []):
            local = os.path.join(tmp, "plots", storage.basename(plot))
            with open(local, "wb") as f:
                f.write(storage.read_bytes(plot))
            mlflow.log_artifact(local, artifact_path="build/plots")


def run(cfg: BuildShardsConfig):
    """Build with tracking; returns (BuildResult, MLflow run id). A build that fails its gate is still logged,
    then raises ``BuildFailed`` with its summary."""
    import mlflow

    from gaia2 import storage
    from jobs.runtime import init_ray
    from jobs.tracking import log_config, log_params, output_run
    from pipelines.shards.build import BuildFailed, build_shards

    source, out, workdir = cfg.job.source, storage.absolute(cfg.job.out), cfg.job.workdir
    build = cfg.build()
    init_ray()
    with output_run(EXPERIMENT, workdir, out) as (active, new):
        if new:
            log_config(build.model_dump())
            log_params({"source": source, "out": out})   # redacted, retried
        try:
            result, failed = build_shards(source, out, build), None
        except BuildFailed as err:
            result, failed = err.result, err
        report = result.report
        metrics = {f"count.{k}": v for k, v in report["accounting"].items()}
        metrics.update({f"split.{k}": v for k, v in report["splits"].items()})
        metrics.update({f"reject_fraction.{k}": v for k, v in report["gate"]["reject_fraction"].items()})
        for split, stats in report["balance"].items():
            metrics[f"{split}.entropy_before"] = stats["entropy_before"]
            metrics[f"{split}.entropy_after"] = stats["entropy_after"]
        metrics.update({f"timing.{k}": v for k, v in report["timings"].items()})
        metrics["seconds"] = result.seconds
        metrics["clips_per_s"] = report["accounting"]["clips_in"] / max(result.seconds, 1e-9)
        mlflow.log_metrics(metrics)
        _log_outputs(out, result)
        mlflow.set_tags({"fingerprint": result.fingerprint, "gate": "failed" if failed else "passed"})
        if failed:
            print(summary(result, active.info.run_id, workdir))
            raise failed
        return result, active.info.run_id


def summary(result, run_id: str, workdir: str) -> str:
    from gaia2.storage import redact
    from jobs.tracking import tracking_uri

    acc, rep = result.report["accounting"], result.report
    return "\n".join([
        f"shards:   {redact(result.out_dir)}/{{train,val}}/shard-*.tar ({rep['shards']['count']} shards; "
        f"train {rep['splits']['train']}, val {rep['splits']['val']} samples)",
        f"manifest: {redact(result.out_dir)}/manifest.parquet   rejects: {redact(result.out_dir)}/rejects.parquet",
        f"report:   {redact(result.out_dir)}/report.json, plots in {redact(result.out_dir)}/plots/",
        f"gate:     {'FAILED: ' + '; '.join(rep['gate']['failures']) if rep['gate']['failures'] else 'passed'} "
        f"(rejected: {rep['gate']['reject_fraction']['clips']:.1%} of clips, "
        f"{rep['gate']['reject_fraction']['windows']:.1%} of selected windows)",
        f"counts:   {acc['clips_in']} clips in, {acc['clips_rejected']} rejected; {acc['windows_cut']} windows cut, "
        f"{acc['windows_written']} written, {acc['windows_not_selected']} not selected, {acc['windows_failed']} failed",
        f"mlflow:   run {run_id} in experiment '{EXPERIMENT}' at {redact(tracking_uri(workdir))}",
    ])


def _work(cfg: BuildShardsConfig) -> str:
    result, run_id = run(cfg)
    return summary(result, run_id, cfg.job.workdir)


def _input_errors() -> tuple[type[Exception], ...]:
    from gaia2.storage import StorageError
    from pipelines.shards.build import BuildFailed, OutputConflict, OutputLocked
    from pipelines.shards.sources import SourceError

    return SourceError, OutputConflict, OutputLocked, BuildFailed, StorageError


COMMAND = Command(
    prog="python -m jobs.build_shards", description=__doc__.splitlines()[0],
    aliases=(Alias("--source", "job.source", "clip directory, .parquet manifest or nuscenes:///<root>?version=..."),
             Alias("--out", "job.out", "output directory"),
             Alias("--workdir", "job.workdir", "local MLflow database and artifacts"),
             Alias("--seed", "seed", "selection seed (balancing draws)", int),
             Alias("--clip-path", "embedding.clip_path", "local CLIP vision model directory"),
             Alias("--max-reject-fraction", "gate.max_reject_fraction",
                   "fail (exit 2, output kept) when a larger share of clips or selected windows is rejected", float),
             Alias("--min-samples", "gate.min_samples", "fail (exit 2, output kept) when fewer samples are written",
                   int)),
    presets=tuple(PRESETS), build=load_config, work=_work, input_errors=_input_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
