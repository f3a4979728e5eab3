"""Official splits: a dataset's own train / val lists of clip ids, instead of geofences.

Every paper on nuScenes reports on its 150 validation scenes; a build whose validation split is those
scenes gives figures comparable with theirs. The packaged lists are the devkit's
(``gaia2/data/nuscenes_splits.json``, copied from nuscenes-devkit ``python-sdk/nuscenes/utils/splits.py``):
``nuscenes-v1.0-trainval`` is train (700 scenes) / val (150), ``nuscenes-v1.0-mini`` is mini_train (8) /
mini_val (2). Note that two mini_train scenes are val scenes of trainval: a list belongs to its version.
Any other dataset can bring its own as a JSON file ``{"train": [clip ids], "val": [clip ids]}``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

from gaia2 import storage

SPLIT_LISTS_FILE = "split_lists.json"   # a build's copy of the lists it split by
# packaged name -> (train list, val list) in nuscenes_splits.json
PACKAGED = {"nuscenes-v1.0-trainval": ("train", "val"), "nuscenes-v1.0-mini": ("mini_train", "mini_val"),
            "nuscenes-v1.0-test": (None, None)}


class SplitListError(ValueError):
    """Lists that cannot be used (unknown name, unreadable file, a clip in both); names ``split.lists``."""


@dataclass(frozen=True)
class OfficialSplit:
    name: str
    train: frozenset[str]
    val: frozenset[str]

    @classmethod
    def load(cls, lists: str) -> "OfficialSplit":
        """A packaged name or a JSON file (a path or URI)."""
        if lists in PACKAGED:
            data = json.loads(resources.files("gaia2").joinpath("data/nuscenes_splits.json").read_text())
            train, val = PACKAGED[lists]
            return cls(lists, frozenset(data[train] if train else ()), frozenset(data[val] if val else ()))
        try:
            data = json.loads(storage.read_bytes(lists))
        except (OSError, ValueError) as err:
            raise SplitListError(f"split.lists: {storage.redact(lists)!r} is neither a packaged list "
                                 f"({', '.join(PACKAGED)}) nor a readable JSON file ({err})") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) and
                                                 all(isinstance(c, str) for c in data[k]) for k in ("train", "val")):
            raise SplitListError(f"split.lists: {storage.redact(lists)!r} must be a JSON object "
                                 f"{{\"train\": [clip ids], \"val\": [clip ids]}}")
        both = sorted(set(data["train"]) & set(data["val"]))
        if both:
            raise SplitListError(f"split.lists: {len(both)} clip id(s) in both train and val, e.g. {both[:3]}")
        return cls(storage.redact(lists), frozenset(data["train"]), frozenset(data["val"]))

    def to_json(self) -> dict:
        return {"name": self.name, "train": sorted(self.train), "val": sorted(self.val)}

    @classmethod
    def from_json(cls, data: dict) -> "OfficialSplit":
        return cls(str(data["name"]), frozenset(data["train"]), frozenset(data["val"]))

    def split_of(self, clip_id: str) -> str | None:
        """"train", "val", or None for a clip in neither list."""
        return "val" if clip_id in self.val else "train" if clip_id in self.train else None

    def digest(self) -> str:
        """What the lists hold (the resume fingerprint covers it, not the file's name)."""
        body = json.dumps({"train": sorted(self.train), "val": sorted(self.val)})
        return hashlib.sha256(body.encode()).hexdigest()
