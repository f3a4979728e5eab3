"""One override mechanism for every job: --preset, --config, repeatable --set a.b=value and the short aliases,
each reaching the same typed field; an unknown field is an error naming it, before any work."""

from __future__ import annotations

import argparse

import pytest

from gaia2.config.base import ConfigError
from jobs.options import parse_sets, parse_value


def _jobs():
    """(name, its Command) for every job the CLI runs."""
    from jobs import build_shards, encode_latents, quickstart
    from jobs.specs import SPECS
    from jobs.train_driver import command

    return [("shards build", build_shards.COMMAND), ("encode-latents", encode_latents.COMMAND),
            ("quickstart", quickstart.COMMAND), *((f"train {n}", command(s)) for n, s in SPECS.items())]


JOBS = _jobs()
# Enough for each job's config to validate: the fields it requires, and files that exist.
REQUIRED = {
    "shards build": ["--source", "CLIPS", "--out", "OUT", "--clip-path", "CLIP"],
    "encode-latents": ["--shards", "SHARDS", "--tokenizer", "TOK", "--out", "OUT"],
    "quickstart": [],
    "train tokenizer": ["--set", "loss.dino=0", "--set", "loss.lpips=0"],
    "train world-model": [],
}


def _config(command, argv, tmp_path):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    argv = [str(tmp_path) if a in ("CLIPS", "OUT", "CLIP", "SHARDS", "TOK") else a for a in argv]
    return command.config(parser.parse_args(argv))


def test_set_values_are_yaml_scalars():
    assert parse_value("3") == 3 and parse_value("1e-3") == "1e-3" and parse_value("1.0e-3") == 1e-3
    assert parse_value("true") is True and parse_value("null") is None and parse_value("[0.9, 0.95]") == [0.9, 0.95]
    assert parse_sets(["optim.lr=3e-4", "workers.num_workers=2", "seed=7"]) == {
        "optim": {"lr": "3e-4"}, "workers": {"num_workers": 2}, "seed": 7}
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        parse_sets(["optim.lr"])
    with pytest.raises(ConfigError, match="cannot also have fields"):
        parse_sets(["seed=1", "seed.x=2"])


@pytest.mark.parametrize("name, command", JOBS, ids=[n for n, _ in JOBS])
def test_every_job_accepts_set_and_its_aliases(name, command, tmp_path):
    cfg = _config(command, [*REQUIRED[name], "--set", "seed=11"], tmp_path)
    assert cfg.seed == 11
    # An alias and --set of the same field: --set, the more explicit, wins.
    cfg = _config(command, [*REQUIRED[name], "--seed", "5", "--set", "seed=6"], tmp_path)
    assert cfg.seed == 6


@pytest.mark.parametrize("name, command", JOBS, ids=[n for n, _ in JOBS])
def test_every_job_rejects_an_unknown_field_by_name(name, command, tmp_path):
    with pytest.raises(ConfigError, match=r"no_such_field: Extra inputs are not permitted"):
        _config(command, [*REQUIRED[name], "--set", "no_such_field=1"], tmp_path)
    if name != "quickstart":   # its config is flat; every other job's has a job section
        with pytest.raises(ConfigError, match=r"job\.no_such_field: Extra inputs are not permitted"):
            _config(command, [*REQUIRED[name], "--set", "job.no_such_field=1"], tmp_path)


def test_set_reaches_nested_training_fields_and_typed_values(tmp_path):
    from jobs.specs import SPECS
    from jobs.train_driver import command

    cfg = _config(command(SPECS["world-model"]), ["--preset", "paper", "--shards", "L", "--set", "optim.lr=1.0e-4",
                                                  "--set", "optim.betas=[0.9, 0.95]", "--workers", "8",
                                                  "--set", "model.conditioning.max_agents=16"], tmp_path)
    assert cfg.preset == "paper" and cfg.optim.lr == 1e-4 and cfg.optim.betas == (0.9, 0.95)
    assert cfg.workers.num_workers == 8 and cfg.model.conditioning.max_agents == 16 and cfg.data.shards == "L"
    with pytest.raises(ConfigError, match="optim.lr: Input should be greater than 0"):
        _config(command(SPECS["world-model"]), ["--set", "optim.lr=-1"], tmp_path)


def test_the_cli_reports_an_unknown_field_without_a_traceback(tmp_path, capsys):
    from jobs.cli import main

    code = main(["train", "world-model", "--shards", str(tmp_path), "--set", "optim.learning_rate=1",
                 "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and "optim.learning_rate: Extra inputs are not permitted" in err and "Traceback" not in err
    assert not (tmp_path / "work").exists()
