"""``--promote ALIAS --by METRIC``: move an alias (e.g. ``champion``) to the evaluated registered version only when
it beats the version the alias holds on METRIC beyond the confidence intervals (the new interval lies wholly on
the better side of the holder's), and say why either way.

The holder's score is taken from its version's tags when an earlier evaluation recorded them under the same
protocol (dataset, samples, mode, steps, networks, intervals); otherwise the holder is evaluated in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.evaluate_models import Candidate, tag_for
from jobs.evaluate_report import TAG_PREFIX, better


@dataclass
class Holder:
    alias: str
    name: str                          # the registered model
    version: str | None                # the version the alias holds (None: the alias is not set)
    same: bool = False                 # the alias already holds the evaluated version
    scores: dict | None = None         # its figure for the metric from tags of the same protocol
    candidate: Candidate | None = None  # else: evaluated in this run


def holder_candidate(job, evaluated: Candidate, protocol: str) -> Holder:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from jobs.registry import model_version_of

    name, version = model_version_of(evaluated.world_model)
    client = MlflowClient()
    try:
        held = str(client.get_model_version_by_alias(name, job.promote).version)
    except MlflowException:
        return Holder(job.promote, name, None)
    if held == version:
        return Holder(job.promote, name, held, same=True)
    tags = client.get_model_version(name, held).tags
    metric = job.by
    if tags.get(f"{TAG_PREFIX}protocol") == protocol and f"{TAG_PREFIX}{metric}" in tags:
        low, high = tags.get(f"{TAG_PREFIX}{metric}.low"), tags.get(f"{TAG_PREFIX}{metric}.high")
        scores = {"value": float(tags[f"{TAG_PREFIX}{metric}"]), "low": None if low is None else float(low),
                  "high": None if high is None else float(high), "n": int(tags.get(f"{TAG_PREFIX}{metric}.n", 0)),
                  "from": f"tags of run {tags.get(f'{TAG_PREFIX}run_id')}"}
        return Holder(job.promote, name, held, scores=scores)
    ref = f"models:/{name}/{held}"
    return Holder(job.promote, name, held, candidate=Candidate(tag_for(ref), ref, role="holder"))


def _fmt(m: dict) -> str:
    interval = f" [{m['low']:.4g}, {m['high']:.4g}]" if m.get("low") is not None else " (no interval)"
    return f"{m['value']:.4g}{interval}"


def decide(job, report: dict, holder: Holder) -> dict:
    """Compare, move the alias when the evaluated version wins beyond the intervals; returns the decision."""
    from mlflow import MlflowClient

    from jobs.registry import model_version_of

    metric, alias = job.by, job.promote
    evaluated = next(c for c in report["candidates"] if c["role"] == "evaluated")
    name, version = model_version_of(evaluated["models"]["world_model"])
    new = evaluated["metrics"].get(metric)
    out = {"alias": alias, "metric": metric, "model": name, "evaluated": version, "holder": holder.version,
           "moved": False}
    level = f"{report['level']:.0%}"

    def move(reason: str) -> dict:
        MlflowClient().set_registered_model_alias(name, alias, version)
        return {**out, "moved": True, "decision": f"moved @{alias} to models:/{name}/{version}: {reason}"}

    def keep(reason: str) -> dict:
        return {**out, "decision": f"@{alias} unchanged: {reason}"}

    if holder.version is None:
        return move(f"@{alias} held no version yet")
    if holder.same:
        return keep(f"it already holds models:/{name}/{version}")
    old = holder.scores
    if old is None:
        held = next((c for c in report["candidates"] if c["role"] == "holder"), None)
        old = held["metrics"].get(metric) if held else None
    if new is None or old is None or new["value"] != new["value"] or old["value"] != old["value"]:
        return keep(f"{metric} could not be computed for both versions (evaluated {new and _fmt(new)}, holder "
                    f"{old and _fmt(old)})")
    if new.get("low") is None or old.get("low") is None:
        return keep(f"{metric} has no confidence interval (n = {new['n']} evaluated, {old.get('n')} holder; "
                    f"evaluate more samples) so no win beyond it can be shown")
    direction = better(metric)
    wins = new["high"] < old["low"] if direction == "lower" else new["low"] > old["high"]
    versus = (f"{metric} ({direction} is better) of v{version} {_fmt(new)} against v{holder.version} {_fmt(old)}"
              f"{' from ' + old['from'] if old.get('from') else ''}")
    if wins:
        return move(f"{versus}: better beyond the {level} intervals")
    ahead = new["value"] < old["value"] if direction == "lower" else new["value"] > old["value"]
    return keep(f"{versus}: {'better, but the intervals overlap' if ahead else 'not better'}")
