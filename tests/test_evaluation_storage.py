"""The evaluation and generation jobs on object storage (the session's moto S3): pixel and latent shards read from
``s3://`` give the same dataset fingerprint, samples and metric values as the same files on a local disk; an
evaluation's ``--out`` may be a URI; a rollout from an S3 sample is the rollout from the local one; a location
that cannot be used is a config error naming its field."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gaia2 import storage
from tests.test_evaluate_job import _args, _run, nets   # noqa: F401 (nets: the tiny feature networks fixture)
from tests.test_shards_storage import upload_tree

EVAL = ("--samples", "2", "--steps", "2", "--metrics", "fdd,loss", "--set", "bootstrap=0",
        "--set", "measure.frames_per_video=2")


@pytest.fixture(scope="module")
def on_s3(s3_server, tokenizer_shards, latent_shards) -> dict[str, str]:
    """The fixture pixel shards and latent shards, uploaded file by file: {"shards": URI, "latents": URI}."""
    bucket = s3_server.bucket("eval-data")
    uris = {"shards": f"{bucket}/builds/shards", "latents": f"{bucket}/builds/latents"}
    upload_tree(tokenizer_shards, uris["shards"])
    upload_tree(latent_shards, uris["latents"])
    return uris


def test_shards_on_s3_read_like_the_local_copy(on_s3, tokenizer_shards, latent_shards):
    from jobs.generate_batch import StoredLatentShards, latent_steps_of
    from pipelines.evaluation.cache import dataset_fingerprint
    from pipelines.evaluation.samples import ShardIndex

    assert dataset_fingerprint(on_s3["shards"], "val") == dataset_fingerprint(tokenizer_shards, "val")
    assert dataset_fingerprint(on_s3["shards"], "val") != dataset_fingerprint(on_s3["shards"], "train")
    local, remote = ShardIndex(tokenizer_shards, "val"), ShardIndex(on_s3["shards"], "val")
    assert remote.keys() == local.keys() and remote.where[remote.keys()[0]].startswith("s3://eval-data/")
    key = local.keys()[-1]
    assert remote.members(key) == local.members(key) and len(local.members(key)) > 2
    latents = StoredLatentShards(on_s3["latents"])
    keys = latents.keys("val")
    assert keys == ShardIndex(latent_shards, "val").keys() and latents.resolve("@val:1") == keys[1]
    sample = latents(keys[0])
    assert np.array_equal(sample.latents, ShardIndex(latent_shards).array(keys[0], "latents.npy"))
    assert latent_steps_of(on_s3["latents"], "val", keys[:2]) == {k: 3 for k in keys[:2]}


def test_an_evaluation_of_s3_shards_into_s3_gives_the_local_figures(on_s3, s3_server, serve_models, nets,
                                                                     tokenizer_shards, latent_shards, ray_session,
                                                                     tmp_path, capsys):
    wm, tok = serve_models
    local, text = _run(capsys, _args(nets, tokenizer_shards, latent_shards, tok, tmp_path / "work-local",
                                     "--world-model", wm, "--out", str(tmp_path / "local"), *EVAL))
    out = s3_server.bucket("eval-out") + "/runs/first"
    # Another workdir, so another feature cache: the real videos are measured again, from S3.
    remote, text = _run(capsys, _args(nets, on_s3["shards"], on_s3["latents"], tok, tmp_path / "work-s3",
                                      "--world-model", wm, "--out", out, *EVAL))
    for name in ("fdd", "val_loss"):
        assert remote[name]["value"] == pytest.approx(local[name]["value"], rel=1e-6), name
        assert remote[name]["n"] == local[name]["n"] > 0
    report = json.loads(storage.read_text(f"{out}/evaluation.json"))
    assert report["counts"]["real_measured"] == 2 and report["out"] == out
    with open(tmp_path / "local" / "evaluation.json") as f:
        before = json.load(f)
    assert (report["dataset"], report["protocol"]) == (before["dataset"], before["protocol"])
    keys = s3_server.keys("eval-out", "runs/first/")
    assert "runs/first/mlflow_run.json" in keys and not [k for k in keys if "/_models/" in k or "partial" in k]
    assert sum(k.endswith("/spec.json") and "/generations/" in k for k in keys) == 2
    assert f"report: {out}/evaluation.json" in text


def test_a_rollout_from_an_s3_sample_is_the_rollout_from_the_local_one(on_s3, serve_models, latent_shards,
                                                                       ray_session, tmp_path):
    from jobs.cli import main as cli

    wm, tok = serve_models
    common = ["--world-model", wm, "--tokenizer", tok, "--workdir", str(tmp_path / "work"), "--steps", "2"]
    out = tmp_path / "out"
    assert cli(["generate", *common, "--from-shards", on_s3["latents"], "--split", "val", "--limit", "1", "--mode",
                "rollout", "--set", "job.context_steps=1", "--out", str(out)]) == 0
    with open(out / "generate.json") as f:
        report = json.load(f)
    key = report["generated"][0]
    with open(out / key / "spec.json") as f:
        resolved = json.load(f)
    assert resolved["mode"] == "rollout" and resolved["rig"]["source"] == f"sample:{key}"
    spec = tmp_path / "rollout.json"
    spec.write_text(json.dumps(resolved["spec"]))
    assert cli(["generate", *common, "--spec", str(spec), "--latents", latent_shards, "--out",
                str(tmp_path / "alone")]) == 0
    assert (tmp_path / "alone" / "latents.npy").read_bytes() == (out / key / "latents.npy").read_bytes()


def test_a_location_that_cannot_be_used_is_a_config_error_naming_the_field(on_s3, serve_models, tmp_path, capsys):
    from jobs.cli import main as cli

    wm, tok = serve_models

    def error(*argv) -> str:
        assert cli(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    evaluate = ["evaluate", "--world-model", wm, "--tokenizer", tok, "--workdir", str(tmp_path), "--metrics", "loss"]
    missing = "s3://eval-data/builds/nothing"
    assert f"job.shards: '{missing}' is not a directory" in error(*evaluate, "--shards", missing, "--latents",
                                                                  on_s3["latents"])
    assert "job.latents: 's3://no-such-bucket-here/x' " in error(*evaluate, "--shards", on_s3["shards"], "--latents",
                                                                 "s3://no-such-bucket-here/x")
    assert "job.cache: 's3://eval-data/cache' is a URI" in error(*evaluate, "--shards", on_s3["shards"], "--latents",
                                                                 on_s3["latents"], "--cache", "s3://eval-data/cache")
    generate = ["generate", "--world-model", wm, "--tokenizer", tok, "--workdir", str(tmp_path)]
    assert f"job.from_shards: '{missing}' is not a directory" in error(*generate, "--from-shards", missing, "--out",
                                                                       str(tmp_path / "g"))
    assert "job.out: 's3://eval-data/gen' is a URI" in error(*generate, "--from-shards", on_s3["latents"], "--out",
                                                             "s3://eval-data/gen")
    assert not os.path.exists(tmp_path / "g")
