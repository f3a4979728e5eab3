"""Ray job: build balanced, geofenced WebDataset shards from a clip source.

    python -m jobs.build_shards --source CLIPS --out SHARDS [--config FILE] [--preset tiny] [--seed S]
    ray job submit --working-dir . -- python -m jobs.build_shards --source s3://... --out s3://...

Each build is one MLflow run (experiment ``shards``); re-running onto the same output resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from gaia2.config.base import ConfigError
from gaia2.config.shards import ShardBuildConfig, load_shard_config

EXPERIMENT = "shards"
RUN_FILE = "mlflow_run.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="clip directory (<root>/<clip_id>/clip.json) or .parquet manifest")
    p.add_argument("--out", required=True, help="output directory for shards, manifest, rejects, report")
    p.add_argument("--config", help="YAML overrides on top of the preset (may name its own `preset:`)")
    p.add_argument("--preset", help="config preset: tiny (default) or paper")
    p.add_argument("--seed", type=int, help="selection seed (balancing draws)")
    p.add_argument("--clip-path", help="local CLIP vision model directory (overrides embedding.clip_path)")
    p.add_argument("--workdir", default=os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                   help="where the local MLflow database and artifacts live (default: ./gaia2-work)")


def resolve_config(args: argparse.Namespace) -> ShardBuildConfig:
    overrides: dict = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.clip_path:
        overrides.setdefault("embedding", {})["clip_path"] = args.clip_path
    cfg = load_shard_config(preset=args.preset, path=args.config, overrides=overrides)
    if not cfg.embedding.clip_path:
        raise ConfigError("embedding.clip_path: required (a local directory with a transformers CLIP vision "
                          "model); pass --clip-path or set it in --config")
    if not os.path.isdir(cfg.embedding.clip_path):
        raise ConfigError(f"embedding.clip_path: {cfg.embedding.clip_path!r} is not a directory")
    if cfg.detection.kind == "network" and not os.path.isdir(cfg.detection.checkpoint or ""):
        raise ConfigError(f"detection.checkpoint: {cfg.detection.checkpoint!r} is not a directory")
    return cfg


def run(source: str, out: str, cfg: ShardBuildConfig, workdir: str):
    """Build with tracking; returns (BuildResult, MLflow run id)."""
    import mlflow

    from jobs.runtime import init_ray
    from jobs.tracking import log_config, mlflow_run
    from pipelines.shards.build import build_shards

    run_file = os.path.join(out, RUN_FILE)
    previous = None
    if os.path.exists(run_file):
        with open(run_file) as f:
            previous = json.load(f).get("run_id")
    init_ray()
    with mlflow_run(EXPERIMENT, workdir, run_name=f"shards-{os.path.basename(os.path.abspath(out))}",
                    run_id=previous) as active:
        os.makedirs(out, exist_ok=True)
        with open(run_file, "w") as f:
            json.dump({"run_id": active.info.run_id}, f)
        if previous is None:
            log_config(cfg.model_dump())
            mlflow.log_params({"source": source, "out": os.path.abspath(out)})
        result = build_shards(source, out, cfg)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.build_shards", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return execute(args)


def execute(args: argparse.Namespace) -> int:
    from pipelines.shards.build import OutputConflict
    from pipelines.shards.sources import SourceError

    try:
        cfg = resolve_config(args)
        result, run_id = run(args.source, args.out, cfg, args.workdir)
    except (ConfigError, SourceError, OutputConflict) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(result, run_id, args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
