"""Latent statistics: ChannelMoments against numpy, ``gaia2 latents stats`` on existing latent shards, and the
statistics on a registered tokenizer version."""

from __future__ import annotations

import json
import os
import shutil

import mlflow
import numpy as np
import pytest

from gaia2.flow.stats import STATS_FILE, ChannelMoments, LatentStats, LatentStatsError, read_stats
from gaia2.schema.sample import npy_bytes, tar_archive, tar_members
from jobs.cli import main as cli
from jobs.latents_stats import main as latents_stats_main
from jobs.registry import latent_stats_of, model_version_of, record_latent_stats
from jobs.tracking import tracking_uri
from tests.test_encode_latents import _samples, numpy_channel_stats, register_tokenizer


@pytest.fixture
def latents(latent_shards, tmp_path) -> str:
    """A copy of the session's latent shards (encoded with their statistics), free to change."""
    return shutil.copytree(latent_shards, str(tmp_path / "latents"))


def _tokenizer_of(latents_dir: str) -> str:
    with open(os.path.join(latents_dir, "encode.json")) as f:
        return json.load(f)["tokenizer"]


def _stats_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli(["latents", "stats", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_channel_moments_merge_to_numpys_mean_and_std():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(0.5, 2.0, (3, 2, 4, 2, 3)).astype(np.float32) for _ in range(5)]
    halves = [ChannelMoments(), ChannelMoments()]
    for i, a in enumerate(arrays):
        halves[i % 2].add(a)
    merged = ChannelMoments.from_dict(halves[0].to_dict()).merge(ChannelMoments.from_dict(halves[1].to_dict()))
    stats = merged.stats("test")
    x = np.concatenate([np.moveaxis(a, 2, 0).reshape(4, -1) for a in arrays], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, x.std(axis=1), rtol=1e-12)
    assert (stats.count, stats.samples) == (x.shape[1], 5)
    with pytest.raises(LatentStatsError, match="NaN"):
        ChannelMoments().add(np.full((1, 1, 2, 1, 1), np.nan, np.float32))
    with pytest.raises(LatentStatsError, match="not > 0"):   # a constant channel is one line, not a pydantic dump
        ChannelMoments().add(np.ones((1, 1, 2, 1, 1), np.float32)).stats("constant")


def test_command_remeasures_the_same_numbers_and_recreates_the_file(latents, latent_shards, capsys):
    encoded = read_stats(latent_shards)
    code, out, _ = _stats_cli(capsys, latents)
    assert code == 0
    stats = read_stats(latents)
    assert stats.mean == encoded.mean and stats.std == encoded.std and stats.count == encoded.count
    assert stats.source == f"train split of latent shards {latents}"
    assert f"stats:    {stats.summary()}" in out and f"written:  {latents}/{STATS_FILE}" in out

    os.remove(os.path.join(latents, STATS_FILE))
    assert latents_stats_main([latents]) == 0   # python -m jobs.latents_stats
    assert read_stats(latents) == stats


def test_split_val_and_all_are_numpys_stats_of_those_shards(latents, capsys):
    train = read_stats(latents)
    for split, splits in (("val", ("val",)), ("all", ("train", "val"))):
        code, out, _ = _stats_cli(capsys, latents, "--split", split)
        assert read_stats(latents) == train            # the training statistics are never replaced
        stats = read_stats(latents, f"latent_stats.{split}.json")
        assert f"latent_stats.{split}.json (for inspection" in out
        mean, std, count = numpy_channel_stats(latents, splits)
        assert code == 0 and stats.count == count and stats.source.startswith(f"{split} split" if split == "val"
                                                                               else "all splits")
        np.testing.assert_allclose(stats.mean, mean, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(stats.std, std, rtol=1e-6)
        assert stats.std != train.std


def test_command_records_on_a_registered_tokenizer_and_says_when_it_cannot(latents, tmp_path, capsys):
    work = str(tmp_path / "work")
    tokenizer = _tokenizer_of(latents)
    uri = register_tokenizer(tokenizer, work, "gaia2-tokenizer-remeasured")
    code, out, _ = _stats_cli(capsys, latents, "--tokenizer", uri, "--workdir", work)
    assert code == 0 and "on models:/gaia2-tokenizer-remeasured/1" in out
    mlflow.set_tracking_uri(tracking_uri(work))
    assert model_version_of(uri) == ("gaia2-tokenizer-remeasured", "1")
    assert latent_stats_of(uri) == read_stats(latents)

    code, out, _ = _stats_cli(capsys, latents, "--tokenizer", tokenizer, "--workdir", work)
    assert code == 0 and "stored with the latent shards only" in out

    # Another tokenizer's version is refused: its statistics would be these latents'.
    other = shutil.copytree(tokenizer, str(tmp_path / "other"))
    with open(os.path.join(other, "config.json"), "a") as f:
        f.write("\n")
    other_uri = register_tokenizer(other, work, "gaia2-tokenizer-other")
    code, _, err = _stats_cli(capsys, latents, "--tokenizer", other_uri, "--workdir", work)
    assert code == 2 and "not the tokenizer that encoded" in err
    mlflow.set_tracking_uri(tracking_uri(work))
    assert latent_stats_of(other_uri) is None


def test_registry_round_trip_is_exact_and_rejects_malformed_tags(latent_shards, tmp_path):
    work = str(tmp_path / "work")
    uri = register_tokenizer(_tokenizer_of(latent_shards), work, "gaia2-tokenizer-tags")
    stats = LatentStats(mean=[0.1, -1 / 3], std=[2 / 3, 1e-7], count=12, samples=2, source="hand")
    mlflow.set_tracking_uri(tracking_uri(work))
    assert latent_stats_of(uri) is None   # registered, nothing recorded yet
    assert record_latent_stats(uri, stats) == "models:/gaia2-tokenizer-tags/1"
    assert latent_stats_of("models:/gaia2-tokenizer-tags/1") == stats
    assert record_latent_stats(str(tmp_path), stats) is None and model_version_of("runs:/abc/tokenizer") is None
    mlflow.MlflowClient().set_model_version_tag("gaia2-tokenizer-tags", "1", "gaia2.latent_std", "[1.0]")
    with pytest.raises(LatentStatsError, match="models:/gaia2-tokenizer-tags/1: tags .* not valid"):
        latent_stats_of(uri)


def test_a_world_model_is_refused_with_another_tokenizers_statistics():
    from gaia2.flow.stats import require_same

    tokenizer = LatentStats(mean=[0.5, -1.0], std=[1.9, 0.7], count=100, source="train split of latent shards /x")
    require_same([0.5, -1.0], [1.9, 0.7], tokenizer, "world model W", "tokenizer T")          # its own: accepted
    require_same(tokenizer.mean, [1.9 * (1 + 1e-7), 0.7], tokenizer, "world model W", "tokenizer T")   # round-off
    with pytest.raises(LatentStatsError) as err:
        require_same(0.0, 0.32, tokenizer, "world model W", "tokenizer T")   # the paper's, on another tokenizer
    message = str(err.value)
    assert "world model W" in message and "mean 0, std 0.32" in message
    assert "tokenizer T" in message and "[2 channels, 0.7..1.9]" in message
    with pytest.raises(LatentStatsError, match="tokenizer T"):
        require_same([0.5], [1.9], tokenizer, "world model W", "tokenizer T")                  # other channel count


def _write_shard(path, samples: dict[str, dict[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_archive([tar_members([(f"{key}.{ext}", data) for ext, data in files.items()])
                                  for key, files in samples.items()]))


def test_bad_inputs_are_one_line_errors(latents, tokenizer_shards, tmp_path, capsys):
    def fails(directory: str, *expected: str) -> None:
        code, _, err = _stats_cli(capsys, directory)
        (line,) = [line for line in err.splitlines() if line.startswith("error: ")]   # Ray may log beside it
        assert code == 2 and "Traceback" not in err and all(e in line for e in expected), err

    fails(str(tmp_path / "missing"), "not a directory")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    fails(str(tmp_path / "empty"), "no shards")
    fails(tokenizer_shards, "has no latents.npy member", "not a latent shard")   # video shards

    shard = os.path.join(latents, "train/shard-000000.tar")
    samples = _samples(shard)
    key = next(iter(samples))
    samples[key]["latents.npy"] = npy_bytes(np.full((3, 5, 16, 4, 8), np.nan, np.float32))
    _write_shard(tmp_path / "nan" / "train/shard-000000.tar", samples)
    fails(str(tmp_path / "nan"), f"{key}.latents.npy: latents hold NaN", "shard-000000.tar")

    samples[key]["latents.npy"] = npy_bytes(np.zeros((3, 5, 16, 4, 8), np.float64))
    _write_shard(tmp_path / "f64" / "train/shard-000000.tar", samples)
    fails(str(tmp_path / "f64"), "float64", "expected float32")
    code, _, err = _stats_cli(capsys, latents, "--tokenizer", "models:/no-such-model@candidate",
                              "--workdir", str(tmp_path / "work"))
    assert code == 2 and "no-such-model" in err and "Traceback" not in err
