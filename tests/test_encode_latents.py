"""The latent-encoding job: latent shards that mirror the input shards, deterministic, resumable."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gaia2.config.base import ConfigError
from gaia2.flow.stats import LatentStats, read_stats
from gaia2.schema.sample import tar_archive, tar_members
from gaia2.tokenizer import Tokenizer, tiny
from gaia2.tokenizer.clips import sample_videos, to_model_input
from gaia2.tokenizer.export import load_tokenizer, save_tokenizer
from jobs.cli import main as cli
from jobs.encode_latents import resolve_tokenizer
from jobs.registry import STATS_TAGS, latent_stats_of, log_and_register
from jobs.tracking import mlflow_run, tracking_uri
from pipelines.rejects import REJECTS_SCHEMA, batch_rejects
from pipelines.tokenizer.latents import (LatentInputError, check_inputs, encode_latents, latent_config,
                                         read_shard_batch, sample_seed)

OTHER = ("json", "boxes.npy", "boxes_valid.npy", "clip.npy")


def _members(path: str) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def _samples(path: str) -> dict[str, dict[str, bytes]]:
    """{key: {extension: bytes}} in tar order."""
    out: dict[str, dict[str, bytes]] = {}
    for name, data in _members(path):
        key, ext = name.split(".", 1)
        out.setdefault(key, {})[ext] = data
    return out


def _tars(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root)
                  for f in files if f.endswith(".tar"))


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


def numpy_channel_stats(directory: str, splits: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """The reference: numpy's per-channel mean and std (float64) of every latents.npy in the shards of
    ``splits``, read straight from the tars -> (mean (L,), std (L,), values per channel)."""
    latents = [_npy(files["latents.npy"]) for shard in _tars(directory) if shard.split("/")[0] in splits
               for files in _samples(os.path.join(directory, shard)).values()]
    x = np.concatenate([np.moveaxis(a, 2, 0).reshape(a.shape[2], -1) for a in latents], axis=1).astype(np.float64)
    return x.mean(axis=1), x.std(axis=1), x.shape[1]


def register_tokenizer(tokenizer_dir: str, workdir: str, name: str) -> str:
    """Register ``tokenizer_dir`` the way the training job does -> "models:/NAME@candidate"."""
    with mlflow_run("tokenizer", workdir, run_name=f"register-{name}"):
        log_and_register(tokenizer_dir, name, "tokenizer")
    return f"models:/{name}@candidate"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return save_tokenizer(str(tmp_path_factory.mktemp("tok") / "tiny"), Tokenizer(tiny()))


@pytest.fixture(scope="module")
def sampled(tokenizer_shards, tokenizer_dir, tmp_path_factory):
    """The whole fixture build encoded in the default mode (sample, seed 0)."""
    return encode_latents(tokenizer_shards, tokenizer_dir, str(tmp_path_factory.mktemp("lat") / "sample"),
                          latent_config(batch_size=3))


@pytest.fixture(scope="module")
def small_shards(tokenizer_shards, tmp_path_factory) -> str:
    """Two shards cut from the fixture build: train (3 samples, the middle one's front video truncated)
    and val (2 samples), with the matching manifest rows."""
    out = str(tmp_path_factory.mktemp("small") / "shards")
    keys = []
    for shard, n in (("train/shard-000000", 3), ("val/shard-000000", 2)):
        samples = list(_samples(os.path.join(tokenizer_shards, shard + ".tar")).items())[:n]
        fragments = []
        for i, (key, files) in enumerate(samples):
            if shard.startswith("train") and i == 1:
                files = {**files, "front.mp4": files["front.mp4"][: len(files["front.mp4"]) // 2]}
            fragments.append(tar_members([(f"{key}.{ext}", data) for ext, data in files.items()]))
            keys.append(key)
        os.makedirs(os.path.join(out, shard.split("/")[0]), exist_ok=True)
        with open(os.path.join(out, shard + ".tar"), "wb") as f:
            f.write(tar_archive(fragments))
    manifest = pq.read_table(os.path.join(tokenizer_shards, "manifest.parquet"))
    pq.write_table(manifest.filter(pa.array([k in keys for k in manifest.column("key").to_pylist()])),
                   os.path.join(out, "manifest.parquet"))
    return out


@pytest.fixture(scope="module")
def mean_run(small_shards, tokenizer_dir, tmp_path_factory):
    return encode_latents(small_shards, tokenizer_dir, str(tmp_path_factory.mktemp("lat") / "mean"),
                          latent_config(mode="mean"))


def test_latent_shards_mirror_the_input(sampled, tokenizer_shards):
    out = sampled.out_dir
    assert _tars(out) == _tars(tokenizer_shards) and len(_tars(out)) >= 2
    n = 0
    for shard in _tars(tokenizer_shards):
        src, dst = _samples(os.path.join(tokenizer_shards, shard)), _samples(os.path.join(out, shard))
        assert list(dst) == list(src)                                   # same keys, same order
        for key, files in dst.items():
            assert list(files) == ["json", "latents.npy", "boxes.npy", "boxes_valid.npy", "clip.npy"]
            assert all(files[ext] == src[key][ext] for ext in OTHER)     # byte-identical
            cams = [c["name"] for c in json.loads(files["json"])["cameras"]]
            assert len(cams) >= 5 and all(f"{c}.mp4" in src[key] for c in cams)
            lat = _npy(files["latents.npy"])
            assert lat.dtype == np.float32 and lat.shape == (3, len(cams), 16, 4, 8) and np.isfinite(lat).all()
            assert lat.std() > 0.05
            n += 1
    manifest = pq.read_table(os.path.join(tokenizer_shards, "manifest.parquet"))
    assert pq.read_table(os.path.join(out, "manifest.parquet")).equals(manifest)
    assert pq.read_table(os.path.join(out, "rejects.parquet")).num_rows == 0
    with open(os.path.join(out, "latents.json")) as f:
        report = json.load(f)
    splits = manifest.column("split").to_pylist()
    assert n == manifest.num_rows == report["counts"]["written"] == sum(report["latent_shapes"].values())
    for split in ("train", "val"):
        assert report["splits"][split] == {"samples_in": splits.count(split), "written": splits.count(split),
                                           "rejected": 0}
    assert report["mode"] == "sample" and report["seed"] == 0 and report["tokenizer"]["config"]["latent_dim"] == 16
    assert set(report["latent_shapes"]) <= {"3x5x16x4x8", "3x6x16x4x8"}


def test_latent_stats_are_numpys_per_channel_mean_and_std_of_the_train_split(sampled):
    out = sampled.out_dir
    stats = read_stats(out)
    mean, std, count = numpy_channel_stats(out, ("train",))
    assert stats.channels == 16 and stats.count == count
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.std, std, rtol=1e-6)
    train = sampled.report["splits"]["train"]["written"]
    assert stats.samples == train < sampled.report["counts"]["written"]   # val is not measured
    assert stats.source == f"train split of latent shards {out}"
    assert LatentStats.model_validate(sampled.report["latent_stats"]) == stats == sampled.stats
    with open(os.path.join(out, "latents.json")) as f:
        assert json.load(f)["latent_stats"] == stats.model_dump()
    # The val split's numbers differ, so the split measured matters.
    assert not np.allclose(numpy_channel_stats(out, ("val",))[1], std, rtol=1e-3)


def test_mean_mode_is_the_encoder_mean_and_sample_mode_adds_seeded_noise(mean_run, sampled, small_shards,
                                                                         tokenizer_dir):
    model = load_tokenizer(tokenizer_dir)
    checked = 0
    for shard in _tars(mean_run.out_dir):
        src = _samples(os.path.join(small_shards, shard))
        for key, files in _samples(os.path.join(mean_run.out_dir, shard)).items():
            frames = sample_videos({**src[key], "json": json.loads(src[key]["json"])}, (32, 64))
            with torch.no_grad():
                mean, log_std = model.encode(to_model_input(np.stack([f for _, f in frames])))   # (N, L, T', H', W')
            eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(sample_seed(0, key)))
            # As stored: (T', N, L, H', W').
            mean, std, eps = (x.permute(2, 0, 1, 3, 4).numpy() for x in (mean, log_std.exp(), eps))
            np.testing.assert_allclose(_npy(files["latents.npy"]), mean, atol=1e-5)
            # The sample mode's latents are mean + std * eps with eps from the (seed, key) generator.
            drawn = _npy(_samples(os.path.join(sampled.out_dir, shard))[key]["latents.npy"])
            np.testing.assert_allclose(drawn, mean + std * eps, atol=1e-5)
            z = (drawn - mean) / std
            assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1 and np.abs(drawn - mean).max() > 1e-2
            checked += 1
    assert checked == 4   # 5 samples, one rejected


def test_failed_samples_are_rejects_and_resume_skips_complete_shards(mean_run, small_shards, tokenizer_dir):
    out = mean_run.out_dir
    bad = list(_samples(os.path.join(small_shards, "train/shard-000000.tar")))[1]
    table = pq.read_table(os.path.join(out, "rejects.parquet"))
    assert table.schema == REJECTS_SCHEMA   # the shard build's rejects table, the same columns
    rejects = table.to_pylist()
    assert [(r["key"], r["shard"], r["split"], r["stage"], r["reason"]) for r in rejects] == [
        (bad, "train/shard-000000", "train", "decode", "truncated_video")]
    assert all(r["detail"] for r in rejects)
    assert bad not in _samples(os.path.join(out, "train/shard-000000.tar"))
    assert bad not in pq.read_table(os.path.join(out, "manifest.parquet")).column("key").to_pylist()
    assert mean_run.report["splits"]["train"] == {"samples_in": 3, "written": 2, "rejected": 1}
    assert mean_run.report["counts"]["rejected"] == 1 and mean_run.report["reasons"] == {"truncated_video": 1}

    kept, redo = os.path.join(out, "train/shard-000000.tar"), os.path.join(out, "val/shard-000000.tar")
    before, stamp = open(redo, "rb").read(), os.stat(kept).st_mtime_ns
    os.remove(redo)
    again = encode_latents(small_shards, tokenizer_dir, out, latent_config(mode="mean"))
    assert again.report["shards"]["skipped_complete"] == 1 and again.report["counts"]["processed_this_run"] == 2
    assert os.stat(kept).st_mtime_ns == stamp and open(redo, "rb").read() == before
    assert again.report["counts"]["rejected"] == 1                  # the skipped shard's reject still counts
    assert again.stats == mean_run.stats and again.stats.samples == 2   # the skipped shard is measured too
    with pytest.raises(LatentInputError, match="seed"):            # another encoding is refused, not mixed in
        encode_latents(small_shards, tokenizer_dir, out, latent_config(mode="mean", seed=1))


def test_a_manifest_sample_missing_from_its_shard_is_a_read_reject(small_shards, tmp_path):
    shard = "val/shard-000000"
    keys = list(_samples(os.path.join(small_shards, shard + ".tar")))
    batch = {"shard": np.asarray([shard], dtype=object),
             "keys_json": np.asarray([json.dumps(keys + ["zz_missing"])], dtype=object)}
    (out,) = read_shard_batch(batch, small_shards, str(tmp_path), chunk=10)
    assert list(out["key"]) == keys + ["zz_missing"]
    rejects = batch_rejects(out, len(keys) + 1)
    assert rejects[:-1] == [None] * len(keys)
    assert (rejects[-1].stage, rejects[-1].reason) == ("read", "invalid_record")
    assert "zz_missing" in rejects[-1].detail and shard in rejects[-1].detail


def test_cli_run_is_tracked_and_byte_identical(sampled, tokenizer_shards, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli(["encode-latents", "--shards", tokenizer_shards, "--tokenizer", tokenizer_dir, "--out", str(out),
                "--batch-size", "5", "--workdir", str(tmp_path / "work")])
    printed = capsys.readouterr().out
    assert code == 0 and "written" in printed
    assert f"stats:    {sampled.stats.summary()}" in printed and "stored with the latent shards only" in printed
    assert read_stats(str(out)) == sampled.stats.model_copy(update={"source": f"train split of latent shards {out}"})
    for shard in _tars(sampled.out_dir):   # other batching, same bytes
        assert (out / shard).read_bytes() == open(os.path.join(sampled.out_dir, shard), "rb").read()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'work'}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["latents"])
    assert len(runs) == 1
    run = mlflow.get_run(runs["run_id"][0])
    assert run.data.params["mode"] == "sample" and run.data.params["tokenizer.latent_dim"] == "16"
    assert run.data.metrics["count.written"] == sampled.report["counts"]["written"]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "latents")]
    assert {"latents/latents.json", "latents/latent_stats.json"} <= set(artifacts)
    stats = sampled.stats
    assert run.data.metrics["latent_std_min"] == pytest.approx(min(stats.std), rel=1e-12)
    assert run.data.metrics["latent_std_max"] == pytest.approx(max(stats.std), rel=1e-12)
    assert run.data.metrics["latent_mean_min"] == pytest.approx(min(stats.mean), rel=1e-12)
    assert run.data.metrics["latent_mean_max"] == pytest.approx(max(stats.mean), rel=1e-12)
    assert mlflow.MlflowClient().search_registered_models() == []   # a plain directory: nothing registered


def test_stats_are_recorded_on_the_registered_tokenizer_version(mean_run, small_shards, tokenizer_dir, tmp_path,
                                                               capsys):
    work, out = str(tmp_path / "work"), tmp_path / "out"
    uri = register_tokenizer(tokenizer_dir, work, "gaia2-tokenizer-stats")
    code = cli(["encode-latents", "--shards", small_shards, "--tokenizer", uri, "--out", str(out),
                "--mode", "mean", "--workdir", work])
    printed = capsys.readouterr().out
    assert code == 0 and "on models:/gaia2-tokenizer-stats/1 (tags gaia2.latent_*)" in printed
    stats = read_stats(str(out))
    assert stats == mean_run.stats.model_copy(update={"source": f"train split of latent shards {out}"})
    mlflow.set_tracking_uri(tracking_uri(work))
    assert latent_stats_of(uri) == stats == latent_stats_of("models:/gaia2-tokenizer-stats/1")
    tags = mlflow.MlflowClient().get_model_version("gaia2-tokenizer-stats", "1").tags
    assert json.loads(tags[STATS_TAGS["mean"]]) == stats.mean and json.loads(tags[STATS_TAGS["std"]]) == stats.std
    assert tags[STATS_TAGS["count"]] == str(stats.count) and tags[STATS_TAGS["source"]] == stats.source
    assert latent_stats_of(tokenizer_dir) is None   # a directory is no registered version


def test_bad_inputs_fail_early_and_clearly(small_shards, tokenizer_dir, tmp_path, capsys):
    def run(*argv):
        code = cli(["encode-latents", "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work"), *argv])
        return code, capsys.readouterr().err

    # A 12-frame window: the encoder maps 8 frames to a latent.
    short = tmp_path / "short"
    (short / "train").mkdir(parents=True)
    key, files = next(iter(_samples(os.path.join(small_shards, "train/shard-000000.tar")).items()))
    meta = json.loads(files["json"])
    meta["timestamps"] = meta["timestamps"][:12]
    files = {**files, "json": json.dumps(meta).encode()}
    (short / "train/shard-000000.tar").write_bytes(
        tar_archive([tar_members([(f"{key}.{ext}", data) for ext, data in files.items()])]))
    manifest = pq.read_table(os.path.join(small_shards, "manifest.parquet"))
    pq.write_table(manifest.filter(pa.array([k == key for k in manifest.column("key").to_pylist()])),
                   short / "manifest.parquet")
    with pytest.raises(LatentInputError, match="window length 12 frames .* temporal factor 8"):
        check_inputs(str(short), tokenizer_dir)
    code, err = run("--shards", str(short), "--tokenizer", tokenizer_dir)
    assert code == 2 and "error: window length 12" in err and "Traceback" not in err

    no_config = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, no_config)
    (no_config / "config.json").unlink()
    code, err = run("--shards", small_shards, "--tokenizer", str(no_config))
    assert code == 2 and "config.json" in err and "save_tokenizer" in err
    code, err = run("--shards", str(tmp_path / "missing"), "--tokenizer", tokenizer_dir)
    assert code == 2 and "not a directory" in err
    code, err = run("--shards", small_shards, "--tokenizer", tokenizer_dir, "--batch-size", "0")
    assert code == 2 and "batch_size" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()   # nothing started

    with pytest.raises(LatentInputError, match="not supported"):
        resolve_tokenizer("s3://bucket/tokenizer", str(tmp_path / "mlflow"))
    with pytest.raises(LatentInputError, match="tokenizer 'models:/tokenizer/3': .*not found"):
        resolve_tokenizer("models:/tokenizer/3", str(tmp_path / "mlflow"))
    assert resolve_tokenizer(f"file://{tokenizer_dir}", str(tmp_path / "mlflow")) == tokenizer_dir
    with pytest.raises(ConfigError, match="mode"):
        latent_config(mode="median")
