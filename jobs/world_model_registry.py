"""The trained world model as an MLflow model: a pyfunc whose ``artifacts/world_model`` is the
``save_world_model`` directory, registered as ``gaia2-world-model-<preset>`` with the alias ``candidate``."""

from __future__ import annotations

import mlflow.pyfunc

ALIAS = "candidate"


class WorldModelPyfunc(mlflow.pyfunc.PythonModel):
    """``predict``: a dict of the forward pass's inputs as numpy arrays (x, tau, timestamps, the conditioning
    keys, intrinsics / extrinsics / distortion) -> the predicted velocity (B, T, N, L, H, W)."""

    # Inputs are a dict of arrays: MLflow's type-hint validation has nothing to check, and without this
    # flag it warns at class creation that predict lacks type hints.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from gaia2.world_model.export import load_world_model

        self.model = load_world_model(context.artifacts["world_model"])

    def predict(self, context, model_input, params=None):
        import torch

        from gaia2.world_model.trainer import CAMERA_KEYS, COND_KEYS

        t = {k: torch.as_tensor(v) for k, v in model_input.items()}
        with torch.no_grad():
            v = self.model(t["x"].float(), t["tau"].float(), {k: t[k] for k in COND_KEYS if k in t},
                           t["timestamps"].float(), {k: t[k].float() for k in CAMERA_KEYS})
        return v.numpy()


def log_and_register(export_dir: str, name: str) -> int:
    from mlflow import MlflowClient

    info = mlflow.pyfunc.log_model(name="world_model", python_model=WorldModelPyfunc(),
                                   artifacts={"world_model": export_dir}, registered_model_name=name,
                                   pip_requirements=["torch", "safetensors", "numpy"])
    version = int(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, ALIAS, version)
    return version
