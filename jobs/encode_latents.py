"""Ray job: encode a shard build's videos into latent shards with a trained tokenizer (world-model input).

    python -m jobs.encode_latents --shards SHARDS --tokenizer TOKENIZER --out LATENTS [--mode sample|mean] [--seed S]
    ray job submit --working-dir . -- python -m jobs.encode_latents --shards /mnt/shards \\
        --tokenizer /models/tokenizer --out /mnt/latents --num-gpus 1 --concurrency 8

Each job is one MLflow run (experiment ``latents``); re-running onto the same output resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence
from urllib.parse import urlparse

from gaia2.config.base import ConfigError

EXPERIMENT = "latents"
RUN_FILE = "mlflow_run.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", required=True, help="a shard build directory (train/, val/, manifest.parquet)")
    p.add_argument("--tokenizer", required=True,
                   help="tokenizer directory written by save_tokenizer, or an MLflow model URI such as "
                        "models:/gaia2-tokenizer-tiny@candidate (registered by `gaia2 train tokenizer`)")
    p.add_argument("--out", required=True, help="output directory for the latent shards, manifest, rejects, report")
    p.add_argument("--mode", choices=("sample", "mean"),
                   help="sample (default): mean + exp(log_std) * eps, seeded per sample; mean: the posterior mean")
    p.add_argument("--seed", type=int, help="noise seed of the sample mode (default 0)")
    p.add_argument("--batch-size", type=int, help="samples per encoder actor call (default 4)")
    p.add_argument("--num-gpus", type=float, help="GPUs per encoder actor (default 0: encode on the CPU)")
    p.add_argument("--num-cpus", type=float, help="CPUs per encoder actor (default 0.5)")
    p.add_argument("--concurrency", type=int, help="encoder actors (default 1)")
    p.add_argument("--workdir", default=os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                   help="where the local MLflow database and artifacts live (default: ./gaia2-work)")


def resolve_config(args: argparse.Namespace):
    """The flags given -> ``LatentConfig`` (defaults for the rest); ``ConfigError`` names a bad field."""
    from pipelines.tokenizer.latents import latent_config

    given = {"mode": args.mode, "seed": args.seed, "batch_size": args.batch_size, "num_gpus": args.num_gpus,
             "num_cpus": args.num_cpus, "concurrency": args.concurrency}
    return latent_config(**{k: v for k, v in given.items() if v is not None})


def resolve_tokenizer(uri: str, workdir: str, download_to: str | None = None) -> str:
    """A tokenizer reference -> a local directory to load it from: a local path, a ``file://`` URI, or an
    MLflow model URI (``models:/gaia2-tokenizer-tiny@candidate``, ``models:/NAME/VERSION``, ``runs:/ID/tokenizer``)
    downloaded from the tracking store of ``workdir`` (or ``MLFLOW_TRACKING_URI``) into ``download_to``
    (give a directory every node sees, e.g. under the output: the encoder actors load it from there)."""
    from pipelines.tokenizer.latents import LatentInputError

    scheme = urlparse(uri).scheme
    if scheme in ("models", "runs"):
        import mlflow

        from jobs.tokenizer_registry import resolve_tokenizer_uri
        from jobs.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri(workdir))
        try:
            return resolve_tokenizer_uri(uri, download_to)
        except mlflow.exceptions.MlflowException as err:
            raise LatentInputError(f"tokenizer {uri!r}: {str(err).splitlines()[0]}") from None
    if scheme not in ("", "file"):
        raise LatentInputError(f"tokenizer {uri!r}: {scheme}: URIs are not supported; give a local directory "
                               f"written by save_tokenizer or an MLflow models:/ or runs:/ URI")
    path = uri.removeprefix("file://")
    if not os.path.isdir(path):
        raise LatentInputError(f"tokenizer {uri!r}: not a directory (expected one written by save_tokenizer)")
    return os.path.abspath(path)


def run(args: argparse.Namespace, cfg, tokenizer_dir: str):
    """Check the inputs, then encode with tracking; returns (LatentResult, MLflow run id)."""
    import mlflow

    from jobs.runtime import init_ray
    from jobs.tracking import log_config, mlflow_run
    from pipelines.tokenizer.latents import check_inputs, check_output, encode_latents

    # Bad input fails here, before Ray starts or an MLflow run is opened.
    inputs = check_inputs(args.shards, tokenizer_dir)
    check_output(args.out, inputs, cfg)
    run_file = os.path.join(args.out, RUN_FILE)
    previous = None
    if os.path.exists(run_file):
        with open(run_file) as f:
            previous = json.load(f).get("run_id")
    init_ray()
    with mlflow_run(EXPERIMENT, args.workdir, run_name=f"latents-{os.path.basename(os.path.abspath(args.out))}",
                    run_id=previous) as active:
        os.makedirs(args.out, exist_ok=True)
        with open(run_file, "w") as f:
            json.dump({"run_id": active.info.run_id}, f)
        if previous is None:
            mlflow.log_params({"shards": inputs.shards_dir, "tokenizer_dir": tokenizer_dir,
                               "out": os.path.abspath(args.out), **cfg.model_dump()})
            log_config({"tokenizer": inputs.tokenizer.model_dump(mode="json")})
            mlflow.set_tag("tokenizer_sha256", inputs.tokenizer_sha256)
        result = encode_latents(args.shards, tokenizer_dir, args.out, cfg)
        report = result.report
        metrics = {f"count.{k}": v for k, v in report["counts"].items()}
        for split, counts in report["splits"].items():
            metrics.update({f"{split}.{k}": v for k, v in counts.items()})
        metrics.update({"shards": report["shards"]["count"], "shards_skipped": report["shards"]["skipped_complete"],
                        "seconds": result.seconds, "samples_per_s": report["samples_per_s"]})
        mlflow.log_metrics(metrics)
        for name in ("latents.json", "rejects.parquet"):
            mlflow.log_artifact(os.path.join(result.out_dir, name), artifact_path="latents")
        return result, active.info.run_id


def summary(result, run_id: str, workdir: str) -> str:
    from jobs.tracking import tracking_uri

    rep, out = result.report, result.out_dir
    c = rep["counts"]
    shapes = ", ".join(f"{shape} ({n})" for shape, n in rep["latent_shapes"].items())
    return "\n".join([
        f"latents:  {out}/{{train,val}}/shard-*.tar ({rep['shards']['count']} shards, "
        f"{rep['shards']['skipped_complete']} already complete; train {rep['splits']['train']['written']}, "
        f"val {rep['splits']['val']['written']} samples)",
        f"shapes:   {shapes} as {rep['latent_layout']}; mode {rep['mode']}, seed {rep['seed']}",
        f"counts:   {c['samples_in']} samples in, {c['written']} written, {c['rejected']} rejected "
        f"(rejects: {out}/rejects.parquet); {c['processed_this_run']} processed in {rep['seconds']:.1f} s",
        f"report:   {out}/latents.json   manifest: {out}/manifest.parquet",
        f"mlflow:   run {run_id} in experiment '{EXPERIMENT}' at {tracking_uri(workdir)}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.encode_latents", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return execute(parser.parse_args(argv))


def execute(args: argparse.Namespace) -> int:
    from pipelines.tokenizer.latents import LatentInputError

    try:
        cfg = resolve_config(args)
        tokenizer = resolve_tokenizer(args.tokenizer, args.workdir,
                                      download_to=os.path.join(os.path.abspath(args.out), "_tokenizer"))
        result, run_id = run(args, cfg, tokenizer)
    except (ConfigError, LatentInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(result, run_id, args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
