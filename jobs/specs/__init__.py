"""The trainable models of the training spine, by name. Adding a model: write a ``ModelSpec`` subclass in
its own module here and list it below; ``gaia2 train <name>`` and ``python -m jobs.train <name>`` then run it."""

from __future__ import annotations

from jobs.specs.base import ModelSpec
from jobs.specs.tokenizer import TokenizerSpec
from jobs.specs.world_model import WorldModelSpec

SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (TokenizerSpec(), WorldModelSpec())}


def spec_for_format(export_format: str) -> ModelSpec:
    """The spec whose exports carry ``export_format`` in their config.json."""
    for spec in SPECS.values():
        if spec.export_format == export_format:
            return spec
    raise ValueError(f"no trainable model exports format {export_format!r} (known: "
                     f"{sorted(s.export_format for s in SPECS.values())})")
