"""Selection and shard plan: split (by geofence or official lists), minimum stride per drive, balancing,
shard names.

Runs on the driver over window metadata only (no pixels). Every window ends up in exactly one of:
the plan (to be written) or the not-selected list (with its reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from gaia2.config.shards import ShardBuildConfig
from gaia2.curation.balance import balance, cell_of
from gaia2.curation.geofence import Geofences
from gaia2.curation.official import OfficialSplit
from gaia2.curation.stride import select_by_stride
from gaia2.schema.errors import Reason

SPLITS = ("train", "val")


@dataclass
class Plan:
    selected: list[dict]                 # window rows + split, cell, weight, shard; sorted by key
    not_selected: list[dict]             # window rows + split, cell, reason
    balance: dict[str, dict] = field(default_factory=dict)   # per split: counts, masses, entropies
    samples_per_shard: int = 1

    def shards(self) -> list[str]:
        return sorted({row["shard"] for row in self.selected})


def estimate_sample_bytes(cfg: ShardBuildConfig, cameras: float) -> float:
    """Rough size of one sample, from the video bit budget; used only to size shards."""
    video = cameras * cfg.window.frames * cfg.image.height * cfg.image.width * cfg.shards.bits_per_pixel / 8
    arrays = cfg.window.frames * cameras * cfg.detection.max_agents * 14 * 4
    return video + arrays + 8192   # json, embeddings, tar headers


def make_plan(windows: list[dict], cfg: ShardBuildConfig, geofences: Geofences,
              official: OfficialSplit | None = None) -> Plan:
    """``official``: split by its lists (``split.kind: official``) instead of the geofences."""
    rows, selected, not_selected, stats = [], [], [], {}
    for row in sorted(windows, key=lambda r: r["key"]):
        row["cell"] = cell_of(json.loads(row["metadata_json"]), cfg.balance.keys)
        if official is None:
            track = np.asarray(json.loads(row["track_json"]), dtype=np.float64)
            row["split"] = "val" if geofences.touches(track) else "train"
        else:
            row["split"] = official.split_of(row["clip_id"]) or ""
            if not row["split"]:
                not_selected.append({**row, "reason": Reason.NOT_SELECTED_SPLIT.value,
                                     "detail": f"clip {row['clip_id']} is in neither the train nor the val list "
                                               f"of {official.name}"})
                continue
        rows.append(row)
    # The stride holds per drive across both splits, so no two selected windows of a drive overlap
    # in time, whichever split each landed in.
    keep = select_by_stride([r["drive_id"] for r in rows], np.asarray([r["start_time"] for r in rows]),
                            [r["key"] for r in rows], cfg.balance.min_stride_s)
    for r, k in zip(rows, keep):
        if not k:
            not_selected.append({**r, "reason": Reason.NOT_SELECTED_STRIDE.value,
                                 "detail": f"within {cfg.balance.min_stride_s} s of a kept window of drive {r['drive_id']}"})
    for split in SPLITS:
        kept = [r for r, k in zip(rows, keep) if k and r["split"] == split]
        if split in cfg.balance.splits and kept:
            result = balance([r["cell"] for r in kept], [r["key"] for r in kept], cfg.balance.temperature,
                             cfg.balance.repeat_cap, cfg.seed)
            stats[split] = {"cells_before": result.counts_before, "cells_after": result.mass_after,
                            "entropy_before": result.entropy_before, "entropy_after": result.entropy_after}
            for r, sel, w in zip(kept, result.selected, result.weight):
                if sel:
                    selected.append({**r, "weight": float(w)})
                else:
                    not_selected.append({**r, "reason": Reason.NOT_SELECTED_BALANCE.value,
                                         "detail": f"cell {r['cell']} down-sampled (temperature {cfg.balance.temperature})"})
        else:
            selected.extend({**r, "weight": 1.0} for r in kept)
    cams = np.mean([r["cameras"] for r in selected]) if selected else 6
    per_shard = max(1, int(cfg.shards.target_mb * 2**20 // estimate_sample_bytes(cfg, float(cams))))
    selected.sort(key=lambda r: r["key"])
    for split in SPLITS:
        part = [r for r in selected if r["split"] == split]
        for i, r in enumerate(part):
            r["shard"] = f"{split}/shard-{i // per_shard:06d}"
    return Plan(selected, sorted(not_selected, key=lambda r: r["key"]), stats, per_shard)

