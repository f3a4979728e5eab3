"""``gaia2 generate``: one spec on this machine, and the Ray job over many (a spec directory, a shard split):
every camera's video, deterministic latents, rejects as values, resume, models from the MLflow registry."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import av
import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from gaia2.flow.stats import LatentStats, read_stats
from gaia2.generation.sources import LatentShards
from gaia2.generation.spec import load_spec, spec_for_sample
from gaia2.world_model.config import tiny as world_model_tiny
from gaia2.world_model.export import save_world_model
from gaia2.world_model.model import WorldModel
from jobs.cli import main as cli
from jobs.generate_batch import REJECTS_SCHEMA
from jobs.registry import log_and_register, record_latent_stats
from jobs.tracking import mlflow_run, tracking_uri
from pipelines.tokenizer.latents_stages import sample_seed

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "generation")
STEPS, FRAMES_PER_LATENT = 3, 8           # the fixture's samples: 3 latent steps; the tiny tokenizer: 8 frames each


@dataclass(frozen=True)
class Models:
    world_model: str
    tokenizer: str
    stats: LatentStats


@pytest.fixture(scope="module")
def models(latent_shards, tmp_path_factory) -> Models:
    """A random tiny world model exported with the fixture latents' statistics, and the tokenizer that encoded them."""
    stats = read_stats(latent_shards)
    torch.manual_seed(3)
    wm = save_world_model(str(tmp_path_factory.mktemp("wm") / "world_model"), WorldModel(world_model_tiny()),
                          extra={"latent_mean": stats.mean, "latent_std": stats.std})
    return Models(wm, os.path.join(os.path.dirname(latent_shards), "tokenizer"), stats)


def _example(example: str, **changes) -> dict:
    with open(os.path.join(EXAMPLES, f"{example}.yaml")) as f:
        return {**yaml.safe_load(f), **changes}


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory) -> str:
    """Two good specs (from scratch; an edit of the first val sample), one with a bad field, one naming a sample
    the shards do not hold, and one reusing a good one's name. Few latent steps and sampler steps: fast."""
    d = tmp_path_factory.mktemp("specs")
    fast = {"sampler": {"steps": 2, "seed": 1}}
    files = {"scratch.yaml": _example("scratch", duration={"latent_steps": STEPS}, **fast),
             "edit.yaml": _example("edit", **fast),
             "bad_field.yaml": _example("scratch", name="bad_field", duration={"seconds": -1.0}),
             "unknown_sample.yaml": _example("edit", name="unknown_sample", mode={
                 "kind": "edit", "source": {"sample": "no_such_sample"}}, **fast),
             "zz_same_name.json": _example("scratch", duration={"latent_steps": STEPS}, **fast)}
    for name, data in files.items():
        (d / name).write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return str(d)


def _args(models: Models, work, *argv) -> list[str]:
    return ["generate", "--world-model", models.world_model, "--tokenizer", models.tokenizer, "--workdir", str(work),
            *argv]


