"""The window stage for labelled sources: decode -> ground-truth agents -> encode videos, one call.

Ray fuses consecutive task stages into one task, yet still turns each stage's output batch into an
Arrow block and back; for a batch of decoded windows (tens of MB of frames) those copies were a
large part of the stage's cost. Ground-truth detection holds no model, so the three stages run as
one function and the frames never leave numpy. A detector network keeps its own actor stage.
"""

from __future__ import annotations

import numpy as np

from gaia2.config.shards import ShardBuildConfig
from pipelines.shards.decode import DecodeWindows
from pipelines.shards.detect import DetectAgents
from pipelines.shards.encode import EncodeVideos


def window_batch(batch: dict[str, np.ndarray], config_json: str, detect_args: dict) -> dict[str, np.ndarray]:
    """Each stage retries transient errors per ``retry`` of the config (pipelines/retry.py)."""
    retry = ShardBuildConfig.model_validate_json(config_json).retry
    batch = DecodeWindows(config_json)(batch)
    batch = DetectAgents(**{**detect_args, "retry": retry})(batch)
    return EncodeVideos(config_json)(batch)
