"""A latent-shard sample -> world-model inputs: each camera's own frame timestamps at the latent rate, the
scenario join, and errors that name the sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gaia2.schema.sample import npy_bytes
from gaia2.world_model.sample import SampleError, world_model_sample
from pipelines.splits import DataError
from pipelines.world_model.train_data import to_samples

FRAMES, STEPS, CAMS, A = 16, 2, 2, 3


def _meta(key="k0", offsets=(0.0, 0.013), frame_timestamps=True):
    grid = np.arange(FRAMES) / 20.0                                  # a 20 Hz grid
    cams = []
    for i, off in enumerate(offsets):
        cam = {"name": f"cam{i}", "width": 64, "height": 32, "intrinsics": [50.0, 50.0, 32.0, 16.0],
               "extrinsics": np.eye(4).tolist(), "distortion": [0.0] * 5}
        if frame_timestamps:
            cam["frame_timestamps"] = (grid + off).tolist()
        cams.append(cam)
    return {"key": key, "timestamps": grid.tolist(), "cameras": cams, "metadata": {"weather": 2},
            "ego": {"speed": [5.0] * FRAMES, "curvature": [0.001] * FRAMES}}


def _arrays():
    return (np.zeros((STEPS, CAMS, 4, 2, 2), np.float32), np.zeros((FRAMES, CAMS, A, 13), np.float32),
            np.zeros((FRAMES, CAMS, A), bool), np.zeros((CAMS, 8), np.float32))


def test_each_cameras_frame_times_are_averaged_per_latent():
    out = world_model_sample(_meta(), *_arrays(), cameras=CAMS, max_agents=A)
    grid = np.arange(FRAMES).reshape(STEPS, -1).mean(1) / 20.0       # mean time of each latent's 8 frames
    assert out["timestamps"].shape == (STEPS, CAMS)
    np.testing.assert_allclose(out["timestamps"][:, 0], grid, atol=1e-6)
    np.testing.assert_allclose(out["timestamps"][:, 1], grid + 0.013, atol=1e-6)   # camera 1 triggers later
    # shards written before per-camera times were kept: the grid for every camera
    old = world_model_sample(_meta(frame_timestamps=False), *_arrays(), cameras=CAMS, max_agents=A)
    np.testing.assert_allclose(old["timestamps"], np.stack([grid, grid], 1), atol=1e-6)
    bad = _meta()
    bad["cameras"][1]["frame_timestamps"] = bad["cameras"][1]["frame_timestamps"][:-1]
    with pytest.raises(SampleError, match="sample 'k0': camera 'cam1' has 15 frame timestamps for 16 frames"):
        world_model_sample(bad, *_arrays(), cameras=CAMS, max_agents=A)


def _rows(keys):
    latents, boxes, valid, clip = _arrays()
    return {"json": np.array([json.dumps(_meta(k)).encode() for k in keys], dtype=object),
            "latents.npy": np.array([npy_bytes(latents)] * len(keys), dtype=object),
            "boxes.npy": np.array([npy_bytes(boxes)] * len(keys), dtype=object),
            "boxes_valid.npy": np.array([npy_bytes(valid)] * len(keys), dtype=object),
            "clip.npy": np.array([npy_bytes(clip)] * len(keys), dtype=object)}


def test_samples_are_joined_with_their_scenario_vectors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "scenario.parquet")
    pq.write_table(pa.table({"key": ["b", "a"], "embedding": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}), path)
    out = to_samples(_rows(["a", "c", "b"]), cameras=CAMS, max_agents=A, scenario=path, scenario_dim=3)
    np.testing.assert_array_equal(out["scenario"], [[4, 5, 6], [0, 0, 0], [1, 2, 3]])
    np.testing.assert_array_equal(out["scenario_valid"], [True, False, True])
    assert out["timestamps"].shape == (3, STEPS, CAMS)
    assert "scenario" not in to_samples(_rows(["a"]), cameras=CAMS, max_agents=A)


def test_a_sample_that_does_not_fit_is_an_error_naming_it():
    rows = _rows(["a"])
    rows["__url__"] = np.array(["shard-000.tar"], dtype=object)
    with pytest.raises(DataError, match="shard-000.tar: sample 'a': 2 cameras, the world model takes 3"):
        to_samples(rows, cameras=3, max_agents=A)
