"""Cluster manifests: they parse, their RayJobs run job modules that exist with flags those jobs accept,
their pods mount what they name, and the config files they mount validate and fit the cluster they ask for.

No Ray and no Kubernetes: the entrypoints are parsed with each job's own argument parser, the configs
built with the same functions the jobs call.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import inspect
import os
import shlex
import types
import typing

import pytest
import yaml

CLUSTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster")
# What the RayJobs mount from ConfigMaps, and the repository file each ConfigMap is created from
# (`kubectl create configmap ... --from-file=<name>=cluster/<file>`).
MOUNTED_CONFIGS = {"/mnt/config/shards.yaml": "shards-config.yaml",
                   "/mnt/config/tokenizer.yaml": "tokenizer-config.yaml",
                   "/mnt/config/serve.yaml": "serve.yaml"}
RAYJOBS = ("rayjob-build-shards.yaml", "rayjob-train-tokenizer.yaml", "rayjob-encode-latents.yaml",
           "rayjob-evaluate.yaml")
# The generation service: Serve's config (`serve deploy`), and the RayService carrying the same as serveConfigV2.
SERVE_CONFIG = "serve-config.yaml"
RAYSERVICE = "rayservice.yaml"


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
    assert set(RAYJOBS) | set(MOUNTED_CONFIGS.values()) | {"runtime-env.yaml", SERVE_CONFIG, RAYSERVICE} <= set(files)
    for name in files:
        doc = _load(name)
        assert isinstance(doc, dict) and doc, name
        if doc.get("kind") == "RayJob":
            assert name in RAYJOBS, f"{name}: a RayJob this test does not check"
        if doc.get("kind") == "RayService":
            assert name == RAYSERVICE, f"{name}: a RayService this test does not check"


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
    assert cfg.data.shards == "s3://gaia2-data/shards/v1" and cfg.workers.use_gpu
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


def test_evaluate_config_validates_and_fits_its_gpus(tmp_path, s3_server):
    """The evaluation job's arguments build the paper protocol (every metric, n = 1024, a promotion by FDD) once its
    mounted paths and its object-storage inputs exist, and its generator and measuring actor pools each fit the
    cluster's GPUs."""
    from gaia2 import storage

    s3_server.bucket("gaia2-data")
    for prefix in ("shards/v1", "latents/v1"):   # on the session's S3 server: the config checks they are there
        if not storage.list_files(f"s3://gaia2-data/{prefix}"):
            storage.write_text(f"s3://gaia2-data/{prefix}/manifest.parquet", "placeholder")
    job, args = _job_args("rayjob-evaluate.yaml")
    root = tmp_path / "mnt"
    mapped = {}
    for name in vars(args):
        value = getattr(args, name)
        if isinstance(value, str) and value.startswith("/mnt/"):
            local = root / value.lstrip("/")
            (local.parent if "." in local.name else local).mkdir(parents=True, exist_ok=True)
            if "." in local.name:
                local.touch()
            mapped[name] = str(local)
    for name, value in mapped.items():
        setattr(args, name, value)
    cfg = job.config(args)
    assert cfg.preset == "paper" and cfg.job.samples == 1024 and cfg.job.sampler_steps == 50
    assert cfg.job.metrics.split(",") == ["fdd", "fid", "fvd", "fvmd", "iou", "action", "loss"]
    assert (cfg.job.promote, cfg.job.by) == ("champion", "fdd")
    gpus = _gpus(_load("rayjob-evaluate.yaml"))
    assert 0 < cfg.generation.num_gpus * cfg.generation.concurrency <= gpus
    assert 0 < cfg.measure.num_gpus * cfg.measure.concurrency <= gpus


def test_encode_latents_config_validates_and_fits_its_gpus():
    from gaia2.tokenizer.config import paper

    job, args = _job_args("rayjob-encode-latents.yaml")
    cfg = job.config(args)
    assert (cfg.num_gpus, cfg.concurrency, cfg.batch_size) == (1, 8, 8)
    assert 0 < cfg.num_gpus * cfg.concurrency <= _gpus(_load("rayjob-encode-latents.yaml"))
    assert cfg.job.tokenizer == "models:/gaia2-tokenizer-paper@candidate"
    # The encoder maps each temporal_factor frames to one latent: the windows must divide evenly.
    assert _load("shards-config.yaml")["window"]["frames"] % paper().temporal_factor == 0


