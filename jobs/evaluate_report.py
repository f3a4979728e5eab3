"""The evaluation's figures from its measurements, and where they go: the report, one MLflow run (metrics with
their intervals, plots, a frame grid, side-by-side videos) and tags on the evaluated registered versions.

Every metric is reported the same way, ``{"value", "low", "high", "n", ...}``: ``low`` / ``high`` the bootstrap
interval (None where the sample count does not allow one), ``n`` the number of generated items it was computed
over (frames, clips or videos; ``n_real`` beside it for distances) and ``samples`` the number of videos.
"""

from __future__ import annotations

import json
import os

import numpy as np

from gaia2 import storage
from jobs.evaluate import EXPERIMENT, HIGHER_IS_BETTER, LOWER_IS_BETTER, REPORT_FILE
from pipelines.evaluation.cache import select

TAG_PREFIX = "gaia2.eval."


def _distance(real: list[np.ndarray], fake: list[np.ndarray], cfg, samples: int, **extra) -> dict:
    """Fréchet distance of the pooled features; the bootstrap resamples whole samples (a video's frames and
    cameras are not independent draws)."""
    from gaia2.evaluation.frechet import frechet

    r, f = np.concatenate(real), np.concatenate(fake)
    groups = [np.concatenate([np.full(len(x), i) for i, x in enumerate(side)]) for side in (real, fake)]
    d = frechet(r, f, bootstrap=cfg.bootstrap, level=cfg.level, seed=cfg.job.seed, real_groups=groups[0],
                fake_groups=groups[1])
    return {"value": d.value, "low": d.low, "high": d.high, "n": d.n_fake, "n_real": d.n_real, "n_fake": d.n_fake,
            "samples": samples, **extra}


def compute_metrics(metrics: list[str], keys: list[str], real: dict, fake: dict, loss: dict | None, cfg
                    ) -> tuple[dict, dict]:
    """Measurements -> ({metric name: figure}, counts). ``real``: {measurement: {key: arrays or None}} (the
    cache); ``fake``: {key: arrays or None} (one model's generations). A sample counts where both sides were
    measured."""
    out: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for metric in ("fdd", "fid", "fvd", "fvmd"):
        if metric not in metrics:
            continue
        pairs = [(real[metric][k], fake[k]) for k in keys
                 if real[metric].get(k) is not None and fake.get(k) is not None and metric in fake[k]]
        counts[metric] = len(pairs)
        if len(pairs) < 2:
            out[metric] = _missing(len(pairs))
            continue
        rs = [select(r, metric, [str(c) for c in f["cameras"]]) for r, f in pairs]
        fs = [f[metric] for _, f in pairs]
        extra = {"tracker": cfg.networks.tracker} if metric == "fvmd" else {}
        out[metric] = _distance(rs, fs, cfg, len(pairs), **extra)
    if "iou" in metrics:
        from gaia2.evaluation.agent_iou import agent_iou

        ok = [k for k in keys if fake.get(k) is not None and "iou.inter" in fake[k]]
        counts["iou"] = len(ok)
        if ok:
            iou = agent_iou(np.stack([fake[k]["iou.inter"] for k in ok]), np.stack([fake[k]["iou.union"] for k in ok]),
                            bootstrap=cfg.bootstrap, level=cfg.level, seed=cfg.job.seed)
            out["agent_iou"] = _figure(iou.value, iou.low, iou.high, len(ok), per_class=iou.per_class)
            ref = [real["iou"][k] for k in keys if real["iou"].get(k) is not None]
            if ref:   # how well the segmenter finds the conditioned boxes in the real videos: the ceiling
                r = agent_iou(np.stack([x["iou.inter"] for x in ref]), np.stack([x["iou.union"] for x in ref]),
                              bootstrap=0)
                out["agent_iou"]["real_reference"] = r.value
        else:
            out["agent_iou"] = _missing(0)
    if "action" in metrics:
        from gaia2.evaluation.action import action_adherence

        ok = [k for k in keys if fake.get(k) is not None and "motion" in fake[k]]
        counts["action"] = len(ok)
        if len(ok) >= 2:
            cmd = np.stack([fake[k]["command"] for k in ok])
            mot = np.stack([fake[k]["motion"] for k in ok])
            a = action_adherence(cmd[:, 0], mot[:, 0], cmd[:, 1], mot[:, 1], bootstrap=cfg.bootstrap,
                                 level=cfg.level, seed=cfg.job.seed)
            out["action_speed_spearman"] = _figure(a.speed_spearman, a.speed_low, a.speed_high, a.n_samples)
            out["action_curvature_sign_agreement"] = _figure(a.curvature_sign_agreement, a.sign_low, a.sign_high,
                                                             a.n_turning)
            ref = [real["action"][k] for k in keys if real["action"].get(k) is not None]
            if len(ref) >= 2:
                rc, rm = np.stack([x["command"] for x in ref]), np.stack([x["motion"] for x in ref])
                r = action_adherence(rc[:, 0], rm[:, 0], rc[:, 1], rm[:, 1], bootstrap=0)
                out["action_speed_spearman"]["real_reference"] = r.speed_spearman
                out["action_curvature_sign_agreement"]["real_reference"] = r.curvature_sign_agreement
        else:
            out["action_speed_spearman"] = _missing(len(ok))
            out["action_curvature_sign_agreement"] = _missing(len(ok))
    if "loss" in metrics and loss is not None:
        out["val_loss"] = _figure(loss["val_loss"], loss.get("val_loss_low"), loss.get("val_loss_high"), int(loss["samples"]),
                                  by_tau={k.removeprefix("val_loss_tau_"): v for k, v in loss.items()
                                          if k.startswith("val_loss_tau_")},
                                  by_task={k.removeprefix("val_loss_task_"): v for k, v in loss.items()
                                           if k.startswith("val_loss_task_")})
        counts["loss"] = int(loss["samples"])
    return out, counts


