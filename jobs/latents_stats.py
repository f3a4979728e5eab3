"""Measure the per-channel latent mean and std of existing latent shards and store them beside the shards.

For latent shards written before ``gaia2 encode-latents`` measured them; measured the way it does (one Ray
task per shard, float64 sums merged on the driver).

    gaia2 latents stats LATENTS [--split train|val|all] [--tokenizer MODEL_URI] [--workdir W]
    python -m jobs.latents_stats LATENTS ...

Writes ``LATENTS/latent_stats.json`` (the train split's: the world model normalises with it); with
``--tokenizer models:/...`` also records the statistics on that registered version (after checking it is the
tokenizer that encoded LATENTS, when ``LATENTS/encode.json`` says which). ``--split val|all`` measures other
splits for inspection, into ``latent_stats.<split>.json``: they never replace the training statistics nor
reach the registry. Bad input is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Sequence

from gaia2.flow.stats import LatentStats, LatentStatsError, stats_file
from pipelines.tokenizer.latents_config import ENCODE_FILE, LatentInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("latents", metavar="LATENTS", help="a latent shard directory (gaia2 encode-latents --out)")
    parser.add_argument("--split", choices=("train", "val", "all"), default="train",
                        help="the shards measured (default train, the world model's training data, into "
                             "latent_stats.json; val / all into latent_stats.<split>.json, for inspection)")
    parser.add_argument("--tokenizer", metavar="MODEL_URI",
                        help="the tokenizer that encoded LATENTS; a registered one (models:/NAME@ALIAS, "
                             "models:/NAME/VERSION) gets the statistics as tags")
    parser.add_argument("--workdir", default=os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                        help="local MLflow database (when MLFLOW_TRACKING_URI is not set)")
    parser.add_argument("--num-cpus", type=float, default=0.25, help="CPUs per shard scan task")


def check_tokenizer(tokenizer: str, latents: str, workdir: str) -> None:
    """Refuse a tokenizer other than the one ``latents/encode.json`` names (by the SHA-256 of its config and
    weights; a registered one is downloaded to a temporary directory); without encode.json, nothing to check."""
    from jobs.encode_latents import resolve_tokenizer
    from pipelines.tokenizer.latents_config import tokenizer_sha256

    path = os.path.join(latents, ENCODE_FILE)
    expected = None
    if os.path.isfile(path):
        with open(path) as f:
            expected = json.load(f).get("tokenizer_sha256")
    if not expected:
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            actual = tokenizer_sha256(resolve_tokenizer(tokenizer, workdir, download_to=tmp))
        except (ValueError, OSError) as err:   # not a gaia2 model, or an export without its files
            raise LatentInputError(f"tokenizer {tokenizer!r}: {str(err).splitlines()[0]}") from None
    if actual != expected:
        raise LatentInputError(f"tokenizer {tokenizer}: not the tokenizer that encoded {latents} (its "
                               f"tokenizer_sha256 in {ENCODE_FILE} differs); give that tokenizer")


def measure(latents: str, split: str, tokenizer: str | None, workdir: str,
            num_cpus: float = 0.25) -> tuple[LatentStats, str | None]:
    """Measure and write ``latents/latent_stats.json``; record on ``tokenizer``'s registered version if it is
    one -> (stats, "models:/NAME/VERSION" or None). Raises ``LatentStatsError`` or ``LatentInputError``."""
    from jobs.encode_latents import registered_version
    from jobs.registry import record_latent_stats
    from jobs.runtime import init_ray
    from pipelines.tokenizer.latents import latent_shards, measure_latent_dir

    latents = os.path.abspath(latents)
    latent_shards(latents)   # a bad directory fails before Ray starts or the registry is asked
    version = registered_version(tokenizer, workdir) if tokenizer else None
    if tokenizer:
        check_tokenizer(version or tokenizer, latents, workdir)
    init_ray()
    stats = measure_latent_dir(latents, split, num_cpus)
    return stats, record_latent_stats(version, stats) if version and split == "train" else None


def execute(args: argparse.Namespace) -> int:
    """``gaia2 latents stats``: 0 with the summary printed, or 2 with one ``error:`` line."""
    import mlflow

    from jobs.encode_latents import stats_line

    try:
        stats, version = measure(args.latents, args.split, args.tokenizer, args.workdir, args.num_cpus)
    except (LatentStatsError, LatentInputError, mlflow.exceptions.MlflowException) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    latents = os.path.abspath(args.latents)
    print(f"stats:    {stats_line(stats, latents, version, args.tokenizer)}")
    print(f"written:  {os.path.join(latents, stats_file(args.split))}"
          + ("" if args.split == "train" else " (for inspection: training uses the train split's latent_stats.json)"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.latents_stats", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
