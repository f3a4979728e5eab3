"""Our nuScenes conversion against the nuscenes-devkit itself, on the same tables.

The devkit pins numpy<2, so it cannot share this environment: it gets its own, ``.venv-nuscenes-devkit`` at
the repository's root (ignored by git), made on first use with the pinned wheels below (binary wheels only,
about 20 s from PyPI) and kept for later runs (a marker file holds the pins it was made with). Without the
registry the test fails, saying so: it is never skipped.

There ``tests/nuscenes_devkit_dump.py`` loads ``NuScenes`` over the datasets and writes, per camera
sample_data, what ``get_sample_data(token, BoxVisibility.NONE)`` gives; here ``scene_record`` converts the same
tables and the two are compared: each camera's chain of timestamps and frames, its calibration, every box
(moved from our ego frame into the camera with our extrinsics; heading compared in the ego frame) and the GPS
of the LIDAR_TOP poses (the devkit's ``scripts/export_poses.py``).

Two datasets: the helper's (tests/nuscenes_helpers.py: linear motion and constant yaws, where interpolation
is exact whatever its formula), and a copy of its tables made harder, so that the devkit's rules are what
decides: annotation noise and turning, tilted quaternions of either sign (slerp's shorter way, its linear
branch), yaws across +-pi, tilted ego poses and cameras, an instance missing from one sample, and sweeps
assigned to a neighbouring sample (the devkit's clamp of the time to the two samples).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from gaia2.datasets.nuscenes_clip import category_of, scene_record
from pipelines.shards.sources import list_clips
from tests import nuscenes_helpers as nh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVKIT_ENV = os.path.join(REPO, ".venv-nuscenes-devkit")
DUMP = os.path.join(REPO, "tests", "nuscenes_devkit_dump.py")
# nuscenes-devkit 1.2.0 and its dependencies as pip resolves them on Python 3.11, pinned: installed with
# --no-deps from binary wheels only, so the environment is the same every time and nothing compiles.
DEVKIT_PINS = (
    "nuscenes-devkit==1.2.0", "numpy==1.26.4", "pyquaternion==0.9.9", "matplotlib==3.11.2",
    "contourpy==1.3.3", "cycler==0.12.1", "fonttools==4.68.0", "kiwisolver==1.5.1", "packaging==26.4",
    "pyparsing==3.3.3", "python-dateutil==4.0.0", "tzdata==2026.6", "narwhals==2.29.0", "pillow==13.0.0",
    "opencv-python-headless==4.11.0.86", "scikit-learn==1.9.1", "scipy==1.17.1", "joblib==1.6.0",
    "threadpoolctl==3.8.0", "tqdm==4.70.1", "cachetools==8.0.2", "shapely==2.0.7", "descartes==1.1.0",
    "fire==0.7.1", "termcolor==3.3.0", "parameterized==0.9.0", "pycocotools==2.0.11", "cloudpickle==3.1.3",
)
MARKER = os.path.join(DEVKIT_ENV, ".gaia2-devkit-complete")
VERSION = "v1.0-mini"
# Float tolerance: both divide integer microseconds for the interpolation fraction (Unix seconds as float64
# resolve only ~2.4e-7 s, which left up to 6e-7 m between the two before ours did too).
CENTER_TOL_M = 1e-9
ANGLE_TOL_RAD = 1e-9


# ------------------------------------------------------------------------------------ the devkit's env
def _run(cmd: list[str], timeout: float, what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: timed out after {timeout:.0f} s ({' '.join(cmd[:6])} ...)")
    if proc.returncode != 0:
        pytest.fail(f"{what}: exit {proc.returncode} ({' '.join(cmd[:6])} ...)\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


def devkit_python() -> str:
    """The devkit environment's interpreter, made first if missing or made with other pins (file-locked)."""
    python = os.path.join(DEVKIT_ENV, "bin", "python")
    want = "\n".join(DEVKIT_PINS) + "\n"
    with open(DEVKIT_ENV + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.isfile(MARKER) and open(MARKER).read() == want and os.path.isfile(python):
                return python
            shutil.rmtree(DEVKIT_ENV, ignore_errors=True)
            start = time.monotonic()
            _run([sys.executable, "-m", "venv", DEVKIT_ENV], 120, "creating the devkit's virtual environment")
            _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
                  "--no-deps", *DEVKIT_PINS], 300,
                 "installing nuscenes-devkit into .venv-nuscenes-devkit (needs PyPI; binary wheels only)")
            _run([python, "-c", "from nuscenes.nuscenes import NuScenes"], 120, "importing the installed devkit")
            with open(MARKER, "w") as f:
                f.write(want)
            print(f"made {DEVKIT_ENV} in {time.monotonic() - start:.1f} s")
            return python
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------- datasets
def _table(root: str, name: str) -> list[dict]:
    with open(os.path.join(root, VERSION, f"{name}.json")) as f:
        return json.load(f)


