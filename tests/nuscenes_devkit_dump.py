"""Run by the nuscenes-devkit's own interpreter (tests/test_nuscenes_devkit.py builds that environment): what the
devkit makes of a dataset's tables, as JSON, for the test to compare with ``gaia2.datasets.nuscenes_clip``.

    python nuscenes_devkit_dump.py OUT.json VERSION ROOT [ROOT ...]

Per root and scene, following the devkit (scene -> first sample -> ``sample['data'][channel]`` -> ``next`` ...),
every camera sample_data: its row (timestamp, filename, key frame), its ego pose and calibrated sensor (with
``transform_matrix`` of the latter), and the boxes of ``get_sample_data(token, BoxVisibility.NONE)`` in the
camera frame (centre, wlh, orientation quaternion and its rotation matrix, category and attribute names);
per scene also the LIDAR_TOP poses and their latitude / longitude from the devkit's
``scripts/export_poses.py``. Nothing here imports gaia2: this interpreter has numpy<2 and the devkit only.
"""

from __future__ import annotations

import json
import sys


def dump(root: str, version: str) -> dict:
    from nuscenes.nuscenes import NuScenes
    from nuscenes.scripts.export_poses import derive_latlon, get_poses
    from nuscenes.utils.geometry_utils import BoxVisibility, transform_matrix
    from pyquaternion import Quaternion

    nusc = NuScenes(version=version, dataroot=root, verbose=False)
    scenes = {}
    for scene in nusc.scene:
        first = nusc.get("sample", scene["first_sample_token"])
        cameras = {}
        for channel, token in sorted(first["data"].items()):
            if nusc.get("sample_data", token)["sensor_modality"] != "camera":
                continue
            frames, seen = [], set()
            while token and token not in seen:
                seen.add(token)
                sd = nusc.get("sample_data", token)
                pose = nusc.get("ego_pose", sd["ego_pose_token"])
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                _, boxes, intrinsic = nusc.get_sample_data(token, box_vis_level=BoxVisibility.NONE)
                out = []
                for box in boxes:
                    ann = nusc.get("sample_annotation", box.token)
                    out.append({"token": box.token, "name": box.name,
                                "attributes": [nusc.get("attribute", a)["name"] for a in ann["attribute_tokens"]],
                                "center": box.center.tolist(), "wlh": box.wlh.tolist(),
                                "orientation": box.orientation.elements.tolist(),
                                "rotation_matrix": box.orientation.rotation_matrix.tolist()})
                frames.append({
                    "token": token, "timestamp": sd["timestamp"], "filename": sd["filename"],
                    "is_key_frame": sd["is_key_frame"], "sample_token": sd["sample_token"],
                    "ego_pose": {"token": pose["token"], "timestamp": pose["timestamp"],
                                 "translation": pose["translation"], "rotation": pose["rotation"]},
                    "calibrated_sensor": {
                        "token": cs["token"], "translation": cs["translation"], "rotation": cs["rotation"],
                        "camera_intrinsic": intrinsic.tolist(),
                        "transform": transform_matrix(cs["translation"], Quaternion(cs["rotation"])).tolist()},
                    "boxes": out})
                token = sd["next"]
            cameras[channel] = frames
        location = nusc.get("log", scene["log_token"])["location"]
        poses = get_poses(nusc, scene["token"])
        scenes[scene["name"]] = {
            "cameras": cameras,
            "ego_poses": [{"timestamp": p["timestamp"], "translation": p["translation"], "rotation": p["rotation"]}
                          for p in poses],
            "latlon": derive_latlon(location, poses)}
    return scenes


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, version, roots = argv[0], argv[1], argv[2:]
    import nuscenes
    import numpy
    from importlib.metadata import version as dist_version

    result = {"devkit": dist_version("nuscenes-devkit"), "numpy": numpy.__version__, "module": nuscenes.__file__,
              "roots": {root: dump(root, version) for root in roots}}
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
