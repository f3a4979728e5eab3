"""Trained models in the MLflow registry: logged, registered with an alias, and resolved back to a directory.

A registered model is an MLflow pyfunc whose data is the export directory (``config.json`` +
``model.safetensors``, ``gaia2.export``) and whose loader is this module (``loader_module``): loading it
imports installed code and reads safetensors, so nothing in the registry is unpickled or executed. Every
job addresses a model the same way: a local export directory, or an MLflow URI (``models:/name@alias``,
``models:/name/3``, ``runs:/<id>/<artifact>``) that ``resolve_model_uri`` downloads.

    model = mlflow.pyfunc.load_model("models:/gaia2-tokenizer-tiny@candidate")
    latents = model.predict(clips)              # uint8 (B, T, H, W, 3) -> latent means (B, L, T/8, h, w)
"""

from __future__ import annotations

import os
from typing import Any

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