# ------------------------------------------------------------------------------ the generation service (Serve)
def _unknown_keys(model: type, data, where: str) -> list[str]:
    """Keys of ``data`` that the pydantic ``model`` (one of Serve's schema classes) has no field for, at every
    level: Serve's schemas ignore unknown keys, so a misspelt option would be dropped without a word."""
    from pydantic import BaseModel

    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    names = {f.alias or n for n, f in fields.items()} | set(fields)
    out = [f"{where}.{k}" for k in data if k not in names]
    for name, field in fields.items():
        value = data.get(field.alias or name, data.get(name))
        if value is None:
            continue
        for kind in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                out += _unknown_keys(kind, value, f"{where}.{name}")
            for inner in typing.get_args(kind):   # List[Model]
                if isinstance(inner, type) and issubclass(inner, BaseModel) and isinstance(value, list):
                    for i, item in enumerate(value):
                        out += _unknown_keys(inner, item, f"{where}.{name}[{i}]")
    return out


def _service_pods(service: dict) -> dict[str, tuple[dict, int, dict]]:
    """{"head" | group name: (pod spec, pods, rayStartParams)} of a RayService's cluster."""
    spec = service["spec"]["rayClusterConfig"]
    head = spec["headGroupSpec"]
    pods = {"head": (head["template"]["spec"], 1, head.get("rayStartParams") or {})}
    pods.update({g["groupName"]: (g["template"]["spec"], g["replicas"], g.get("rayStartParams") or {})
                 for g in spec["workerGroupSpecs"]})
    return pods


def _ray_resources(pod: dict, params: dict) -> tuple[float, float]:
    """(CPUs, GPUs) the pod's raylet offers: rayStartParams, else the container's limits (as KubeRay sets them)."""
    limits = pod["containers"][0]["resources"]["limits"]
    cpus = float(params.get("num-cpus", limits.get("cpu", 0)))
    gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return cpus, gpus


def _mounted(path: str, pod: dict) -> bool:
    mounts = [m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])]
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _place(nodes: list[list[float]], replicas: list[tuple[str, float, float]]) -> list[str]:
    """First fit of (name, CPUs, GPUs) replicas onto nodes' free [CPUs, GPUs] (changed in place); the names of
    those that fit nowhere."""
    left = []
    for name, cpus, gpus in replicas:
        for node in nodes:
            if node[0] >= cpus and node[1] >= gpus:
                node[0] -= cpus
                node[1] -= gpus
                break
        else:
            left.append(name)
    return left


