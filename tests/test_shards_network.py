"""The detector-network path of the build: a checkpoint loaded by an actor pool inside Ray Data."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory) -> str:
    import torch

    from gaia2.detection.mono3d import Mono3DConfig, MonoDetector3D

    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("models") / "mono3d")
    MonoDetector3D(Mono3DConfig(width=8, depth=1, top_k=8)).save_pretrained(path)
    return path


def test_build_with_a_detector_network(ray_session, synth_clips, clip_model, detector_checkpoint, tmp_path):
    import webdataset as wds

    from gaia2.config.shards import load_shard_config
    from pipelines.shards.build import build_shards

    source = tmp_path / "clips"
    for name in sorted(os.listdir(synth_clips))[:3]:   # one drive is enough
        shutil.copytree(os.path.join(synth_clips, name), source / name)
    cfg = load_shard_config("tiny", overrides={
        "window": {"frames": 16, "hop": 16}, "image": {"height": 32, "width": 64},
        "balance": {"min_stride_s": 0.0}, "embedding": {"clip_path": clip_model},
        # score 0: every decoded peak of the (random) network becomes a box, so features are exercised
        "detection": {"kind": "network", "checkpoint": detector_checkpoint, "score_threshold": 0.0,
                      "max_agents": 4, "batch_size": 2}})
    result = build_shards(str(source), str(tmp_path / "out"), cfg, log=lambda s: None)
    acc = result.report["accounting"]
    assert acc["windows_failed"] == 0 and acc["windows_written"] > 0
    n = with_boxes = 0
    for sample in wds.WebDataset(sorted(glob.glob(str(tmp_path / "out" / "*" / "*.tar"))), shardshuffle=False).decode():
        boxes, valid = sample["boxes.npy"], sample["boxes_valid.npy"]
        cams = len(sample["json"]["cameras"])
        assert boxes.shape == (16, cams, 4, 13) and valid.shape == (16, cams, 4)
        assert np.all(boxes[~valid] == 0)
        with_boxes += bool(valid.any())
        n += 1
    assert n == acc["windows_written"] and with_boxes > 0