def _figure(value: float, low, high, n: int, **extra) -> dict:
    return {"value": float(value), "low": None if low is None else float(low),
            "high": None if high is None else float(high), "n": int(n), "samples": int(n), **extra}


def _missing(n: int) -> dict:
    return {"value": float("nan"), "low": None, "high": None, "n": n, "samples": n,
            "note": f"measured on {n} samples: too few to compute"}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and np.isfinite(value)


# --------------------------------------------------------------------------------------------- tracking
def track(report: dict, cfg, out: str, holder, run_file_in: str | None = None) -> dict:
    """Log ``report`` to one MLflow run (experiment ``evaluation``; a rerun onto the same output continues it: its
    id is kept in ``run_file_in``, default ``out``, which may be an object-storage URI), tag the evaluated
    registered versions, decide a promotion; returns the report with the run and the decision. Its files are
    written under ``out`` (local)."""
    import mlflow

    from jobs.evaluate_promote import decide
    from jobs.tracking import log_config, output_run, tracking_uri

    job = cfg.job
    with output_run(EXPERIMENT, job.workdir, run_file_in or out) as (active, new):
        run_id = active.info.run_id
        report.update(run_id=run_id, tracking_uri=storage.redact(tracking_uri(job.workdir)))
        if new:
            log_config(cfg.model_dump())
        protocol = report["protocol"]
        mlflow.set_tags({"gaia2.eval.protocol": protocol["digest"], "gaia2.eval.protocol.name": protocol["name"],
                         "gaia2.eval.protocol.conforms": str(protocol["conforms"]).lower(),
                         "gaia2.eval.mode": job.mode,
                         "gaia2.eval.split": job.split, "gaia2.eval.tracker": cfg.networks.tracker,
                         "gaia2.eval.dataset": report["dataset"][:16],
                         **{f"gaia2.eval.model.{c['tag']}": c["world_model"] for c in report["candidates"]}})
        # what the figures follow, in full: settings, sources, deviations from the preset
        mlflow.log_dict(protocol, "evaluation/protocol.json")
        several = len([c for c in report["candidates"] if c["role"] == "evaluated"]) > 1
        for cand in report["candidates"]:
            values = {}
            prefix = "" if cand["role"] == "evaluated" else f"{cand['tag']}."
            for name, m in cand["metrics"].items():
                for part in ("value", "low", "high"):
                    if _finite(m.get(part)):
                        values[prefix + (name if part == "value" else f"{name}_{part}")] = m[part]
                values[f"{prefix}{name}_n"] = m["n"]
                for group in ("by_tau", "by_task"):
                    for k, v in (m.get(group) or {}).items():
                        values[f"{prefix}{name}_{group.removeprefix('by_')}_{k}"] = v
            step = cand["step"] if several and cand["step"] is not None else 0
            mlflow.log_metrics(values, step=step)
        _artifacts(report, cfg, out)
        for cand in report["candidates"]:
            cand["tagged_version"] = tag_version(cand, report, run_id)
        if job.promote:
            report["promotion"] = decide(job, report, holder)
            mlflow.set_tag("gaia2.eval.promotion", report["promotion"]["decision"][:5000])
        with open(os.path.join(out, REPORT_FILE + ".partial"), "w") as f:
            json.dump(report, f, indent=1, sort_keys=True, default=str)
        os.replace(os.path.join(out, REPORT_FILE + ".partial"), os.path.join(out, REPORT_FILE))
        mlflow.log_artifact(os.path.join(out, REPORT_FILE), artifact_path="evaluation")
    return report


