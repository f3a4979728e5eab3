"""Evaluation of generated video: what a clip shows, measured from its frames alone (pure numpy / OpenCV).

So far: ``ego_motion``, the apparent ego speed and yaw rate of multi-camera video (per clip and per chunk of
frames), and the two figures action adherence compares them with: rank correlation and sign agreement;
``frechet``, the Fréchet distance of two feature sets with a bootstrap interval; ``fvmd``, the Fréchet Video
Motion Distance over tracked keypoints (pluggable tracker, pyramidal Lucas-Kanade by default).
"""

from gaia2.evaluation.ego_motion import (CameraCalibration, EgoMotionConfig, EgoMotionEstimate, estimate_ego_motion,
                                         rank_correlation, sign_agreement)

__all__ = ["CameraCalibration", "EgoMotionConfig", "EgoMotionEstimate", "estimate_ego_motion", "rank_correlation",
           "sign_agreement"]