def _build_serve_app(app: dict, tmp_path, monkeypatch):
    """Serve's build of one application of a Serve config, as its build task does it (ray 2.60,
    ray/serve/_private/application_state.py build_serve_application): the import path imported, the builder
    called with the args, the application built into deployments. The args' paths on the cluster's volumes
    become the repository's file (the mounted config) and an empty directory (the dataset).

    Returns (the ServeConfig build_app was given, {deployment name: Serve's Deployment})."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app as serve_build_app

    import jobs.serve.app as serve_app

    args = dict(app["args"])
    args["config"] = os.path.join(CLUSTER, MOUNTED_CONFIGS[args["config"]])
    if args.get("dataset") and "://" not in args["dataset"]:
        args["dataset"] = str(tmp_path)
    seen = []
    real = serve_app.build_app
    monkeypatch.setattr(serve_app, "build_app", lambda cfg: seen.append(cfg) or real(cfg))
    builder = import_attr(app["import_path"])
    assert isinstance(builder, types.FunctionType) and len(inspect.signature(builder).parameters) == 1
    application = call_user_app_builder_with_args_if_necessary(builder, args)
    built = serve_build_app(application, name=app["name"])
    built.validate_single_fastapi_ingress()
    assert len(seen) == 1
    return seen[0], {d.name: d for d in built.deployments}


def test_serve_config_validates_against_serves_schema_and_builds(tmp_path, monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    doc = _load(SERVE_CONFIG)
    deploy = ServeDeploySchema.model_validate(doc)   # what `serve deploy` and KubeRay's submission validate
    assert _unknown_keys(ServeDeploySchema, doc, "serve-config") == []
    assert [a.name for a in deploy.applications] == ["gaia2"]
    app = doc["applications"][0]
    assert app["import_path"] == "jobs.serve.app:build" and app["route_prefix"] == "/"
    # Replicas and resources come from the service config (build_app); a `deployments:` override would
    # replace the Generator's user_config (its models) and leave cluster/serve.yaml saying something else.
    assert "deployments" not in app
    # The image holds the code: no working_dir; env_vars agree with cluster/runtime-env.yaml, MLflow's included.
    assert set(app["runtime_env"]) == {"env_vars"}
    env, shared = app["runtime_env"]["env_vars"], _load("runtime-env.yaml")["env_vars"]
    assert "MLFLOW_TRACKING_URI" in env
    assert {k: v for k, v in env.items() if k in shared} == {k: shared[k] for k in env if k in shared}
    assert set(app["args"]) <= {"config", "preset", "world_model", "tokenizer", "clip", "dataset", "results"}

    cfg, deployments = _build_serve_app(app, tmp_path, monkeypatch)
    assert cfg.preset == "paper"
    assert cfg.models.world_model == "models:/gaia2-world-model-paper@champion"
    assert cfg.models.tokenizer == "models:/gaia2-tokenizer-paper@champion"
    assert cfg.results.uri.startswith("s3://") and cfg.auth.tokens_file
    assert cfg.generator.device == cfg.decoder.device == "cuda" and cfg.generator.precision == "bf16"
    assert set(deployments) == {"Ingress", "Generator", "Decoder"}
    for name, section in (("Ingress", cfg.ingress), ("Generator", cfg.generator), ("Decoder", cfg.decoder)):
        d = deployments[name]
        assert d.num_replicas == section.num_replicas, name
        assert d.ray_actor_options.get("num_gpus", 0) == getattr(section, "num_gpus", 0), name
    # The service config agrees with what Serve is told (the name, the route, the port), and a ?wait= request
    # ends before the proxy's timeout does.
    assert (cfg.http.app_name, cfg.http.route_prefix, cfg.http.port) == (app["name"], app["route_prefix"],
                                                                      deploy.http_options.port)
    assert deploy.http_options.request_timeout_s > cfg.limits.max_wait_s


def test_rayservice_serves_the_serve_config_on_a_cluster_that_fits_it(tmp_path, monkeypatch):
    import ray

    service = _load(RAYSERVICE)
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    # One document in two places: the RayService's serveConfigV2 is cluster/serve-config.yaml.
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve_config == _load(SERVE_CONFIG)
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__

    pods = _service_pods(service)
    job_images = {c["image"] for job in RAYJOBS for pod in _pods(_load(job)).values() for c in pod["containers"]}
    port = serve_config["http_options"]["port"]
    for group, (pod, _, _) in pods.items():
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert {container["image"]} == job_images, group   # the RayJobs' image
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= volumes, f"{group}: mounts {sorted(mounts - volumes)} name no volume"
            serve_ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "serve"]
            assert serve_ports == [port], f"{group}: Serve's HTTP port is {port}, the pod's 'serve' port {serve_ports}"
    head_pod, _, head_params = pods["head"]
    assert _ray_resources(head_pod, head_params) == (0.0, 0.0)   # no replica on the head

    app = serve_config["applications"][0]
    cfg, deployments = _build_serve_app(app, tmp_path, monkeypatch)
    nodes = {g: _ray_resources(pod, params) for g, (pod, _, params) in pods.items()}
    gpus = sum(nodes[g][1] * n for g, (_, n, _) in pods.items())
    needed = (cfg.generator.num_replicas * cfg.generator.num_gpus + cfg.decoder.num_replicas * cfg.decoder.num_gpus)
    assert 0 < needed <= gpus, f"the generator and decoder need {needed} GPUs, the cluster has {gpus}"

    # Every replica finds a node, even when the ingress replicas are placed first onto the GPU pods.
    def replicas(names):
        return [(n, float(deployments[n].ray_actor_options.get("num_cpus", 1)),
                 float(deployments[n].ray_actor_options.get("num_gpus", 0)))
                for n in names for _ in range(deployments[n].num_replicas)]
    gpu_first = replicas(["Generator", "Decoder"]) + replicas(["Ingress"])
    ingress_first = replicas(["Ingress"]) + replicas(["Generator", "Decoder"])
    for order in (gpu_first, ingress_first):
        free = [list(nodes[g]) for g, (_, n, _) in sorted(pods.items(), key=lambda kv: -nodes[kv[0]][1])
                for _ in range(n)]
        left = _place(free, order)
        assert left == [], f"replicas that fit no pod: {left}"

    # What each reads is mounted wherever it may run. The builder task (0 CPUs) may run on any node: the
    # service config and the dataset it checks; the ingress (any pod with CPUs for it): the dataset, the
    # tokens; the generator (the GPU pods): the dataset and CLIP.
    def can_run(name):
        opts = deployments[name].ray_actor_options
        return [g for g, (cpus, gpus) in nodes.items()
                if cpus >= opts.get("num_cpus", 1) and gpus >= opts.get("num_gpus", 0) and cpus > 0]
    needs = {app["args"]["config"]: list(pods), app["args"]["dataset"]: list(pods),
             cfg.auth.tokens_file: can_run("Ingress"), cfg.models.clip: can_run("Generator")}
    for path, groups in needs.items():
        assert path.startswith("/") and groups, path
        for group in groups:
            assert _mounted(path, pods[group][0]), f"{path} is not under a volume the {group} pods mount"
    assert can_run("Generator") == can_run("Decoder") == ["gpu"] and "cpu" in can_run("Ingress")
