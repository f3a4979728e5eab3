"""The cluster manifests' own commands, run against a real S3 API (the session's moto server): the RayJobs'
entrypoints with their object-storage arguments unchanged (``s3://gaia2-data/...``), one job's output the next
one's input, as on the cluster.

What is changed is only what a CPU test machine cannot hold: ``--preset paper`` becomes ``tiny``; a mounted
config (``/mnt/config/...``) is the repository's file with its scale fields (window, resolution, networks,
GPUs) shrunk; networks under ``/models`` are tiny random ones of the same classes; GPU counts become 0. The
cluster's credentials and endpoint come from the environment there as here (``AWS_ENDPOINT_URL``, ``AWS_*``).
"""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from gaia2 import storage
from tests.test_cluster_manifests import CLUSTER, _command, _entrypoint, _load

CLIPS = 9   # all of the session's synthetic clips: both splits (the tokenizer job validates on val)


def _argv(name: str, replace: dict[str, str], extra: list[str]) -> tuple[object, list[str]]:
    """A manifest's command and its arguments: ``replace`` maps a value (a mounted path, the preset) to the
    test's; ``extra`` flags come last (an explicit flag wins)."""
    module, argv = _entrypoint(_load(name))
    command, argv = _command(module, argv)
    return command, [replace.get(a, a) for a in argv] + extra


def _shrunk_config(name: str, path: str, changes: dict) -> str:
    from gaia2.config.base import deep_merge

    with open(os.path.join(CLUSTER, name)) as f:
        values = yaml.safe_load(f)
    values.pop("preset", None)
    with open(path, "w") as f:
        yaml.safe_dump(deep_merge(values, changes), f)
    return path


@pytest.fixture(scope="module")
def data_bucket(s3_server, synth_clips, tmp_path_factory):
    """The clip drop the build manifest reads: ``s3://gaia2-data/clips/manifest.parquet`` with the videos
    beside it (paths relative to the manifest)."""
    from pipelines.shards.sources import write_manifest
    from tests.test_shards_storage import upload_tree

    bucket = s3_server.bucket("gaia2-data")
    local = tmp_path_factory.mktemp("drop") / "clips"
    for name in sorted(os.listdir(synth_clips))[:CLIPS]:
        shutil.copytree(os.path.join(synth_clips, name), local / name)
    write_manifest(str(local), str(local / "manifest.parquet"))
    upload_tree(str(local), f"{bucket}/clips")
    return bucket


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The jobs' local MLflow store and scratch (the manifests leave --workdir to GAIA2_WORKDIR)."""
    work = tmp_path_factory.mktemp("cluster-work")
    previous = os.environ.get("GAIA2_WORKDIR")
    os.environ["GAIA2_WORKDIR"] = str(work)
    yield str(work)
    if previous is None:
        os.environ.pop("GAIA2_WORKDIR", None)
    else:
        os.environ["GAIA2_WORKDIR"] = previous


@pytest.fixture(scope="module")
def built(ray_session, data_bucket, workdir, clip_model, tmp_path_factory, s3_server):
    """cluster/rayjob-build-shards.yaml's command: s3://gaia2-data/clips/manifest.parquet -> s3://gaia2-data/shards/v1."""
    config = _shrunk_config("shards-config.yaml", str(tmp_path_factory.mktemp("cfg") / "shards.yaml"), {
        # The tiny tokenizer's clips: 24 frames at 32 x 64.
        "window": {"frames": 24, "hop": 8}, "image": {"height": 32, "width": 64},
        "balance": {"min_stride_s": 0.3, "keys": ["country", "weather", "time_of_day"]},
        "detection": {"kind": "ground_truth", "checkpoint": None, "max_agents": 4, "num_gpus": 0, "concurrency": 1},
        "embedding": {"clip_path": clip_model, "num_gpus": 0, "concurrency": 1},
        "split": {"geofences": None}, "shards": {"target_mb": 0.5}})
    command, argv = _argv("rayjob-build-shards.yaml", {"paper": "tiny", "/mnt/config/shards.yaml": config}, [])
    assert "s3://gaia2-data/clips/manifest.parquet" in argv and "s3://gaia2-data/shards/v1" in argv
    code = command.main(argv)
    if code != 0 and storage.exists("s3://gaia2-data/shards/v1/rejects.parquet"):
        with storage.open_input("s3://gaia2-data/shards/v1/rejects.parquet") as f:
            rejects = pq.read_table(f).to_pylist()
        pytest.fail(f"the build failed; its first rejects: {[(r['reason'], r['detail']) for r in rejects[:3]]}")
    assert code == 0
    return "s3://gaia2-data/shards/v1"


