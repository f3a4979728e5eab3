import numpy as np

from gaia2.curation.windows import cut_windows, frame_grid, nearest_frames, window_key
from tests.helpers import make_clip


def test_nearest_frames_picks_closest_timestamp():
    ts = np.array([0.0, 0.1, 0.2, 0.3])
    grid = np.array([0.0, 0.04, 0.06, 0.149, 0.151, 0.3, 0.31])
    assert nearest_frames(ts, grid).tolist() == [0, 0, 1, 1, 2, 3, 3]


def test_grid_starts_when_all_cameras_run_and_resamples_offsets():
    # Two cameras at 20 Hz, the second triggered 12 ms later; grid at the native 20 Hz.
    clip = make_clip(rates=(20.0, 20.0), offsets=(0.0, 0.012), n_frames=(40, 40))
    grid = frame_grid(clip)
    assert np.isclose(grid[0], 0.012) and np.isclose(np.diff(grid), 0.05).all()
    assert grid[-1] <= 39 * 0.05 + 1e-9
    windows = cut_windows(clip, frames=16, hop=8)
    assert [w.start for w in windows] == [0, 8, 16]
    w = windows[1]
    # Camera 0's frames are 12 ms early relative to the grid: nearest is the same index.
    assert w.frame_indices[0].tolist() == list(range(8, 24))
    assert w.frame_indices[1].tolist() == list(range(8, 24))


def test_mixed_rates_resample_onto_the_fastest_grid():
    clip = make_clip(rates=(30.0, 15.0), offsets=(0.0, 0.0), n_frames=(60, 30))
    windows = cut_windows(clip, frames=12, hop=12)
    w = windows[0]
    assert np.allclose(np.diff(w.timestamps), 1 / 30)
    ts = clip.cameras[1].timestamps
    brute = np.argmin(np.abs(ts[None, :] - w.timestamps[:, None]), axis=1)
    err = np.abs(ts[w.frame_indices[1]] - w.timestamps)
    assert np.allclose(err, np.abs(ts[brute] - w.timestamps))   # nearest (ties either way)
    # The 15 Hz camera's frames each cover about two grid steps.
    assert np.bincount(w.frame_indices[1]).max() <= 3 and set(w.frame_indices[1]) == set(range(6))


def test_explicit_grid_rate_and_too_short():
    clip = make_clip(rates=(30.0, 30.0), offsets=(0.0, 0.0), n_frames=(30, 30))
    assert len(cut_windows(clip, frames=10, hop=10, grid_hz=10.0)) == 1
    assert cut_windows(clip, frames=31, hop=1) == []


def test_window_key_has_no_dots():
    assert window_key("drive0001-clip02", 7) == "drive0001-clip02_w007"
    assert "." not in window_key("a_b-c", 123)