def _write_table(root: str, name: str, rows: list[dict]) -> None:
    with open(os.path.join(root, VERSION, f"{name}.json"), "w") as f:
        json.dump(rows, f)


def _q(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """w, x, y, z of Rz(yaw) Ry(pitch) Rx(roll)."""
    cy, sy, cp, sp, cr, sr = (f(a / 2) for a in (yaw, pitch, roll) for f in (math.cos, math.sin))
    return np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])


def _harden(root: str) -> dict[str, int]:
    """Make the copied tables exercise the devkit's rules (see the module docstring); returns what it did."""
    rng = np.random.default_rng(20180724)
    done = {"sign_flips": 0, "clamped_sweeps": 0, "dropped": 0}
    samples = {s["token"]: s for s in _table(root, "sample")}
    index_of = {}   # sample token -> its index in its scene
    for scene in _table(root, "scene"):
        tok, k = scene["first_sample_token"], 0
        while tok:
            index_of[tok] = k
            tok, k = samples[tok]["next"], k + 1

    # Annotations: noisy centres, turning, tilted, either quaternion sign; yaw rates per instance from none to
    # ~2.6 rad per sample (the slerp's linear branch below 0.063 rad, a negative dot product above pi/2).
    instances = sorted({a["instance_token"] for a in _table(root, "sample_annotation")})
    rates = [0.0, 0.03, 0.5, -1.2, 2.6, -0.3, 1.0, 0.2, -2.0, 0.7]
    anns = _table(root, "sample_annotation")
    for a in anns:
        j, k = instances.index(a["instance_token"]), index_of[a["sample_token"]]
        yaw0 = 3.0 if j % 4 == 1 else 0.4 * j   # some start near +pi and cross it
        q = _q(yaw0 + rates[j % len(rates)] * k, 0.05 * math.sin(k + j), 0.03 * math.cos(2 * k + j))
        if (j + k) % 3 == 0:
            q, done["sign_flips"] = -q, done["sign_flips"] + 1
        a["rotation"] = q.tolist()
        a["translation"] = (np.asarray(a["translation"]) + rng.normal(0.0, 0.4, 3)).tolist()
    # One instance is not annotated in sample 3 of the first scene: in sample 4 it is new again (no prev).
    first_scene = _table(root, "scene")[0]["token"]
    in_sample_3 = [a for a in anns if index_of[a["sample_token"]] == 3
                   and samples[a["sample_token"]]["scene_token"] == first_scene]
    victim = [min(in_sample_3, key=lambda a: a["instance_token"])]
    by_token = {a["token"]: a for a in anns}
    for a in victim:
        if a["prev"]:
            by_token[a["prev"]]["next"] = a["next"]
        if a["next"]:
            by_token[a["next"]]["prev"] = a["prev"]
        anns.remove(a)
        done["dropped"] += 1
    _write_table(root, "sample_annotation", anns)

    # Ego poses: tilted (pitch, roll), heading and position jitter, height.
    poses = _table(root, "ego_pose")
    for p in poses:
        w, x, y, z = p["rotation"]
        heading = 2 * math.atan2(z, w)
        tau = (p["timestamp"] % 10_000_000) / 1e6
        p["rotation"] = _q(heading + rng.normal(0, 0.01), 0.02 * math.sin(3 * tau), 0.015 * math.cos(2 * tau)).tolist()
        p["translation"] = [p["translation"][0] + rng.normal(0, 0.02), p["translation"][1] + rng.normal(0, 0.02),
                            0.1 * math.sin(tau)]
    _write_table(root, "ego_pose", poses)

    # Cameras: tilted and shifted a little, as a real rig's calibration is.
    cs_rows = _table(root, "calibrated_sensor")
    for cs in cs_rows:
        if cs["camera_intrinsic"]:
            tilt = nh.matrix_quaternion(_rot(_q(rng.normal(0, 0.02), rng.normal(0, 0.05), rng.normal(0, 0.03))))
            cs["rotation"] = _mul(np.asarray(tilt), np.asarray(cs["rotation"])).tolist()
            cs["translation"] = (np.asarray(cs["translation"]) + rng.normal(0, 0.05, 3)).tolist()
            cs["camera_intrinsic"] = [[nh.FOCAL * 1.01, 0.0, nh.WIDTH / 2 + 1.5], [0.0, nh.FOCAL * 0.99, nh.HEIGHT / 2 - 2.0],
                                      [0.0, 0.0, 1.0]]
    _write_table(root, "calibrated_sensor", cs_rows)

    # Every 5th camera sweep (not a keyframe) belongs to the next or the previous sample of its scene: its time
    # lies outside the two samples it is interpolated between, and the devkit clamps it.
    sensor_of = {cs["token"]: cs for cs in cs_rows}
    data = _table(root, "sample_data")
    n = 0
    for sd in data:
        if sd["is_key_frame"] or not sensor_of[sd["calibrated_sensor_token"]]["camera_intrinsic"]:
            continue
        n += 1
        if n % 5:
            continue
        sample = samples[sd["sample_token"]]
        other = sample["next"] if n % 10 == 0 and sample["next"] else sample["prev"]
        if other:
            sd["sample_token"] = other
            done["clamped_sweeps"] += 1
    _write_table(root, "sample_data", data)
    return done


