"""Trained models in the MLflow registry: logged, registered with an alias, and resolved back to a directory.

A registered model is an MLflow pyfunc whose data is the export directory (``config.json`` +
``model.safetensors``, ``gaia2.export``) and whose loader is this module (``loader_module``): loading it
imports installed code and reads safetensors, so nothing in the registry is unpickled or executed. Every
job addresses a model the same way: a local export directory, or an MLflow URI (``models:/name@alias``,
``models:/name/3``, ``runs:/<id>/<artifact>``) that ``resolve_model_uri`` downloads.

    model = mlflow.pyfunc.load_model("models:/gaia2-tokenizer-tiny@candidate")
    latents = model.predict(clips)              # uint8 (B, T, H, W, 3) -> latent means (B, L, T/8, h, w)

A tokenizer's version also carries the measured statistics of its latents as tags (``record_latent_stats``,
``latent_stats_of``), so whoever loads it normalises latents the way the world model was trained.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gaia2.flow.stats import LatentStats

ALIAS = "candidate"   # every newly trained model; promoting one further is a human decision
PIP_REQUIREMENTS = ["torch", "safetensors", "numpy"]


class ExportedModel:
    """What ``mlflow.pyfunc.load_model`` returns the ``predict`` of: the model of an export directory and the
    predict function of its kind (see ``jobs.specs``)."""

    def __init__(self, path: str) -> None:
        from gaia2.export import load_pretrained, read_meta
        from jobs.specs import spec_for_format

        self.spec = spec_for_format(read_meta(path)["format"])
        self.model = load_pretrained(path)

    def predict(self, model_input: Any, params: dict | None = None) -> Any:
        return self.spec.predict(self.model, model_input)


def _load_pyfunc(data_path: str) -> ExportedModel:
    """MLflow's entry point for ``loader_module="jobs.registry"``: the export directory -> the model."""
    return ExportedModel(data_path)


def log_and_register(export_dir: str, name: str, artifact: str) -> int:
    """Log ``export_dir`` as the active run's model ``artifact``, register it as ``name`` with the alias
    ``candidate``; returns the new version."""
    import mlflow
    from mlflow import MlflowClient

    info = mlflow.pyfunc.log_model(name=artifact, loader_module=__name__, data_path=export_dir,
                                   registered_model_name=name, pip_requirements=PIP_REQUIREMENTS)
    version = int(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, ALIAS, version)
    return version


def register_once(step: int, export_dir: str, name: str, artifact: str) -> int:
    """Register the model of ``step`` in the active run unless this run already did (a rerun of a finished
    job); returns the model version."""
    import mlflow

    done = mlflow.get_run(mlflow.active_run().info.run_id).data.tags
    if done.get("gaia2.registered_step") == str(step):
        return int(done["gaia2.registered_version"])
    version = log_and_register(export_dir, name, artifact)
    mlflow.set_tags({"gaia2.registered_step": str(step), "gaia2.registered_version": version})
    return version


def resolve_model_uri(uri: str, download_to: str | None = None) -> str:
    """A local export directory, or an MLflow model URI (downloaded with the configured tracking URI, into
    ``download_to`` when given, else a temporary directory) -> the local export directory. The export is
    found from the model's own MLmodel file and must lie inside what was downloaded."""
    from urllib.parse import urlparse

    import mlflow
    import yaml

    if urlparse(uri).scheme in ("", "file"):
        return uri.removeprefix("file://")
    local = os.path.realpath(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=download_to))
    mlmodel = os.path.join(local, "MLmodel")
    if not os.path.isfile(mlmodel):
        return local   # a plain artifact directory (runs:/<id>/<path> of an export)
    with open(mlmodel) as f:
        flavor = (yaml.safe_load(f) or {}).get("flavors", {}).get("python_function", {})
    data = os.path.realpath(os.path.join(local, str(flavor.get("data", ""))))
    if flavor.get("loader_module") != __name__ or not data.startswith(local + os.sep) or not os.path.isdir(data):
        raise ValueError(f"{uri}: not a gaia2 model (its MLmodel names loader {flavor.get('loader_module')!r} "
                         f"and data {flavor.get('data')!r})")
    return data


class ModelInputError(ValueError):
    """A model reference that cannot be used: a missing directory, an unknown registered model or version, an
    unsupported URI; names the model and why."""


# What writes each kind of model, named when a directory is not one of its kind.
SAVERS = {"tokenizer": "save_tokenizer", "world model": "save_world_model"}


