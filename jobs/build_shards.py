"""Ray job: build balanced, geofenced WebDataset shards from a clip source.

    python -m jobs.build_shards --source CLIPS --out SHARDS [--preset tiny|paper] [--config FILE] [--set a.b=value ...]
    ray job submit --working-dir . -- python -m jobs.build_shards --source s3://... --out s3://...

Each build is one MLflow run (experiment ``shards``); re-running onto the same output resumes it.
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
    source: str | None = Field(None, description="clip directory (<root>/<clip_id>/clip.json) or .parquet manifest")
    out: str | None = Field(None, description="output directory for shards, manifest, rejects, report")
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


def run(cfg: BuildShardsConfig):
    """Build with tracking; returns (BuildResult, MLflow run id)."""
    import mlflow

    from jobs.runtime import init_ray
    from jobs.tracking import log_config, output_run
    from pipelines.shards.build import build_shards

    source, out, workdir = cfg.job.source, cfg.job.out, cfg.job.workdir
    build = cfg.build()
    init_ray()
    with output_run(EXPERIMENT, workdir, out) as (active, new):
        if new:
            log_config(build.model_dump())
            mlflow.log_params({"source": source, "out": os.path.abspath(out)})
        result = build_shards(source, out, build)
        report = result.report
        metrics = {f"count.{k}": v for k, v in report["accounting"].items()}
        metrics.update({f"split.{k}": v for k, v in report["splits"].items()})
        for split, stats in report["balance"].items():
            metrics[f"{split}.entropy_before"] = stats["entropy_before"]
            metrics[f"{split}.entropy_after"] = stats["entropy_after"]
        metrics.update({f"timing.{k}": v for k, v in report["timings"].items()})
        metrics["seconds"] = result.seconds
        metrics["clips_per_s"] = report["accounting"]["clips_in"] / max(result.seconds, 1e-9)
        mlflow.log_metrics(metrics)
        for name in ("report.json", "config.yaml", "geofences.geojson", "manifest.parquet", "rejects.parquet"):
            mlflow.log_artifact(os.path.join(out, name), artifact_path="build")
        mlflow.log_artifacts(os.path.join(out, "plots"), artifact_path="build/plots")
        mlflow.set_tag("fingerprint", result.fingerprint)
        return result, active.info.run_id


def summary(result, run_id: str, workdir: str) -> str:
    from jobs.tracking import tracking_uri

    acc, rep = result.report["accounting"], result.report
    return "\n".join([
        f"shards:   {result.out_dir}/{{train,val}}/shard-*.tar ({rep['shards']['count']} shards; "
        f"train {rep['splits']['train']}, val {rep['splits']['val']} samples)",
        f"manifest: {result.out_dir}/manifest.parquet   rejects: {result.out_dir}/rejects.parquet",
        f"report:   {result.out_dir}/report.json, plots in {result.out_dir}/plots/",
        f"counts:   {acc['clips_in']} clips in, {acc['clips_rejected']} rejected; {acc['windows_cut']} windows cut, "
        f"{acc['windows_written']} written, {acc['windows_not_selected']} not selected, {acc['windows_failed']} failed",
        f"mlflow:   run {run_id} in experiment '{EXPERIMENT}' at {tracking_uri(workdir)}",
    ])


def _work(cfg: BuildShardsConfig) -> str:
    result, run_id = run(cfg)
    return summary(result, run_id, cfg.job.workdir)


def _input_errors() -> tuple[type[Exception], ...]:
    from pipelines.shards.build import OutputConflict
    from pipelines.shards.sources import SourceError

    return SourceError, OutputConflict


COMMAND = Command(
    prog="python -m jobs.build_shards", description=__doc__.splitlines()[0],
    aliases=(Alias("--source", "job.source", "clip directory or .parquet manifest"),
             Alias("--out", "job.out", "output directory"),
             Alias("--workdir", "job.workdir", "local MLflow database and artifacts"),
             Alias("--seed", "seed", "selection seed (balancing draws)", int),
             Alias("--clip-path", "embedding.clip_path", "local CLIP vision model directory")),
    presets=tuple(PRESETS), build=load_config, work=_work, input_errors=_input_errors())


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
