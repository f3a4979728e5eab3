"""The versioned metadata vocabulary: categorical scene labels shared by data and model.

Every variable has an explicit ``unknown`` at index 0. It stands for a missing value at ingest
and for conditioning dropout in the world model. An unrecognised string is an input error, never
a new id: the ids are part of the data contract, so adding a value bumps ``VOCAB_VERSION``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

VOCAB_VERSION = 2
UNKNOWN = "unknown"

# name -> values; index in the tuple is the id. Order is frozen per version: append only, so the ids of every
# earlier version mean the same under this one and its shards stay readable (``check_vocab_version``).
# v2: country "SG" (nuScenes' Singapore logs).
VOCABULARY: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "country": (UNKNOWN, "GB", "US", "DE", "SG"),
    "weather": (UNKNOWN, "clear", "cloudy", "rain", "fog", "snow"),
    "time_of_day": (UNKNOWN, "day", "dawn_dusk", "night"),
    # Posted limit in km/h (20 mph = 32 km/h and friends are rounded to these bins at ingest).
    "speed_limit": (UNKNOWN, "20", "30", "40", "50", "60", "70", "80", "100", "120", "130"),
    "num_lanes": (UNKNOWN, "1", "2", "3", "4", "5+"),
    "lane_types": (UNKNOWN, "none", "bus", "cycle", "bus_and_cycle"),
    "pedestrian_crossing": (UNKNOWN, "no", "yes"),
    "traffic_light_state": (UNKNOWN, "none", "red", "amber", "green"),
    "one_way": (UNKNOWN, "no", "yes"),
    "intersection_type": (UNKNOWN, "none", "t_junction", "crossroad", "roundabout"),
})

METADATA_KEYS: tuple[str, ...] = tuple(VOCABULARY)

# Agent categories share the convention: 0 is unknown / padding.
AGENT_CATEGORIES: tuple[str, ...] = (UNKNOWN, "car", "van", "bus", "cyclist", "pedestrian")


class VocabularyError(ValueError):
    """A metadata name or value outside the vocabulary of ``VOCAB_VERSION``."""


def encode_metadata(metadata: Mapping[str, str | None]) -> dict[str, int]:
    """{name: value or None} -> {name: id} over every vocabulary variable (missing -> 0)."""
    extra = sorted(set(metadata) - set(VOCABULARY))
    if extra:
        raise VocabularyError(f"unknown metadata variable(s) {extra}; vocabulary v{VOCAB_VERSION} has {list(VOCABULARY)}")
    ids = {}
    for name, values in VOCABULARY.items():
        value = metadata.get(name)
        if value is None:
            ids[name] = 0
            continue
        if not isinstance(value, str) or value not in values:
            raise VocabularyError(
                f"metadata.{name}: unknown value {value!r}; vocabulary v{VOCAB_VERSION} allows {list(values)}")
        ids[name] = values.index(value)
    return ids


def check_vocab_version(version: object, where: str) -> int:
    """A shard's ``vocab_version``: any earlier version reads as this one (values are only ever appended); a
    later one holds ids this code does not know, and is refused."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VOCAB_VERSION:
        raise VocabularyError(f"{where}: vocab_version {version!r} is not readable by vocabulary v{VOCAB_VERSION} "
                              f"(versions 1..{VOCAB_VERSION}; a newer one needs a newer gaia2)")
    return version


def decode_metadata(ids: Mapping[str, int]) -> dict[str, str]:
    """{name: id} -> {name: value}."""
    return {name: VOCABULARY[name][int(i)] for name, i in ids.items()}


def category_id(name: str) -> int:
    if name not in AGENT_CATEGORIES or name == UNKNOWN:
        raise VocabularyError(f"unknown agent category {name!r}; allowed {list(AGENT_CATEGORIES[1:])}")
    return AGENT_CATEGORIES.index(name)


def vocabulary_sizes() -> dict[str, int]:
    """Embedding-table sizes for the world model's metadata encoder."""
    return {name: len(values) for name, values in VOCABULARY.items()}
