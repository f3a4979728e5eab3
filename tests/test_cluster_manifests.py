"""Cluster manifests: they parse, their RayJobs run job modules that exist with flags those jobs accept,
their pods mount what they name, and the config files they mount validate and fit the cluster they ask for.

No Ray and no Kubernetes: the entrypoints are parsed with each job's own argument parser, the configs
built with the same functions the jobs call.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import shlex

import pytest
import yaml

CLUSTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster")
# What the RayJobs mount from ConfigMaps, and the repository file each ConfigMap is created from
# (`kubectl create configmap ... --from-file=<name>=cluster/<file>`).
MOUNTED_CONFIGS = {"/mnt/config/shards.yaml": "shards-config.yaml",
                   "/mnt/config/tokenizer.yaml": "tokenizer-config.yaml"}
RAYJOBS = ("rayjob-build-shards.yaml", "rayjob-train-tokenizer.yaml", "rayjob-encode-latents.yaml")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad entrypoint fails the test with argparse's message."""

    def error(self, message: str):
        raise ValueError(f"{self.prog}: {message}")


def _load(name: str) -> dict:
    with open(os.path.join(CLUSTER, name)) as f:
        return yaml.safe_load(f)


def _pods(job: dict) -> dict[str, dict]:
    """{"head" | group name: pod spec} of a RayJob's cluster."""
    spec = job["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


def _gpus(job: dict) -> int:
    """GPUs of the whole cluster at its configured replica counts."""
    total = 0
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        total += group["replicas"] * int(limits.get("nvidia.com/gpu", 0))
    return total


def _entrypoint(job: dict) -> tuple[str, list[str]]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs."), argv[:3]
    return argv[2], argv[3:]


def _command(module: str, argv: list[str]):
    """The job's ``Command`` and the arguments it parses (``jobs.train`` takes the model's name first)."""
    if module == "jobs.train":
        from jobs.specs import SPECS
        from jobs.train_driver import command

        assert argv and argv[0] in SPECS, argv[:1]
        return command(SPECS[argv[0]]), argv[1:]
    return importlib.import_module(module).COMMAND, argv   # raises if the module is missing or does not import


def _job_args(name: str) -> tuple[object, argparse.Namespace]:
    """(the job's Command, its parsed entrypoint arguments), ``--config`` pointing at the repository's file."""
    module, argv = _entrypoint(_load(name))
    command, argv = _command(module, argv)
    parser = _Parser(prog=module)
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        args.config = os.path.join(CLUSTER, MOUNTED_CONFIGS[args.config])
    return command, args


def test_every_manifest_parses():
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CLUSTER, "*.yaml")))
    assert set(RAYJOBS) | set(MOUNTED_CONFIGS.values()) | {"runtime-env.yaml"} <= set(files)
    for name in files:
        doc = _load(name)
        assert isinstance(doc, dict) and doc, name
        if doc.get("kind") == "RayJob":
            assert name in RAYJOBS, f"{name}: a RayJob this test does not check"


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_runs_an_existing_job_with_flags_it_accepts(name):
    job = _load(name)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    module, argv = _entrypoint(job)
    command, argv = _command(module, argv)
    parser = _Parser(prog=module)
    command.add_arguments(parser)
    parser.parse_args(argv)   # an unknown flag raises

    # The runtime env agrees with cluster/runtime-env.yaml on every variable both set, MLflow's included.
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    shared = _load("runtime-env.yaml")["env_vars"]
    assert "MLFLOW_TRACKING_URI" in env
    assert {k: v for k, v in env.items() if k in shared} == {k: shared[k] for k in env if k in shared}

    pods = _pods(job)
    for group, pod in pods.items():
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= volumes, f"{name} {group}: mounts {sorted(mounts - volumes)} name no volume"
    # The driver runs on the head and checks its paths first (shards, models, config): all mounted there.
    head_mounts = [m["mountPath"] for c in pods["head"]["containers"] for m in c.get("volumeMounts", [])]
    for value in argv:
        if value.startswith("/") and not value.startswith("/dev/"):
            assert any(value == p or value.startswith(p.rstrip("/") + "/") for p in head_mounts), \
                f"{name}: {value} is not under a volume the head mounts ({head_mounts})"


def test_shard_build_config_validates_and_fits_its_gpus():
    from gaia2.config.shards import load_shard_config

    _, args = _job_args("rayjob-build-shards.yaml")
    assert args.config.endswith("shards-config.yaml")
    cfg = load_shard_config(preset=args.preset, path=args.config)
    assert cfg.preset == "paper" and cfg.window.frames == 48
    # The detector and CLIP actor pools must fit the GPU group, or the build waits on GPUs forever.
    needed = (cfg.detection.concurrency * cfg.detection.num_gpus
              + cfg.embedding.concurrency * cfg.embedding.num_gpus)
    assert 0 < needed <= _gpus(_load("rayjob-build-shards.yaml"))


def test_tokenizer_config_validates_and_fills_the_gpu_pods():
    from gaia2.tokenizer.train_config import train_config

    # As the brief's check: the file alone on the paper preset, DINO's path given separately.
    cfg = train_config("paper", path=os.path.join(CLUSTER, "tokenizer-config.yaml"),
                       overrides={"loss": {"dino_path": "/x"}})
    assert cfg.workers.num_workers == 128 and cfg.data.read_batch == 2

    job, args = _job_args("rayjob-train-tokenizer.yaml")
    cfg = job.config(args)   # preset -> the mounted file -> the entrypoint's flags
    assert cfg.preset == "paper" and cfg.loss.dino_path == "/models/dinov2-large"
    assert cfg.data.shards == "/mnt/data/shards" and cfg.workers.use_gpu
    manifest = _load("rayjob-train-tokenizer.yaml")
    assert _gpus(manifest) == cfg.workers.num_workers   # one worker per GPU, none idle
    for group in manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        gpus = int(group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
        if gpus:
            # Each GPU pod's Ray CPUs hold its workers' cpus_per_worker, or workers cannot be placed.
            assert float(group["rayStartParams"]["num-cpus"]) >= gpus * cfg.workers.cpus_per_worker
    # The shard build's windows are long enough for the tokenizer's clips (preflight checks this too).
    shards = _load("shards-config.yaml")
    assert shards["window"]["frames"] >= cfg.model.frames


def test_encode_latents_config_validates_and_fits_its_gpus():
    from gaia2.tokenizer.config import paper

    job, args = _job_args("rayjob-encode-latents.yaml")
    cfg = job.config(args)
    assert (cfg.num_gpus, cfg.concurrency, cfg.batch_size) == (1, 8, 8)
    assert 0 < cfg.num_gpus * cfg.concurrency <= _gpus(_load("rayjob-encode-latents.yaml"))
    assert cfg.job.tokenizer == "models:/gaia2-tokenizer-paper@candidate"
    # The encoder maps each temporal_factor frames to one latent: the windows must divide evenly.
    assert _load("shards-config.yaml")["window"]["frames"] % paper().temporal_factor == 0