def tag_version(cand: dict, report: dict, run_id: str) -> str | None:
    """Set the scores on the registered version ``cand`` evaluated (``gaia2.eval.<metric>`` = value, ``...low`` /
    ``...high`` / ``...n``, the protocol and the run); returns "models:/NAME/VERSION", or None for a directory."""
    from mlflow import MlflowClient

    from jobs.registry import model_version_of

    ref = cand["models"].get("world_model") or ""
    if not ref.startswith("models:/"):
        return None
    name, version = model_version_of(ref)
    client = MlflowClient()
    tags = {f"{TAG_PREFIX}protocol": report["protocol"]["digest"], f"{TAG_PREFIX}run_id": run_id,
            f"{TAG_PREFIX}protocol.name": report["protocol"]["name"], f"{TAG_PREFIX}mode": report["mode"]}
    for metric, m in cand["metrics"].items():
        if not _finite(m.get("value")):
            continue
        tags[f"{TAG_PREFIX}{metric}"] = repr(float(m["value"]))
        tags[f"{TAG_PREFIX}{metric}.n"] = str(m["n"])
        if m.get("low") is not None:
            tags[f"{TAG_PREFIX}{metric}.low"] = repr(float(m["low"]))
            tags[f"{TAG_PREFIX}{metric}.high"] = repr(float(m["high"]))
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    return f"models:/{name}/{version}"


def _artifacts(report: dict, cfg, out: str) -> None:
    """Plots, the frame grid and side-by-side videos, written under ``<out>/artifacts`` and logged."""
    import mlflow

    from jobs.evaluate_figures import frame_grid, metric_curves, side_by_side, tau_bars

    art = os.path.join(out, "artifacts")
    os.makedirs(art, exist_ok=True)
    evaluated = [c for c in report["candidates"] if c["role"] == "evaluated"]
    last = evaluated[-1]
    paths = []
    if len(evaluated) > 1 and all(c["step"] is not None for c in evaluated):
        paths.append(metric_curves(evaluated, os.path.join(art, "metrics_by_step.png")))
    if any("val_loss" in c["metrics"] and c["metrics"]["val_loss"].get("by_tau") for c in evaluated):
        paths.append(tau_bars(evaluated, os.path.join(art, "val_loss_by_tau.png")))
    gen_dir = os.path.join(out, "generations", last["tag"])
    keys = sorted(k for k in os.listdir(gen_dir) if os.path.isfile(os.path.join(gen_dir, k, "spec.json")))
    if keys:
        paths.append(frame_grid(cfg.job.shards, cfg.job.split, gen_dir, keys[:6], os.path.join(art, "grid.png")))
        for key in keys[:cfg.job.artifact_videos]:
            paths.append(side_by_side(cfg.job.shards, cfg.job.split, os.path.join(gen_dir, key),
                                      os.path.join(art, "videos", f"{key}.mp4")))
    for path in paths:
        if path:
            sub = os.path.relpath(os.path.dirname(path), art)
            mlflow.log_artifact(path, artifact_path="evaluation" if sub == "." else f"evaluation/{sub}")


def better(metric: str) -> str:
    return "lower" if metric in LOWER_IS_BETTER or metric.startswith("val_loss") else \
        "higher" if metric in HIGHER_IS_BETTER else "lower"
