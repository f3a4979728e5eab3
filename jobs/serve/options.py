"""What a spec may name, for clients and the page (``GET /v1/options``): rigs, metadata values, action profiles
with their parameters and defaults, agent categories, the configured dataset's samples, the service's limits."""

from __future__ import annotations

import inspect

from gaia2.generation.actions import CURVATURE_PROFILES, SPEED_PROFILES
from gaia2.generation.spec import MODES
from gaia2.schema.metadata import AGENT_CATEGORIES, UNKNOWN, VOCABULARY
from gaia2.synth.rigs import RIGS

MAX_SAMPLES_LISTED = 500


def _params(fn) -> dict[str, float]:
    return {name: p.default for name, p in list(inspect.signature(fn).parameters.items())[1:]
            if p.default is not inspect.Parameter.empty}


def options(samples: list[str], limits: dict, geometry: dict | None) -> dict:
    return {
        "modes": list(MODES),
        "rigs": {rig_id: [c.name for c in rig.cameras] for rig_id, rig in RIGS.items()},
        "metadata": {k: [v for v in values if v != UNKNOWN] for k, values in VOCABULARY.items()},
        "speed_profiles": {name: _params(fn) for name, fn in SPEED_PROFILES.items()},
        "curvature_profiles": {name: _params(fn) for name, fn in CURVATURE_PROFILES.items()},
        "agent_categories": [c for c in AGENT_CATEGORIES if c != UNKNOWN],
        "samples": samples[:MAX_SAMPLES_LISTED],
        "limits": {**limits, "max_agents": geometry["max_agents"] if geometry else None,
                   "window": geometry["window"] if geometry else None},
    }
