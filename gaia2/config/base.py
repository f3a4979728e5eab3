"""Typed configs: strict pydantic models, named presets, YAML overrides, errors that name the field."""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A configuration that fails validation; the message names each bad field."""


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default)."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(root)"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], (dict, list)) else ""
        lines.append(f"{prefix}{field}: {e['msg']}{got}")
    return "; ".join(lines)


def build_config(cls: type[T], presets: Mapping[str, Callable[[], T]], preset: str | None = None,
                 overrides: Mapping[str, Any] | None = None, path: str | None = None) -> T:
    """Preset -> YAML file overrides -> explicit overrides, validated as ``cls``.

    A YAML file may name its own ``preset:``; an explicit ``preset`` argument wins.
    """
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path) as f:
                file_values = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"config file {path}: cannot read ({err})") from None
        if not isinstance(file_values, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping")
    name = preset or file_values.pop("preset", None) or "tiny"
    file_values.pop("preset", None)
    if name not in presets:
        raise ConfigError(f"preset: unknown preset {name!r}; choose one of {sorted(presets)}")
    values = presets[name]().model_dump()
    values = deep_merge(values, file_values)
    values = deep_merge(values, overrides or {})
    values["preset"] = name
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def derived(base: T, **changes: Any) -> T:
    """``base`` with ``changes`` applied, nested sections merged field by field: a preset written as its
    differences from another (``tiny = derived(paper(), optim={"lr": 1e-3}, ...)``). Not validated here:
    ``build_config`` validates whatever it builds from a preset."""
    update = {}
    for key, value in changes.items():
        current = getattr(base, key)
        update[key] = derived(current, **value) if isinstance(value, Mapping) and isinstance(current, BaseModel) \
            else value
    return base.model_copy(update=update)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> {"a.b.c": value} (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
