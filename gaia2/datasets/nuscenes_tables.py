"""nuScenes' own JSON tables, read directly (the devkit pins numpy<2), and grouped into one bundle per scene.

Layout: ``<root>/<version>/<table>.json`` (``v1.0-trainval``, ``v1.0-mini``, ``v1.0-test``), each a JSON array
of objects with the fields of the dataset's schema (nuscenes-devkit ``docs/schema_nuscenes.md``); image paths
(``sample_data.filename``) are relative to ``<root>``. Local paths and object-storage roots alike
(``gaia2.storage``).

A bundle is everything one scene's clip is made of: its scene and log rows, its samples, the sample_data of
its samples (cameras and the LIDAR_TOP ego-pose channel), their ego poses and calibrations, and its
annotations with their category and attribute names resolved. The driver only groups rows by token; nothing
here judges a scene: a dangling token or a missing table is written into the bundle's ``errors``, and the
conversion (``gaia2.datasets.nuscenes_clip``, on a worker) turns it into that scene's reject. Only a missing
``scene`` or ``log`` table, which leaves no scene to reject, stops the source (``NuScenesError``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from gaia2 import storage

SCENE_TABLES = ("scene", "log")   # without these there are no scenes to account for
TABLES = ("sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "sample_annotation", "instance",
          "category")
OPTIONAL_TABLES = ("attribute",)   # names of annotation attributes (a bicycle "with_rider" or not)
EGO_CHANNEL = "LIDAR_TOP"         # the ego-pose series of a scene (20 Hz), as the devkit's export_poses uses


class NuScenesError(ValueError):
    """The dataset cannot be read at all (a missing scene or log table, an unknown version)."""


def read_table(root: str, version: str, name: str) -> list[dict]:
    """One table as a list of objects; raises ``NuScenesError`` naming the table when it cannot be."""
    location = storage.join(root, version, f"{name}.json")
    try:
        rows = json.loads(storage.read_bytes(location))
    except FileNotFoundError:
        raise NuScenesError(f"table {name}.json: missing ({storage.redact(location)})") from None
    except (OSError, ValueError, RecursionError) as err:
        raise NuScenesError(f"table {name}.json: unreadable ({type(err).__name__}: {str(err)[:200]})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise NuScenesError(f"table {name}.json: expected a JSON array of objects")
    return rows


def _by_token(rows: list[dict]) -> dict[str, dict]:
    return {r["token"]: r for r in rows if isinstance(r.get("token"), str)}


class Tables:
    """The tables of one version, indexed by token; a table that cannot be read is empty, its problem kept."""

    def __init__(self, root: str, version: str):
        self.root, self.version = root, version
        if not storage.is_dir(storage.join(root, version)) and not storage.is_uri(root):
            raise NuScenesError(f"{storage.redact(storage.join(root, version))}: no such directory (the version's "
                                f"tables, e.g. v1.0-trainval/scene.json)")
        self.scenes = read_table(root, version, "scene")
        self.logs = _by_token(read_table(root, version, "log"))
        self.problems: dict[str, str] = {}
        rows: dict[str, list[dict]] = {}
        for name in TABLES + OPTIONAL_TABLES:
            try:
                rows[name] = read_table(root, version, name)
            except NuScenesError as err:
                rows[name] = []
                if name in TABLES:
                    self.problems[name] = str(err)
        self.samples = _by_token(rows["sample"])
        self.ego_poses = _by_token(rows["ego_pose"])
        self.sensors = _by_token(rows["sensor"])
        self.calibrated = _by_token(rows["calibrated_sensor"])
        self.instances = _by_token(rows["instance"])
        self.categories = _by_token(rows["category"])
        self.attributes = _by_token(rows["attribute"])
        self.data_of: dict[str, list[dict]] = defaultdict(list)         # sample token -> its sample_data
        for sd in rows["sample_data"]:
            if isinstance(sd.get("sample_token"), str):   # a row without one belongs to no scene
                self.data_of[sd["sample_token"]].append(sd)
        self.anns_of: dict[str, list[dict]] = defaultdict(list)         # sample token -> its annotations
        for ann in rows["sample_annotation"]:
            if isinstance(ann.get("sample_token"), str):
                self.anns_of[ann["sample_token"]].append(ann)

    def _channel(self, sd: dict) -> tuple[str | None, str | None]:
        """(channel, modality) of a sample_data row, through its calibrated sensor; Nones when dangling."""
        cs = self.calibrated.get(sd.get("calibrated_sensor_token"))
        sensor = self.sensors.get(cs.get("sensor_token")) if cs else None
        return (sensor.get("channel"), sensor.get("modality")) if sensor else (None, None)

    def bundle(self, scene: dict) -> dict[str, Any]:
        """One scene's rows (see the module docstring); problems go to ``errors``, never raised."""
        try:
            return self._bundle(scene)
        except (KeyError, TypeError, ValueError, AttributeError) as err:   # a token that is a list, a row a number
            return {"version": self.version, "scene": scene, "log": None, "samples": [], "sample_data": [],
                    "ego_pose": {}, "calibrated_sensor": {}, "sample_annotation": [],
                    "errors": [f"scene {str(scene.get('name'))[:80]!r}: malformed table row reached from it "
                               f"({type(err).__name__}: {str(err)[:200]})"]}

    def _bundle(self, scene: dict) -> dict[str, Any]:
        errors = [f"{p} (needed by every scene)" for p in self.problems.values()]
        name = scene.get("name")
        log = self.logs.get(scene.get("log_token"))
        if log is None:
            errors.append(f"scene {name!r}: log_token {scene.get('log_token')!r} is not in log.json")
        samples, token, seen = [], scene.get("first_sample_token"), set()
        while token and token not in seen:
            seen.add(token)
            sample = self.samples.get(token)
            if sample is None:
                errors.append(f"scene {name!r}: sample {token!r} is not in sample.json")
                break
            if sample.get("scene_token") != scene.get("token"):
                break   # past the scene's end (its last sample's next should be "")
            samples.append(sample)
            token = sample.get("next")
        data, poses, calibrated, anns = [], {}, {}, []
        for sample in samples:
            for sd in self.data_of.get(sample["token"], ()):
                channel, modality = self._channel(sd)
                if channel is None:
                    errors.append(f"sample_data {sd.get('token')!r}: calibrated_sensor_token "
                                  f"{sd.get('calibrated_sensor_token')!r} (or its sensor) is not in the tables")
                    continue
                if modality != "camera" and channel != EGO_CHANNEL:
                    continue
                pose = self.ego_poses.get(sd.get("ego_pose_token"))
                if pose is None:
                    errors.append(f"sample_data {sd.get('token')!r}: ego_pose_token {sd.get('ego_pose_token')!r} "
                                  f"is not in ego_pose.json")
                    continue
                data.append({**sd, "channel": channel, "modality": modality})
                poses[pose["token"]] = pose
                calibrated[sd["calibrated_sensor_token"]] = self.calibrated[sd["calibrated_sensor_token"]]
            for ann in self.anns_of.get(sample["token"], ()):
                instance = self.instances.get(ann.get("instance_token"))
                category = self.categories.get(instance.get("category_token")) if instance else None
                if category is None:
                    errors.append(f"sample_annotation {ann.get('token')!r}: instance_token "
                                  f"{ann.get('instance_token')!r} (or its category) is not in the tables")
                    continue
                attributes = [self.attributes[a].get("name") for a in ann.get("attribute_tokens") or ()
                              if isinstance(a, str) and a in self.attributes]
                anns.append({**ann, "category_name": category.get("name"), "attribute_names": attributes})
        return {"version": self.version, "scene": scene, "log": log, "samples": samples, "sample_data": data,
                "ego_pose": poses, "calibrated_sensor": calibrated, "sample_annotation": anns, "errors": errors}
