"""3D agent detection and the 13 per-slot agent features of the shards.

``GroundTruthDetector`` passes labelled boxes through; ``gaia2.detection.mono3d.NetworkDetector``
runs the reference monocular network (imported on demand: it needs torch).
"""

from __future__ import annotations

from gaia2.detection.base import BOX_DIM, Boxes3D, DetectionError, Detector3D, check_inputs
from gaia2.detection.features import FEATURE_DIM, agent_features, camera_heading
from gaia2.detection.ground_truth import GroundTruthDetector

DETECTOR_KINDS = ("ground_truth", "network")


def build_detector(kind: str, checkpoint: str | None = None, score_threshold: float = 0.3) -> Detector3D:
    """The detector of ``DetectionConfig.kind``; ``network`` loads ``checkpoint`` (a directory)."""
    if kind == "ground_truth":
        return GroundTruthDetector()
    if kind == "network":
        if not checkpoint:
            raise ValueError("detection.checkpoint: required when detection.kind is 'network'")
        from gaia2.detection.mono3d import NetworkDetector
        return NetworkDetector(checkpoint, score_threshold=score_threshold)
    raise ValueError(f"detection.kind: unknown detector {kind!r}; choose one of {list(DETECTOR_KINDS)}")


__all__ = ["BOX_DIM", "Boxes3D", "DETECTOR_KINDS", "DetectionError", "Detector3D", "FEATURE_DIM",
           "GroundTruthDetector", "agent_features", "build_detector", "camera_heading", "check_inputs"]