def resolve_model(uri: str, workdir: str, what: str, download_to: str | None = None) -> str:
    """A model reference -> a local directory to load it from: a local path, a ``file://`` URI, or an MLflow model
    URI (``models:/gaia2-tokenizer-tiny@candidate``, ``models:/NAME/VERSION``, ``runs:/ID/tokenizer``) downloaded
    from the tracking store of ``workdir`` (or ``MLFLOW_TRACKING_URI``) into ``download_to`` (give a directory every
    node sees, e.g. under the job's output: Ray actors load the model from there). ``what`` ("tokenizer",
    "world model") names the model in errors (``ModelInputError``)."""
    from urllib.parse import urlparse

    saver = SAVERS.get(what, "save_pretrained")
    scheme = urlparse(uri).scheme
    if scheme in ("models", "runs"):
        import mlflow

        from jobs.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri(workdir))
        try:
            return resolve_model_uri(uri, download_to)
        except (mlflow.exceptions.MlflowException, ValueError) as err:   # ValueError: not a gaia2 model
            raise ModelInputError(f"{what} {uri!r}: {str(err).splitlines()[0]}") from None
    if scheme not in ("", "file"):
        raise ModelInputError(f"{what} {uri!r}: {scheme}: URIs are not supported; give a local directory written "
                              f"by {saver} or an MLflow models:/ or runs:/ URI")
    path = uri.removeprefix("file://")
    if not os.path.isdir(path):
        raise ModelInputError(f"{what} {uri!r}: not a directory (expected one written by {saver})")
    return os.path.abspath(path)


def registered_version(uri: str, workdir: str, what: str) -> str | None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> "models:/NAME/VERSION", the version the alias names
    now (so a job downloads and records on one version, even if the alias moves meanwhile); None for a directory
    or ``runs:/`` URI. Raises ``ModelInputError`` (naming ``what``) if the registry has no such version."""
    if not uri.startswith("models:/"):
        return None
    import mlflow

    from jobs.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(workdir))
    try:
        name, version = model_version_of(uri)
    except (mlflow.exceptions.MlflowException, ValueError) as err:
        raise ModelInputError(f"{what} {uri!r}: {str(err).splitlines()[0]}") from None
    return f"models:/{name}/{version}"


# Tags of a registered tokenizer version holding the statistics of its latents (gaia2.flow.stats); generation
# compares them with a world model's (gaia2.flow.stats.require_same) before pairing the two.
STATS_TAGS = {"mean": "gaia2.latent_mean", "std": "gaia2.latent_std", "count": "gaia2.latent_stats_count",
              "samples": "gaia2.latent_stats_samples", "source": "gaia2.latent_stats_source"}


def model_version_of(uri: str) -> tuple[str, str] | None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (NAME, VERSION) of the registered version it names
    now (the alias resolved with the configured tracking URI); None for anything else (a directory,
    ``runs:/...``). Raises ``MlflowException`` if the model, version or alias does not exist, ``ValueError``
    for another ``models:/`` form."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        return None
    path = uri.removeprefix("models:/").strip("/")
    client = MlflowClient()
    if "@" in path:
        name, alias = path.rsplit("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = path.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return name, str(client.get_model_version(name, version).version)


def record_latent_stats(uri: str, stats: "LatentStats") -> str | None:
    """Tag the registered version ``uri`` names with ``stats`` (``STATS_TAGS``: mean and std as JSON lists,
    exactly the floats of latent_stats.json); returns "models:/NAME/VERSION", or None when ``uri`` is not a
    registered model (nothing is recorded)."""
    import json

    from mlflow import MlflowClient

    version = model_version_of(uri)
    if version is None:
        return None
    values = {"mean": json.dumps(stats.mean), "std": json.dumps(stats.std), "count": str(stats.count),
              "samples": str(stats.samples), "source": stats.source}
    client = MlflowClient()
    for field, tag in STATS_TAGS.items():
        client.set_model_version_tag(*version, tag, values[field])
    return f"models:/{version[0]}/{version[1]}"


def latent_stats_of(uri: str) -> "LatentStats | None":
    """The latent statistics recorded on the registered version ``uri`` names; None when ``uri`` is not a
    registered model or its version has none. Raises ``LatentStatsError`` if its tags are malformed."""
    import json

    from mlflow import MlflowClient

    from gaia2.flow.stats import LatentStats, LatentStatsError

    version = model_version_of(uri)
    if version is None:
        return None
    tags = MlflowClient().get_model_version(*version).tags
    if STATS_TAGS["mean"] not in tags:
        return None
    try:
        values = {field: tags.get(tag) for field, tag in STATS_TAGS.items()}
        return LatentStats(mean=json.loads(values["mean"]), std=json.loads(values["std"]),
                           count=int(values["count"]), samples=int(values["samples"] or 0),
                           source=values["source"] or "")
    except (TypeError, ValueError) as err:   # json and pydantic errors are ValueErrors
        raise LatentStatsError(f"models:/{version[0]}/{version[1]}: tags {', '.join(STATS_TAGS.values())} are "
                               f"not valid latent statistics ({str(err).splitlines()[0]})") from None