def _frames(path: str) -> list[np.ndarray]:
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _report(out) -> dict:
    with open(os.path.join(out, "generate.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def local_scratch(models, spec_dir, tmp_path_factory):
    """``gaia2 generate --spec scratch.yaml`` on this machine -> (output folder, printed summary)."""
    work, out = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("local") / "scratch"
    code = cli(_args(models, work, "--spec", os.path.join(spec_dir, "scratch.yaml"), "--out", str(out)))
    assert code == 0
    assert not os.listdir(work)   # no MLflow: the models are directories
    return out


def test_one_spec_writes_every_camera_the_mosaic_latents_and_the_spec(local_scratch, spec_dir, models):
    out = local_scratch
    with open(out / "spec.json") as f:
        resolved = json.load(f)
    cameras = resolved["cameras"]
    assert cameras == ["front", "front_left", "front_right", "rear_left", "rear_right"]   # sedan6_30hz, 5 of 6
    frames = STEPS * FRAMES_PER_LATENT
    for name in cameras:
        video = _frames(str(out / "cameras" / f"{name}.mp4"))
        assert len(video) == frames and video[0].shape == (32, 64, 3)   # the tiny tokenizer's frame size
    mosaic = _frames(str(out / "video.mp4"))
    assert len(mosaic) == frames and mosaic[0].shape[1] >= 3 * 256   # 3 cameras a row, scaled up
    latents = np.load(out / "latents.npy")
    assert latents.dtype == np.float32 and latents.shape == (STEPS, 5, 16, 4, 8) and np.isfinite(latents).all()
    spec = load_spec(os.path.join(spec_dir, "scratch.yaml"))
    assert resolved["spec"] == spec.model_dump(mode="json", exclude_none=True)
    assert resolved["models"]["world_model"] == models.world_model and resolved["models"]["precision"] == "fp32"
    assert resolved["latent_shape"] == [STEPS, 5, 16, 4, 8] and resolved["frame_rate"] == 30.0


def test_the_summary_says_where_the_videos_are(models, spec_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    spec = tmp_path / "one.yaml"
    spec.write_text(yaml.safe_dump(_example("scratch", duration={"latent_steps": 1})))
    assert cli(_args(models, tmp_path / "work", "--spec", str(spec), "--out", str(out), "--steps", "1",
                     "--device", "cpu")) == 0
    printed = capsys.readouterr().out
    assert f"mosaic:     {out}/video.mp4" in printed
    assert f"cameras:    {out}/cameras/{{front,front_left,front_right,rear_left,rear_right}}.mp4" in printed
    assert "(1, 5, 16, 4, 8)" in printed and f"world model {models.world_model}" in printed
    with open(out / "spec.json") as f:
        assert json.load(f)["spec"]["sampler"]["steps"] == 1   # --steps replaces the spec's


def test_batch_over_a_spec_directory_rejects_bad_specs_resumes_and_matches_a_local_run(
        ray_session, models, spec_dir, local_scratch, latent_shards, tmp_path, capsys):
    specs, work, out = tmp_path / "specs", tmp_path / "work", tmp_path / "out"
    shutil.copytree(spec_dir, specs)
    argv = _args(models, work, "--specs", str(specs), "--latents", latent_shards, "--out", str(out))
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "2 generated, 0 already done (skipped), 3 rejected of 5 specs" in printed
    report = _report(out)
    assert report["counts"] == {"specs": 5, "generated": 2, "skipped": 0, "rejected": 3}
    assert report["generated"] == ["edit", "scratch"]
    assert sorted(p for p in os.listdir(out) if not p.startswith("_")) == [
        "edit", "generate.json", "mlflow_run.json", "rejects.parquet", "scratch"]

    table = pq.read_table(out / "rejects.parquet")
    assert table.schema == REJECTS_SCHEMA
    rejects = {r["name"]: r for r in table.to_pylist()}
    assert set(rejects) == {"bad_field", "unknown_sample", "scratch"}
    bad, unknown, dup = rejects["bad_field"], rejects["unknown_sample"], rejects["scratch"]
    assert (bad["stage"], bad["reason"]) == ("read", "invalid_spec") and "duration.seconds" in bad["detail"]
    assert bad["source"] == str(specs / "bad_field.yaml")
    assert (unknown["stage"], unknown["reason"]) == ("prepare", "invalid_spec")
    assert "sample 'no_such_sample': not in the latent shards" in unknown["detail"]
    assert (dup["stage"], dup["reason"], dup["source"]) == ("name", "duplicate_name", str(specs / "zz_same_name.json"))
    assert str(specs / "scratch.yaml") in dup["detail"]

    # The same spec gives the same latents in the Ray job as on this machine, bit for bit.
    assert (out / "scratch" / "latents.npy").read_bytes() == (local_scratch / "latents.npy").read_bytes()
    edit = np.load(out / "edit" / "latents.npy")
    val0 = LatentShards(latent_shards).keys("val")[0]
    with open(out / "edit" / "spec.json") as f:
        assert json.load(f)["rig"]["source"] == f"sample:{val0}" and edit.shape[0] == STEPS

    # One MLflow run: the models, the counts, the videos and specs, the rejects table.
    mlflow.set_tracking_uri(tracking_uri(str(work)))
    run = mlflow.get_run(report["run_id"])
    assert run.info.experiment_id == mlflow.get_experiment_by_name("generation").experiment_id
    assert run.data.params["world_model"] == models.world_model and run.data.params["batch_size"] == "4"
    assert run.data.metrics["generated"] == 2 and run.data.metrics["rejected"] == 3
    artifacts = {a.path for name in ("edit", "scratch")
                 for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, f"generations/{name}")}
    assert artifacts == {f"generations/{n}/{f}" for n in ("edit", "scratch") for f in ("video.mp4", "spec.json")}
    assert "generation/rejects.parquet" in {a.path for a in mlflow.MlflowClient().list_artifacts(
        run.info.run_id, "generation")}

    # A rerun generates nothing: every folder already records its spec.
    stamps = {n: os.stat(out / n / "latents.npy").st_mtime_ns for n in ("edit", "scratch")}
    assert cli(argv) == 0
    again = _report(out)
    assert again["counts"] == {"specs": 5, "generated": 0, "skipped": 2, "rejected": 3}
    assert again["run_id"] == report["run_id"] and "2 already done (skipped)" in capsys.readouterr().out
    assert {n: os.stat(out / n / "latents.npy").st_mtime_ns for n in stamps} == stamps

    # A changed spec is generated again; the others are still skipped.
    edit_spec = yaml.safe_load((specs / "edit.yaml").read_text())
    edit_spec["sampler"]["seed"] = 9
    (specs / "edit.yaml").write_text(yaml.safe_dump(edit_spec))
    assert cli(argv) == 0
    third = _report(out)
    assert (third["generated"], third["skipped"]) == (["edit"], ["scratch"])
    assert os.stat(out / "scratch" / "latents.npy").st_mtime_ns == stamps["scratch"]
    assert not np.array_equal(np.load(out / "edit" / "latents.npy"), edit)
    assert not [p for p in os.listdir(out) if p.endswith(".partial")]


def test_one_spec_per_sample_of_a_split_batched_matches_one_at_a_time(ray_session, models, latent_shards, tmp_path,
                                                                      capsys):
    out = tmp_path / "out"
    assert cli(_args(models, tmp_path / "work", "--from-shards", latent_shards, "--split", "val", "--limit", "2",
                     "--steps", "2", "--batch-size", "2", "--out", str(out))) == 0
    keys = LatentShards(latent_shards).keys("val")[:2]
    assert _report(out)["generated"] == sorted(keys) and sorted(os.listdir(out / keys[0] / "cameras"))
    for key in keys:
        with open(out / key / "spec.json") as f:
            resolved = json.load(f)
        expected = spec_for_sample(key, STEPS, seed=sample_seed(0, key), sampler_steps=2)
        assert resolved["spec"] == expected.model_dump(mode="json", exclude_none=True)
        assert resolved["rig"]["source"] == f"sample:{key}" and resolved["mode"] == "scratch"
        assert np.load(out / key / "latents.npy").shape == (STEPS, 5, 16, 4, 8)
    # The two were sampled in one batch; the second alone, on this machine, gives the same bytes.
    spec = tmp_path / "second.json"
    with open(out / keys[1] / "spec.json") as f:
        spec.write_text(json.dumps(json.load(f)["spec"]))
    capsys.readouterr()
    assert cli(_args(models, tmp_path / "work", "--spec", str(spec), "--latents", latent_shards,
                     "--out", str(tmp_path / "alone"))) == 0
    assert (tmp_path / "alone" / "latents.npy").read_bytes() == (out / keys[1] / "latents.npy").read_bytes()


def _register(directory: str, workdir: str, name: str, artifact: str) -> str:
    with mlflow_run("registry", workdir, run_name=f"register-{name}"):
        log_and_register(directory, name, artifact)
    return f"models:/{name}@candidate"


def test_models_from_the_registry_and_a_tokenizer_with_other_statistics_is_refused(models, spec_dir, tmp_path,
                                                                                   capsys):
    work = str(tmp_path / "work")
    wm = _register(models.world_model, work, "gaia2-world-model-gen", "world_model")
    tok = _register(models.tokenizer, work, "gaia2-tokenizer-gen", "tokenizer")
    record_latent_stats(tok, models.stats)   # what encode-latents records on a registered tokenizer
    spec = os.path.join(spec_dir, "scratch.yaml")
    out = tmp_path / "out"
    code = cli(["generate", "--spec", spec, "--out", str(out), "--world-model", wm, "--tokenizer", tok,
                "--workdir", work, "--steps", "1"])
    assert code == 0
    with open(out / "spec.json") as f:
        recorded = json.load(f)["models"]
    assert (recorded["world_model"], recorded["tokenizer"]) == ("models:/gaia2-world-model-gen/1",
                                                                "models:/gaia2-tokenizer-gen/1")
    assert recorded["world_model_uri"] == wm

    # A new tokenizer version whose latents have other statistics: the alias now names it, and it is refused.
    _register(models.tokenizer, work, "gaia2-tokenizer-gen", "tokenizer")
    record_latent_stats(tok, models.stats.model_copy(update={"std": [2 * s for s in models.stats.std]}))
    capsys.readouterr()
    code = cli(["generate", "--spec", spec, "--out", str(tmp_path / "refused"), "--world-model", wm,
                "--tokenizer", tok, "--workdir", work])
    # One line, after MLflow's download progress bars.
    lines = capsys.readouterr().err.splitlines()
    err = "\n".join(line for line in lines if line and not line.startswith("Downloading"))
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err, err
    assert "world model models:/gaia2-world-model-gen/1" in err and "tokenizer models:/gaia2-tokenizer-gen/2" in err
    assert not (tmp_path / "refused").exists()


def test_bad_input_is_one_line_naming_it(models, spec_dir, latent_shards, tmp_path, capsys):
    def run(*argv) -> tuple[int, str]:
        code = cli(_args(models, tmp_path / "work", "--out", str(tmp_path / "out"), *argv))
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return code, err

    missing = str(tmp_path / "missing.yaml")
    assert run("--spec", missing) == (2, f"error: spec {missing!r}: no such file\n")
    code, err = run("--spec", os.path.join(spec_dir, "scratch.yaml"), "--world-model", str(tmp_path / "nope"))
    assert code == 2 and f"world model {str(tmp_path / 'nope')!r}: not a directory" in err
    code, err = run("--spec", os.path.join(spec_dir, "scratch.yaml"), "--world-model", models.tokenizer)
    assert code == 2 and f"world model {models.tokenizer!r}: config.json is format 'gaia2-tokenizer'" in err
    code, err = run("--spec", os.path.join(spec_dir, "bad_field.yaml"))
    assert code == 2 and "duration.seconds" in err
    code, err = run("--spec", os.path.join(spec_dir, "unknown_sample.yaml"), "--latents", latent_shards)
    assert code == 2 and "sample 'no_such_sample'" in err
    code, err = run("--specs", str(tmp_path / "nowhere"))
    assert code == 2 and "not a directory of spec files nor a Parquet file" in err
    code, err = run("--spec", os.path.join(spec_dir, "scratch.yaml"), "--specs", spec_dir)
    assert code == 2 and "give exactly one" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_a_parquet_table_of_specs_is_named_by_row(tmp_path):
    import pyarrow as pa

    from jobs.generate_batch import spec_table_items, unique_names

    good = json.dumps(_example("scratch", name=None, duration={"latent_steps": STEPS}))
    table = pa.table({"spec": [good, "{not json", good, good, json.dumps({"rig": {"name": "sedan6_30hz"}})],
                      "name": ["first", None, None, "bad name", "x"]})
    pq.write_table(table, tmp_path / "specs.parquet")
    items, rejects = spec_table_items(str(tmp_path / "specs.parquet"), sampler_steps=3)
    assert [i.name for i in items] == ["first", "row-000002", "bad name"]
    assert all(i.spec.sampler.steps == 3 and i.base_dir == str(tmp_path) for i in items)
    assert [(r["name"], r["reason"]) for r in rejects] == [("row-000001", "invalid_spec"), ("x", "invalid_spec")]
    assert "specs.parquet row 1: spec is not JSON" in rejects[0]["detail"]
    assert "duration" in rejects[1]["detail"] and rejects[1]["source"] == f"{tmp_path / 'specs.parquet'} row 4"
    kept, more = unique_names(items)
    assert [i.name for i in kept] == ["first", "row-000002"]
    assert [(r["name"], r["stage"], r["reason"]) for r in more] == [("bad name", "name", "invalid_name")]
