"""One override mechanism for every job: ``--preset``, ``--config FILE`` and repeatable ``--set a.b=value``.

A job's whole configuration is one typed config (pydantic, see ``gaia2.config.base``); the command line
only says which preset, which YAML file and which fields to change. The flags people use most are
aliases of config fields (``--shards`` is ``--set data.shards=...``), declared once per job as
``Alias`` rows, so no job maps flags to fields by hand. Precedence: preset < ``--config`` < aliases <
``--set`` (the later, more explicit one wins). Every error names the field.

    gaia2 train world-model --preset tiny --shards latents/ --set optim.lr=3e-4 --set workers.num_workers=2
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import yaml

from gaia2.config.base import ConfigError, deep_merge

Build = Callable[..., Any]   # build(preset=, path=, overrides=) -> a validated config (raises ConfigError)


@dataclass(frozen=True)
class Alias:
    """A short flag for one config field: ``--flag VALUE`` == ``--set field=VALUE``."""
    flag: str
    field: str
    help: str
    type: Callable[[str], Any] | None = str     # None: a switch that sets the field to True
    metavar: str | None = None


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars or flow collections: 3, 1e-3, true, null, [0.9, 0.95], {a: 1}.
    Anything YAML cannot read stays the string it was."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_field(overrides: dict, field: str, value: Any) -> None:
    """``overrides["a"]["b"] = value`` for ``field`` "a.b"."""
    keys = field.split(".")
    if not all(keys):
        raise ConfigError(f"--set {field}: empty field name (expected a.b.c=value)")
    node = overrides
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {field}: {key!r} is set to a value and cannot also have fields")
        node = child
    node[keys[-1]] = value


def parse_sets(items: Sequence[str]) -> dict:
    overrides: dict = {}
    for item in items:
        field, eq, text = item.partition("=")
        if not eq or not field.strip():
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set optim.lr=3e-4")
        set_field(overrides, field.strip(), parse_value(text))
    return overrides


def add_config_arguments(parser: argparse.ArgumentParser, aliases: Sequence[Alias], presets: Sequence[str]) -> None:
    parser.add_argument("--preset", help=f"config preset: {' or '.join(presets)} (default {presets[0]})")
    parser.add_argument("--config", metavar="FILE", help="YAML overrides on top of the preset (may name its own `preset:`)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one config field, e.g. --set optim.lr=3e-4 (repeatable)")
    for a in aliases:
        if a.type is None:
            parser.add_argument(a.flag, dest=_dest(a), action="store_true", default=None,
                                help=f"{a.help} ({a.field}=true)")
        else:
            parser.add_argument(a.flag, dest=_dest(a), type=a.type,
                                metavar=a.metavar or a.field.rsplit(".", 1)[-1].upper(),
                                help=f"{a.help} ({a.field})")


def _dest(alias: Alias) -> str:
    return "alias_" + alias.flag.lstrip("-").replace("-", "_")


def resolve(args: argparse.Namespace, aliases: Sequence[Alias], build: Build) -> Any:
    """The parsed command line -> the job's validated config (``ConfigError`` names the bad field)."""
    overrides: dict = {}
    for a in aliases:
        value = getattr(args, _dest(a), None)
        if value is not None:
            set_field(overrides, a.field, value)
    overrides = deep_merge(overrides, parse_sets(getattr(args, "sets", []) or []))
    return build(preset=args.preset, path=args.config, overrides=overrides)


@dataclass(frozen=True)
class Command:
    """A job as the command line sees it: its config (presets, aliases, how to build it) and its work.
    ``gaia2 <job>``, ``python -m jobs.<job>``, the quickstart and the benchmarks all go through ``build`` and
    ``work``, so a flag, a ``--set`` and a YAML key reach the same typed field."""
    prog: str
    description: str
    aliases: tuple[Alias, ...]
    presets: tuple[str, ...]
    build: Build                                   # (preset=, path=, overrides=) -> the validated config
    work: Callable[[Any], str]                     # config -> the summary printed at the end
    input_errors: tuple[type[Exception], ...] = ()  # bad input the job reports like a config error

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_config_arguments(parser, self.aliases, self.presets)

    def config(self, args: argparse.Namespace) -> Any:
        return resolve(args, self.aliases, self.build)

    def execute(self, args: argparse.Namespace) -> int:
        """The error contract of every job: bad configuration or input prints ``error: ...`` (no traceback)
        and returns 2; a training failure past its retries returns 1 and says how to resume; anything else
        is a bug and raises."""
        from jobs.tracking import TrackingError   # the tracking server gone, a resumed job's run gone

        try:
            text = self.work(self.config(args))
        except (ConfigError, TrackingError, *self.input_errors) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except Exception as err:
            import ray.train

            if not isinstance(err, ray.train.TrainingFailedError):
                raise
            # The workers' tracebacks are already in the log above; checkpoints and the MLflow run are kept.
            print(f"error: training failed: {str(err).splitlines()[0]}\nrun the same command again to resume "
                  f"from the last checkpoint", file=sys.stderr)
            return 1
        print(text)
        return 0

    def main(self, argv: Sequence[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        self.add_arguments(parser)
        return self.execute(parser.parse_args(argv))