def test_the_build_manifest_builds_from_and_into_object_storage(built, s3_server):
    keys = s3_server.keys("gaia2-data", "shards/v1/")
    assert [k for k in keys if k.startswith("shards/v1/train/shard-") and k.endswith(".tar")]
    assert {"shards/v1/manifest.parquet", "shards/v1/rejects.parquet", "shards/v1/report.json",
            "shards/v1/build.json"} <= set(keys)
    with storage.open_input(f"{built}/manifest.parquet") as f:
        manifest = pq.read_table(f)
    assert manifest.num_rows > 0 and set(manifest.column("split").to_pylist()) <= {"train", "val"}
    assert not os.path.exists("s3:")   # nothing written locally under a name made of the URI


def test_the_encode_manifest_encodes_object_storage_shards_into_object_storage(built, workdir, tmp_path_factory,
                                                                               s3_server):
    import torch

    from gaia2.tokenizer import Tokenizer, tiny
    from gaia2.tokenizer.export import save_tokenizer
    from tests.test_encode_latents import register_tokenizer

    torch.manual_seed(0)
    tok = save_tokenizer(str(tmp_path_factory.mktemp("tok") / "tiny"), Tokenizer(tiny()))
    assert register_tokenizer(tok, workdir, "gaia2-tokenizer-paper") == "models:/gaia2-tokenizer-paper@candidate"
    command, argv = _argv("rayjob-encode-latents.yaml", {}, ["--num-gpus", "0", "--concurrency", "1"])
    assert "s3://gaia2-data/shards/v1" in argv and "s3://gaia2-data/latents/v1" in argv
    assert command.main(argv) == 0
    keys = set(s3_server.keys("gaia2-data", "latents/v1/"))
    assert {"latents/v1/manifest.parquet", "latents/v1/latent_stats.json", "latents/v1/latents.json",
            "latents/v1/encode.json"} <= keys
    assert [k for k in keys if k.endswith(".tar")]
    assert not [k for k in keys if k.endswith(storage.PARTIAL) or "/_staging/" in k]


def test_the_tokenizer_manifest_trains_on_object_storage_shards_with_checkpoints_there(built, workdir, tmp_path,
                                                                                       s3_server):
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone

    s3_server.bucket("gaia2-checkpoints")
    save_random_lpips_backbone(str(tmp_path / "torch"))
    dino = save_random_dinov2(str(tmp_path / "dino"))
    config = _shrunk_config("tokenizer-config.yaml", str(tmp_path / "tokenizer.yaml"), {
        "model": {"dim": 32, "heads": 2},
        "workers": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 0.5, "max_failures": 1},
        "data": {"batch_size": 2, "shuffle_buffer": 8, "read_cpus": 0.25, "read_batch": 2, "val_samples": 4},
        "schedule": {"steps": 4, "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2, "val_every": 100,
                     "preview_clips": 2},
        "gan": {"steps": 0}})
    command, argv = _argv("rayjob-train-tokenizer.yaml", {
        "paper": "tiny", "/mnt/config/tokenizer.yaml": config, "/models/dinov2-large": dino,
        "/models/torch": str(tmp_path / "torch")}, [])
    assert "s3://gaia2-data/shards/v1" in argv and "s3://gaia2-checkpoints" in argv
    assert command.main(argv) == 0
    keys = s3_server.keys("gaia2-checkpoints", "tokenizer-paper/")
    assert [k for k in keys if "/checkpoint-" in k], keys[:10]