def _rot(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> dict:
    """{dataset name: (devkit's dump of it, our records by scene)} plus what the hardening did."""
    base = str(tmp_path_factory.mktemp("nuscenes-devkit") / "plain")
    nh.write_dataset(base)
    hard = os.path.join(os.path.dirname(base), "hard")
    shutil.copytree(base, hard)
    hardening = _harden(hard)
    python = devkit_python()
    out = os.path.join(os.path.dirname(base), "devkit.json")
    _run([python, DUMP, out, VERSION, base, hard], 300, "the devkit's dump (tests/nuscenes_devkit_dump.py)")
    with open(out) as f:
        dump = json.load(f)
    result = {"hardening": hardening, "devkit": dump["devkit"], "numpy": dump["numpy"]}
    for name, root in (("plain", base), ("hard", hard)):
        ours = {ref.ref_id: scene_record(json.loads(ref.record))
                for ref in list_clips(f"nuscenes://{root}?version={VERSION}")}
        result[name] = (dump["roots"][root], ours)
    return result


DATASETS = ("plain", "hard")


def _wrap(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


# ------------------------------------------------------------------------------------------- tests
def test_devkit_environment_is_the_pinned_one(compared):
    assert compared["devkit"] == "1.2.0" and compared["numpy"].startswith("1.")
    h = compared["hardening"]
    assert h["sign_flips"] > 10 and h["clamped_sweeps"] > 10 and h["dropped"] == 1


@pytest.mark.parametrize("dataset", DATASETS)
def test_cameras_are_the_devkits_chains_and_calibration(compared, dataset):
    dk, ours = compared[dataset]
    assert sorted(dk) == sorted(ours) == ["scene-0061", "scene-0103"]
    for name, scene in dk.items():
        cams = {c["name"]: c for c in ours[name]["cameras"]}
        assert sorted(cams) == sorted(scene["cameras"])
        for channel, frames in scene["cameras"].items():
            cam = cams[channel]
            assert cam["timestamps"] == [f["timestamp"] / 1e6 for f in frames], (name, channel)
            assert cam["frames"] == [f["filename"] for f in frames], (name, channel)
            cs = frames[0]["calibrated_sensor"]
            assert all(f["calibrated_sensor"]["token"] == cs["token"] for f in frames)
            np.testing.assert_allclose(cam["extrinsics"], cs["transform"], atol=1e-12, rtol=0)
            k = cs["camera_intrinsic"]
            assert cam["intrinsics"] == [k[0][0], k[1][1], k[0][2], k[1][2]]


@pytest.mark.parametrize("dataset", DATASETS)
def test_gps_is_the_devkits_export_poses(compared, dataset):
    dk, ours = compared[dataset]
    for name, scene in dk.items():
        gps = ours[name]["gps"]
        assert gps["timestamps"] == [p["timestamp"] / 1e6 for p in scene["latlon"]]
        np.testing.assert_allclose(gps["latitude"], [p["latitude"] for p in scene["latlon"]], atol=1e-10, rtol=0)
        np.testing.assert_allclose(gps["longitude"], [p["longitude"] for p in scene["latlon"]], atol=1e-10, rtol=0)


@pytest.mark.parametrize("dataset", DATASETS)
def test_boxes_are_the_devkits_get_sample_data(compared, dataset):
    """Every camera frame: our boxes at its timestamp, into its camera with our extrinsics, are the devkit's
    ``get_sample_data`` boxes of the categories we keep: centre, (l, w, h), heading in the ego frame, category."""
    dk, ours = compared[dataset]
    worst = {"center_m": 0.0, "size_m": 0.0, "heading_rad": 0.0}
    boxes_compared = frames_compared = interpolated = 0
    for name, scene in dk.items():
        rec = ours[name]
        boxes = rec["boxes"]
        at = {t: i for i, t in enumerate(boxes["timestamps"])}
        frame_index = np.asarray(boxes["frame_index"])
        for channel, frames in scene["cameras"].items():
            extr = np.asarray(next(c for c in rec["cameras"] if c["name"] == channel)["extrinsics"])
            for frame in frames:
                want = [b for b in frame["boxes"]
                        if category_of({"category_name": b["name"], "attribute_names": b["attributes"]}) is not None]
                sel = np.flatnonzero(frame_index == at[frame["timestamp"] / 1e6])
                where = (dataset, name, channel, frame["timestamp"])
                assert len(sel) == len(want), where
                frames_compared += 1
                if not want:
                    continue
                interpolated += not frame["is_key_frame"]
                center_ego = np.asarray([boxes["center"][m] for m in sel])
                center_cam = (center_ego - extr[:3, 3]) @ extr[:3, :3]          # R^T (c - t), row-wise
                dk_center = np.asarray([b["center"] for b in want])
                dist = np.linalg.norm(dk_center[:, None] - center_cam[None], axis=-1)
                match = dist.argmin(axis=1)
                assert len(set(match.tolist())) == len(want), where             # one of ours for each of theirs
                cs = np.asarray(frame["calibrated_sensor"]["transform"])[:3, :3]
                for b, m, d in zip(want, sel[match], dist[np.arange(len(want)), match]):
                    w, length, h = b["wlh"]
                    size_err = float(np.abs(np.subtract(boxes["size"][m], [length, w, h])).max())
                    x_axis = cs @ np.asarray(b["rotation_matrix"])[:, 0]          # the box's heading, ego frame
                    heading_err = abs(float(_wrap(boxes["yaw"][m] - math.atan2(x_axis[1], x_axis[0]))))
                    assert boxes["category"][m] == category_of({"category_name": b["name"],
                                                                "attribute_names": b["attributes"]}), where
                    assert d < CENTER_TOL_M and size_err < 1e-12 and heading_err < ANGLE_TOL_RAD, (
                        where, b["name"], f"centre {d:.3g} m, size {size_err:.3g} m, heading {heading_err:.3g} rad")
                    worst = {"center_m": max(worst["center_m"], float(d)), "size_m": max(worst["size_m"], size_err),
                             "heading_rad": max(worst["heading_rad"], heading_err)}
                    boxes_compared += 1
    print(f"{dataset}: {boxes_compared} boxes in {frames_compared} camera frames ({interpolated} interpolated "
          f"frames with boxes); largest differences from the devkit: {worst}")
    assert frames_compared > 250 and boxes_compared > 700 and interpolated > 200
