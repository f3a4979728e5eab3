"""The trained tokenizer as an MLflow model: logged, registered, aliased, and resolved back to a directory.

The registered artifact is a pyfunc model whose ``artifacts/tokenizer`` is the ``save_tokenizer``
directory (config.json + model.safetensors of the EMA weights), so any job can use either
``mlflow.pyfunc.load_model`` (``predict``: uint8 clips -> latent means) or the plain directory.
"""

from __future__ import annotations

import os

import mlflow.pyfunc


class TokenizerPyfunc(mlflow.pyfunc.PythonModel):
    """``predict``: uint8 clips (B, T, H, W, 3), T a multiple of the temporal factor -> latent means
    (B, L, T/8, H/s, W/s) as float32 numpy."""

    # The input is a raw uint8 array: MLflow's type-hint validation has nothing to check, and without
    # this flag it warns at class creation that predict lacks type hints.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from gaia2.tokenizer.export import load_tokenizer

        self.model = load_tokenizer(context.artifacts["tokenizer"])

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        from gaia2.tokenizer.clips import to_model_input

        with torch.no_grad():
            mean, _ = self.model.encode(to_model_input(np.asarray(model_input, dtype=np.uint8)))
        return mean.numpy()


ALIAS = "candidate"   # every newly trained model; promoting one further is a human decision


def log_and_register(export_dir: str, name: str) -> int:
    """Log ``export_dir`` as the active run's ``tokenizer`` model, register it as ``name`` with alias
    ``candidate``; returns the new version."""
    from mlflow import MlflowClient

    info = mlflow.pyfunc.log_model(name="tokenizer", python_model=TokenizerPyfunc(),
                                   artifacts={"tokenizer": export_dir}, registered_model_name=name,
                                   pip_requirements=["torch", "safetensors", "numpy"])
    version = int(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, ALIAS, version)
    return version


def resolve_tokenizer_uri(uri: str, download_to: str | None = None) -> str:
    """A local ``save_tokenizer`` directory, or an MLflow ``models:/name/version`` / ``models:/name@alias``
    / ``runs:/id/tokenizer`` URI (downloaded with the configured tracking URI, into ``download_to`` when
    given, else a temporary directory) -> a local directory."""
    from urllib.parse import urlparse

    if urlparse(uri).scheme in ("", "file"):
        return uri.removeprefix("file://")
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=download_to)
    inner = os.path.join(local, "artifacts", "tokenizer")
    return inner if os.path.isdir(inner) else local
