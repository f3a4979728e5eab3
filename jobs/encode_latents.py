"""Ray job: encode a shard build's videos into latent shards with a trained tokenizer (world-model input).

    python -m jobs.encode_latents --shards SHARDS --tokenizer TOKENIZER --out LATENTS [--mode sample|mean]
        [--preset tiny|paper] [--config FILE] [--set a.b=value ...]
    ray job submit --working-dir . -- python -m jobs.encode_latents --shards /mnt/shards \\
        --tokenizer /models/tokenizer --out /mnt/latents --num-gpus 1 --concurrency 8

Each job is one MLflow run (experiment ``latents``); re-running onto the same output resumes it. The job
measures the per-channel mean and std of the train split's latents (``LATENTS/latent_stats.json``); given the
tokenizer as a registered model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) it also records them on
that version (``jobs.registry.record_latent_stats``).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from pydantic import Field

from gaia2 import storage
from gaia2.config.base import ConfigError, StrictModel, build_config
from gaia2.flow.stats import STATS_FILE, LatentStatsError
from jobs.options import Alias, Command
from pipelines.tokenizer.latents_config import LatentConfig, LatentInputError

EXPERIMENT = "latents"


class EncodeJob(StrictModel):
    shards: str | None = Field(None, description="a shard build directory (train/, val/, manifest.parquet)")
    tokenizer: str | None = Field(None, description="tokenizer export directory, or an MLflow model URI such as "
                                                    "models:/gaia2-tokenizer-tiny@candidate")
    out: str | None = Field(None, description="output directory for the latent shards, manifest, rejects, report")
    workdir: str = Field(default_factory=lambda: os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                         description="local MLflow database and artifacts")


class EncodeLatentsConfig(LatentConfig):
    """How latents are encoded (``LatentConfig``) plus what is read and written (``job``)."""
    preset: str = "tiny"
    job: EncodeJob = Field(default_factory=EncodeJob)

    def encoding(self) -> LatentConfig:
        return LatentConfig.model_validate(self.model_dump(exclude={"job", "preset"}))


def tiny() -> EncodeLatentsConfig:
    """One encoder actor on the CPU."""
    return EncodeLatentsConfig(preset="tiny")


def paper() -> EncodeLatentsConfig:
    """Eight encoder actors of one GPU each (the paper tokenizer at 448 x 960)."""
    return EncodeLatentsConfig(preset="paper", batch_size=8, num_gpus=1, num_cpus=4, concurrency=8)


PRESETS = {"tiny": tiny, "paper": paper}


def load_config(preset: str | None = None, path: str | None = None, overrides: dict | None = None
                ) -> EncodeLatentsConfig:
    cfg = build_config(EncodeLatentsConfig, PRESETS, preset=preset, overrides=overrides, path=path)
    for field in ("shards", "tokenizer", "out"):
        if not getattr(cfg.job, field):
            raise ConfigError(f"job.{field}: required (pass --{field})")
    return cfg


def resolve_tokenizer(uri: str, workdir: str, download_to: str | None = None) -> str:
    """A tokenizer reference (a directory, ``file://``, ``models:/`` or ``runs:/`` URI) -> a local directory
    (``jobs.registry.resolve_model``); raises ``LatentInputError``."""
    from jobs.registry import ModelInputError, resolve_model

    try:
        return resolve_model(uri, workdir, "tokenizer", download_to)
    except ModelInputError as err:
        raise LatentInputError(str(err)) from None


def registered_version(uri: str, workdir: str) -> str | None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> "models:/NAME/VERSION", the version the alias names
    now (``jobs.registry.registered_version``); None for a directory or ``runs:/`` URI. Raises
    ``LatentInputError`` if the registry has no such version."""
    from jobs.registry import ModelInputError
    from jobs.registry import registered_version as version_of

    try:
        return version_of(uri, workdir, "tokenizer")
    except ModelInputError as err:
        raise LatentInputError(str(err)) from None


def log_stats(stats, out_dir: str) -> None:
    """The latent statistics in the active MLflow run: their range as metrics, the file as an artifact."""
    import mlflow

    mlflow.log_metrics({"latent_mean_min": min(stats.mean), "latent_mean_max": max(stats.mean),
                        "latent_std_min": min(stats.std), "latent_std_max": max(stats.std),
                        "latent_stats_count": stats.count})
    log_output_file(out_dir, STATS_FILE, "latents")


def log_output_file(out_dir: str, name: str, artifact_path: str) -> None:
    """``out_dir/name`` (a local path or an object-storage URI) as an artifact of the active run."""
    import tempfile

    import mlflow


    if not storage.is_uri(out_dir):
        mlflow.log_artifact(os.path.join(out_dir, name), artifact_path=artifact_path)
        return
    with tempfile.TemporaryDirectory(prefix="gaia2-artifact-") as tmp:
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(storage.read_bytes(storage.join(out_dir, name)))
        mlflow.log_artifact(os.path.join(tmp, name), artifact_path=artifact_path)


def run(cfg: EncodeLatentsConfig):
    """Resolve the tokenizer, check the inputs, then encode with tracking; returns (LatentResult, MLflow run id).
    The result's ``stats_version`` says which registered version the latent statistics were recorded on."""
    import mlflow

    from jobs.registry import record_latent_stats
    from jobs.runtime import init_ray
    from jobs.tracking import log_config, output_run
    from pipelines.tokenizer.latents import check_inputs, check_output, encode_latents

    job, encoding = cfg.job, cfg.encoding()
    version = registered_version(job.tokenizer, job.workdir)
    # A registered tokenizer is fetched next to the output, or into the workdir when the output is on object storage.
    local_out = (os.path.join(os.path.abspath(job.workdir), "latents-tokenizer", storage.basename(job.out))
                 if storage.is_uri(job.out) else os.path.abspath(job.out))
    tokenizer_dir = resolve_tokenizer(version or job.tokenizer, job.workdir,
                                      download_to=os.path.join(local_out, "_tokenizer"))
    # Bad input fails here, before Ray starts or an MLflow run is opened.
    inputs = check_inputs(job.shards, tokenizer_dir)
    check_output(job.out, inputs, encoding)
    init_ray()
    with output_run(EXPERIMENT, job.workdir, job.out) as (active, new):
        if new:
            mlflow.log_params({"shards": storage.redact(inputs.shards_dir), "tokenizer_dir": tokenizer_dir,
                               "out": storage.redact(storage.absolute(job.out)), **encoding.model_dump()})
            log_config({"tokenizer": inputs.tokenizer.model_dump(mode="json")})
            mlflow.set_tags({"tokenizer_sha256": inputs.tokenizer_sha256, "tokenizer": job.tokenizer})
        result = encode_latents(job.shards, tokenizer_dir, job.out, encoding)
        report = result.report
        metrics = {f"count.{k}": v for k, v in report["counts"].items()}
        for split, counts in report["splits"].items():
            metrics.update({f"{split}.{k}": v for k, v in counts.items()})
        metrics.update({"shards": report["shards"]["count"], "shards_skipped": report["shards"]["skipped_complete"],
                        "seconds": result.seconds, "samples_per_s": report["samples_per_s"]})
        mlflow.log_metrics(metrics)
        for name in ("latents.json", "rejects.parquet"):
            log_output_file(result.out_dir, name, "latents")
        if result.stats is None:   # no latents written (every sample rejected): nothing to measure
            return result, active.info.run_id
        log_stats(result.stats, result.out_dir)
        if version:
            result.stats_version = record_latent_stats(version, result.stats)
            mlflow.set_tag("latent_stats_version", result.stats_version)
        return result, active.info.run_id


def stats_line(stats, out_dir: str, version: str | None, tokenizer: str | None = None) -> str:
    """One line: the statistics, their file, and whether they were also recorded on a registered version."""
    if stats is None:
        return "none: no latents were written (see the rejects)"
    if version:
        where = f", and on {version} (tags gaia2.latent_*)"
    elif tokenizer:
        where = (f"; tokenizer {tokenizer} is not a registered model version (models:/NAME@ALIAS or "
                 f"models:/NAME/VERSION): the stats are stored with the latent shards only")
    else:
        where = "; no --tokenizer given: the stats are stored with the latent shards only"

    return f"{stats.summary()}; {stats.source} -> {storage.redact(storage.join(out_dir, STATS_FILE))}{where}"


def summary(result, run_id: str, workdir: str) -> str:
    from jobs.tracking import tracking_uri

    rep, out = result.report, storage.redact(result.out_dir)
    c = rep["counts"]
    shapes = ", ".join(f"{shape} ({n})" for shape, n in rep["latent_shapes"].items())
    return "\n".join([
        f"latents:  {out}/{{train,val}}/shard-*.tar ({rep['shards']['count']} shards, "
        f"{rep['shards']['skipped_complete']} already complete; train {rep['splits']['train']['written']}, "
        f"val {rep['splits']['val']['written']} samples)",
        f"shapes:   {shapes} as {rep['latent_layout']}; mode {rep['mode']}, seed {rep['seed']}",
        f"counts:   {c['samples_in']} samples in, {c['written']} written, {c['rejected']} rejected "
        f"(rejects: {out}/rejects.parquet); {c['processed_this_run']} processed in {rep['seconds']:.1f} s",
        f"stats:    {stats_line(result.stats, out, result.stats_version, rep['tokenizer']['path'])}",
        f"report:   {out}/latents.json   manifest: {out}/manifest.parquet",
        f"mlflow:   run {run_id} in experiment '{EXPERIMENT}' at {storage.redact(tracking_uri(workdir))}",
    ])


def _work(cfg: EncodeLatentsConfig) -> str:
    result, run_id = run(cfg)
    return summary(result, run_id, cfg.job.workdir)


COMMAND = Command(
    prog="python -m jobs.encode_latents", description=__doc__.splitlines()[0],
    aliases=(Alias("--shards", "job.shards", "a shard build directory"),
             Alias("--tokenizer", "job.tokenizer", "tokenizer export directory or MLflow model URI"),
             Alias("--out", "job.out", "output directory"),
             Alias("--workdir", "job.workdir", "local MLflow database and artifacts"),
             Alias("--mode", "mode", "sample (mean + std * eps, seeded per sample) or mean"),
             Alias("--seed", "seed", "noise seed of the sample mode", int),
             Alias("--batch-size", "batch_size", "samples per encoder actor call", int),
             Alias("--num-gpus", "num_gpus", "GPUs per encoder actor", float),
             Alias("--num-cpus", "num_cpus", "CPUs per encoder actor", float),
             Alias("--concurrency", "concurrency", "encoder actors", int)),
    presets=tuple(PRESETS), build=load_config, work=_work, input_errors=(LatentInputError, LatentStatsError))


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
