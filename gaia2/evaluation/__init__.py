"""Evaluation of generated video: what a clip shows, measured from its frames alone.

So far: ``ego_motion``, the apparent ego speed and yaw rate of multi-camera video (per clip and per chunk of
frames), and the two figures action adherence compares them with: rank correlation and sign agreement (pure numpy /
OpenCV); ``frechet``, the Fréchet distance of two feature sets with a bootstrap interval; ``fvmd``, the Fréchet Video
Motion Distance over tracked keypoints (pluggable tracker: pyramidal Lucas-Kanade by default, or a TorchScript
point tracker from a local path); ``features``, the feature networks of FDD (DINOv2), FID (Inception-v3) and FVD
(I3D), loaded from local paths only, with tiny random stand-ins of the same classes for tests (torch; import
``gaia2.evaluation.features`` itself, this package does not, to stay light).
"""

from gaia2.evaluation.ego_motion import (CameraCalibration, EgoMotionConfig, EgoMotionEstimate, estimate_ego_motion,
                                         rank_correlation, sign_agreement)

__all__ = ["CameraCalibration", "EgoMotionConfig", "EgoMotionEstimate", "estimate_ego_motion", "rank_correlation",
           "sign_agreement"]
