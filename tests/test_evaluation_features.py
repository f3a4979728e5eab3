"""The FDD / FID / FVD feature networks through their loading code, on tiny random networks of the real classes;
FID's features against torchmetrics', FVD's against cd-fvd's; the TorchScript point tracker of FVMD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaia2.evaluation.features import (STANDARD_RESOLUTIONS, TINY_RESOLUTIONS, load_extractor,
                                       write_tiny_networks)
from gaia2.evaluation.fvmd import LucasKanade, TorchScriptTracker, fvmd, load_tracker, video_features

METRICS = ("fdd", "fid", "fvd")


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[str, str]:
    return write_tiny_networks(str(tmp_path_factory.mktemp("nets")), seed=0)


@pytest.fixture(scope="module")
def extractors(nets):
    return {m: load_extractor(m, nets[m], resolution=TINY_RESOLUTIONS[m], batch_size=3) for m in METRICS}


def _inputs(metric: str, n: int, seed: int) -> np.ndarray:
    """Random uint8 inputs of an odd size (every extractor resizes): frames or 16-frame clips."""
    rng = np.random.default_rng(seed)
    shape = (n, 16, 30, 42, 3) if metric == "fvd" else (n, 37, 53, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("metric", METRICS)
def test_tiny_network_loads_and_extracts_deterministic_features_that_tell_inputs_apart(extractors, metric):
    ex = extractors[metric]
    assert ex.metric == metric and ex.resolution == TINY_RESOLUTIONS[metric]
    assert (ex.input, ex.clip_frames) == (("clips", 16) if metric == "fvd" else ("frames", None))
    x = _inputs(metric, 5, seed=1)
    feats = ex.extract(x)                                     # two batches of 3 and 2
    assert feats.shape == (5, ex.dim) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert ex.dim == {"fdd": 32, "fid": 2048, "fvd": 400}[metric]
    np.testing.assert_array_equal(ex.extract(x), feats)
    np.testing.assert_allclose(ex.extract(x[3:]), feats[3:], rtol=1e-5, atol=1e-6)   # batching does not matter
    spread = np.abs(feats[:, None] - feats[None]).max(-1)    # every pair of inputs differs clearly
    assert spread[~np.eye(5, dtype=bool)].min() > 1e-3 * np.abs(feats).max(), spread
    assert ex.extract(x[:0]).shape == (0, ex.dim)


def test_fingerprint_is_stable_and_follows_weights_and_resolution(nets, extractors, tmp_path):
    again = write_tiny_networks(str(tmp_path / "again"), seed=0)
    other = write_tiny_networks(str(tmp_path / "other"), seed=1)
    for m in METRICS:
        fp = extractors[m].fingerprint
        assert len(fp) == 64 and int(fp, 16) >= 0
        assert load_extractor(m, again[m], resolution=TINY_RESOLUTIONS[m]).fingerprint == fp   # same seed, same bytes
        assert load_extractor(m, other[m], resolution=TINY_RESOLUTIONS[m]).fingerprint != fp
    assert load_extractor("fdd", nets["fdd"], resolution=(28, 56)).fingerprint != extractors["fdd"].fingerprint
    assert load_extractor("fvd", nets["fvd"], resolution=(32, 32)).fingerprint != extractors["fvd"].fingerprint


def test_standard_resolutions_and_resolution_checks(nets):
    for m in METRICS:
        assert load_extractor(m, nets[m]).resolution == STANDARD_RESOLUTIONS[m]
    assert STANDARD_RESOLUTIONS["fdd"] == (448, 952)
    with pytest.raises(ValueError, match="multiples of the patch size 14"):
        load_extractor("fdd", nets["fdd"], resolution=(50, 100))
    with pytest.raises(ValueError, match="299 x 299"):
        load_extractor("fid", nets["fid"], resolution=(128, 128))
    with pytest.raises(ValueError, match=r"known: \['fdd', 'fid', 'fvd'\]"):
        load_extractor("kid", nets["fid"])


@pytest.mark.parametrize("metric", METRICS)
def test_a_missing_path_names_the_metric_the_path_and_what_belongs_there(tmp_path, metric):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"{metric}: {missing}: no such .*expected .*nothing is downloaded"):
        load_extractor(metric, str(missing))


def test_a_directory_without_a_checkpoint_is_named(nets, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_extractor("fdd", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_extractor("fdd", nets["fid"])
    with pytest.raises(FileNotFoundError, match="fvd: .*not a file"):
        load_extractor("fvd", str(tmp_path))
    with pytest.raises(ValueError, match="not I3D"):
        load_extractor("fvd", nets["fid"])


def test_wrong_input_shape_or_dtype_is_refused(extractors):
    frames, clips = extractors["fdd"], extractors["fvd"]
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\), got \(37, 53, 3\)"):
        frames.extract(_inputs("fdd", 1, 0)[0])
    with pytest.raises(ValueError, match="expected uint8 frames"):
        frames.extract(_inputs("fdd", 1, 0).astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, 16, H, W, 3\), got \(1, 8, 30, 42, 3\)"):
        clips.extract(_inputs("fvd", 1, 0)[:, :8])
    with pytest.raises(ValueError, match=r"got \(2, 37, 53, 3\)"):
        clips.extract(_inputs("fid", 2, 0))


def test_fid_features_are_torchmetrics_frechet_inception_distance_features(nets, extractors):
    from torchmetrics.image.fid import FrechetInceptionDistance

    x = _inputs("fid", 3, seed=2)
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=nets["fid"], antialias=False)
    with torch.inference_mode():
        theirs = metric.inception(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).double().numpy()
    np.testing.assert_array_equal(extractors["fid"].extract(x), theirs)


def test_i3d_global_pool_equals_cdfvd_fixed_pool_at_224(nets):
    """The claim behind the pool swap: at 16 x 224 x 224 the final map is 2 x 7 x 7, so cd-fvd's
    AvgPool3d([2, 7, 7]) and a global average agree; with cd-fvd's own preprocessing and unmodified model."""
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
    from cdfvd.third_party.i3d.utils import preprocess_i3d

    ours = load_extractor("fvd", nets["fvd"], resolution=(224, 224))
    reference = InceptionI3d(400, in_channels=3).eval()
    reference.load_state_dict(torch.load(nets["fvd"], weights_only=True))
    x = _inputs("fvd", 1, seed=3)
    with torch.inference_mode():
        video = preprocess_i3d(x)                              # (1, 3, 16, 224, 224) in [-1, 1]
        assert reference(video, return_pre_pool=True).shape == (1, 1024, 2, 7, 7)
        theirs = reference(video).double().numpy()
    np.testing.assert_allclose(ours.extract(x), theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


class _Drift(torch.nn.Module):
    """'Tracks' every query by moving it right by the video's mean brightness / 100 pixels per frame, always
    visible (probability 0.9); CoTracker's signature."""

    def forward(self, video: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = video.shape[1]
        step = torch.arange(t, dtype=queries.dtype).view(1, t, 1) * video.mean() / 100
        x = queries[:, None, :, 1] + step                       # (1, T, K)
        y = queries[:, None, :, 2].expand(-1, t, -1)
        return torch.stack([x, y], -1), torch.full_like(x, 0.9)


def _flat(value: int) -> np.ndarray:
    return np.full((16, 24, 32, 3), value, np.uint8)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")   # deprecated in torch 2.14, still the format
def test_torchscript_tracker_loads_from_a_path_and_drives_fvmd(tmp_path):
    path = tmp_path / "drift.pt"
    torch.jit.script(_Drift()).save(str(path))
    tracker = load_tracker(str(path), grid=4)
    assert isinstance(tracker, TorchScriptTracker) and tracker.name == "torchscript:drift.pt"
    assert isinstance(load_tracker(None), LucasKanade) and isinstance(load_tracker("lucas-kanade"), LucasKanade)
    tracks, valid = tracker(_flat(150))
    assert tracks.shape == (16, 16, 2) and valid.all()
    np.testing.assert_allclose(tracks[0], LucasKanade(grid=4)(_flat(150))[0][0])   # the same lattice of queries
    np.testing.assert_allclose(np.diff(tracks, axis=0), np.broadcast_to([1.5, 0.0], (15, 16, 2)), atol=1e-5)
    # velocity 1.5 px/frame to the right: direction bin 4 (angle 0) and magnitude bin [1, 2) (the 4th) hold it all
    vel = video_features([_flat(150)], tracker, cells=1)[0, :15]
    expected = np.zeros(15)
    expected[4], expected[8 + 3] = 1.5, 1.0
    np.testing.assert_allclose(vel, expected, rtol=1e-5)
    slow = [_flat(v) for v in (50, 55, 60, 65, 70)]
    same = fvmd(slow, [_flat(v) for v in (52, 57, 62, 67, 72)], tracker, cells=1)
    fast = fvmd(slow, [_flat(v) for v in (200, 205, 210, 215, 220)], tracker, cells=1)
    assert same.tracker == fast.tracker == "torchscript:drift.pt" and fast.to_json()["tracker"] == same.tracker
    assert same.distance.value < 0.01 * fast.distance.value, (same.distance.value, fast.distance.value)


def test_a_missing_tracker_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'cotracker.pt'}: no such file"):
        load_tracker(str(tmp_path / "cotracker.pt"))
