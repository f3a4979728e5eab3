"""Every evaluation metric at several checkpoints of one training run of the tiny world model (the paper's Fig. 13).

    python benchmarks/evaluation_trend.py [--clips 24] [--tokenizer-steps 100] [--steps 200] [--checkpoint-every 50]
        [--samples 8] [--sampler-steps 10] [--seed 1] [--workdir DIR]

The quickstart's pipeline, each stage through its job: synthetic clips -> pixel shards (``gaia2 shards build``) ->
the tiny tokenizer briefly trained on them (``gaia2 train tokenizer``: a random one decodes every generation to
noise) -> latent shards (``gaia2 encode-latents``) -> the tiny world model trained with a checkpoint kept every
``--checkpoint-every`` steps (``gaia2 train world-model``) -> one ``gaia2 evaluate --checkpoints <run dir>`` with
every metric (fdd, fid, fvd, fvmd, iou, action, loss) on the first ``--samples`` validation samples, the feature
networks and the segmenter tiny and randomly initialised (``write_tiny_networks``, ``write_tiny_segmenter``).

Random feature networks measure that the pipeline is right, not what a video shows: a trend in FDD / FID / FVD
here says the generations' statistics move toward the real videos' under a fixed random projection. The
validation loss, FVMD and action adherence need no learned features and depend on the model directly.

Prints one row per checkpoint with every metric (value and interval), the same measurements of the real videos
where they have one (iou, action: the ceiling), which metrics improved from the first to the last checkpoint (and
whether beyond both intervals: the intervals are per checkpoint, not of the difference), and, last, one JSON object.
The defaults take about 10 minutes on 2 idle cores; a seed gives the same numbers again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import fresh  # noqa: E402

# The report's metric names in table order (the evaluation's names for fdd, fid, fvd, fvmd, iou, action, loss).
COLUMNS = ("fdd", "fid", "fvd", "fvmd", "agent_iou", "action_speed_spearman", "action_curvature_sign_agreement",
           "val_loss")
SHORT = {"agent_iou": "iou", "action_speed_spearman": "speed_rho", "action_curvature_sign_agreement": "turn_sign"}


def improvement(metric: str, first: dict, last: dict) -> tuple[bool | None, bool | None]:
    """(the last checkpoint's value is better than the first's, and beyond both intervals) for ``metric``; None
    where either value could not be computed (e.g. the turn-sign agreement when no sample commands a turn)."""
    from jobs.evaluate import HIGHER_IS_BETTER

    a, b = first.get("value"), last.get("value")
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None, None
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0   # every other metric here is a distance or a loss
    improved = sign * (b - a) > 0
    intervals = None not in (first.get("low"), first.get("high"), last.get("low"), last.get("high"))
    beyond = improved and intervals and (last["low"] > first["high"] if sign > 0 else last["high"] < first["low"])
    return improved, bool(beyond)


def cell(m: dict | None) -> str:
    """value [low,high]; [-] without an interval; n/a where it could not be computed."""
    if m is None or m.get("value") is None or not math.isfinite(m["value"]):
        return "n/a" if m is None or m.get("n") is None else f"n/a (n={m['n']})"
    if m.get("low") is None:
        return f"{m['value']:.4g} [-]"
    return f"{m['value']:.4g} [{m['low']:.3g},{m['high']:.3g}]"


def plain(value):
    """NaN as null: the last line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def trend(report: dict, sampler_steps: int) -> tuple[list[str], dict]:
    """The evaluation's report (``jobs.evaluate.run``) -> the table's lines and the JSON result: every metric per
    checkpoint, which improved from the first checkpoint to the last, the real videos' reference, the samples."""
    candidates = [c for c in report["candidates"] if c["role"] == "evaluated"]
    samples = report["counts"]["samples"]
    lines = [f"{len(candidates)} checkpoints, {samples} validation samples ({sampler_steps} sampler steps); value "
             f"[low,high] ({report['level']:.0%} bootstrap interval; [-]: too few samples for one); failures: "
             f"{report['counts']['failures']}",
             f"{'step':>5}  " + "  ".join(f"{SHORT.get(c, c):<26}" for c in COLUMNS)]
    for cand in candidates:
        lines.append(f"{cand['step']:>5}  " + "  ".join(f"{cell(cand['metrics'].get(c)):<26}" for c in COLUMNS))
    first, last = candidates[0]["metrics"], candidates[-1]["metrics"]
    lines.append(f"{'n':>5}  " + "  ".join(f"{str(last.get(c, {}).get('n')):<26}" for c in COLUMNS))
    # The same measurement of the real videos (segmenter, ego-motion estimator): the ceiling of iou and action.
    reference = {c: plain(last[c]["real_reference"]) for c in COLUMNS if "real_reference" in last.get(c, {})}
    real = {c: "n/a" if v is None else f"{v:.4g}" for c, v in reference.items()}
    lines.append(f"{'real':>5}  " + "  ".join(f"{real.get(c, ''):<26}" for c in COLUMNS))
    improved, beyond = {}, {}
    for c in COLUMNS:
        if c in first and c in last:
            improved[c], beyond[c] = improvement(c, first[c], last[c])

    def names(which) -> str:
        return ", ".join(c + (" (beyond both intervals)" if which is True and beyond[c] else "")
                         for c in improved if improved[c] is which) or "none"

    lines.append(f"step {candidates[0]['step']} -> {candidates[-1]['step']}: improved: {names(True)}; "
                 f"not improved: {names(False)}; not computed: {names(None)}")
    result = {"checkpoints": [{"step": cand["step"], **{c: {k: plain(cand["metrics"][c].get(k))
                                                            for k in ("value", "low", "high", "n")}
                                                        for c in COLUMNS if c in cand["metrics"]}}
                              for cand in candidates],
              "improved": improved, "beyond_intervals": beyond, "real_reference": reference, "samples": samples}
    return lines, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=24, help="synthetic clips (the quickstart's 24)")
    p.add_argument("--tokenizer-steps", type=int, default=100, help="tokenizer main-stage steps")
    p.add_argument("--steps", type=int, default=200, help="world-model steps")
    p.add_argument("--checkpoint-every", type=int, default=50, help="world-model steps between kept checkpoints")
    p.add_argument("--samples", type=int, default=8, help="validation samples evaluated (8 or more give intervals)")
    p.add_argument("--sampler-steps", type=int, default=10, help="denoising steps of each generation")
    # Seed 1's 24 clips put 2 of their 8 drives in the validation geofences: 12 validation samples (seed 0's: 6).
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "gaia2-bench-eval-trend"),
                   help="emptied first")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    import ray

    from gaia2.evaluation.agent_iou import write_tiny_segmenter
    from gaia2.evaluation.features import write_tiny_networks
    from gaia2.synth.generate import generate_clips
    from jobs import build_shards, encode_latents, evaluate, train_driver
    from jobs.quickstart import pretrained_networks
    from jobs.specs import SPECS

    work = fresh(args.workdir)
    seconds = {}
    t0 = time.perf_counter()
    clips = os.path.join(work, "clips")
    generate_clips(clips, args.clips, seed=args.seed, workers=None)
    pretrained = pretrained_networks(work)
    shards, latents = os.path.join(work, "shards"), os.path.join(work, "latents")
    build_shards.run(build_shards.load_config("tiny", overrides={
        "seed": args.seed, "embedding": {"clip_path": pretrained["clip"]},
        "job": {"source": clips, "out": shards, "workdir": work}}))
    seconds["data"] = time.perf_counter() - t0

    t = time.perf_counter()
    spec = SPECS["tokenizer"]
    outcome = train_driver.run(spec, spec.build_config("tiny", overrides={
        "seed": args.seed, "data": {"shards": shards}, "schedule": {"steps": args.tokenizer_steps},
        "loss": {"dino_path": pretrained["dino"], "lpips_torch_home": pretrained["torch_home"]},
        "job": {"name": "tokenizer-eval-trend", "workdir": work}}))
    tokenizer = f"models:/{outcome.model_name}@candidate"
    print(f"tokenizer: trained {args.tokenizer_steps} steps: "
          + " ".join(f"{k}={v:.4g}" for k, v in outcome.metrics.items() if k.startswith("val_")), flush=True)
    seconds["tokenizer"] = time.perf_counter() - t

    t = time.perf_counter()
    encode_latents.run(encode_latents.load_config("tiny", overrides={
        "seed": args.seed, "job": {"shards": shards, "tokenizer": tokenizer, "out": latents, "workdir": work}}))
    seconds["latents"] = time.perf_counter() - t

    t = time.perf_counter()
    spec = SPECS["world-model"]
    # Ray Train keeps the newest keep_checkpoints checkpoints: keep them all (the last step always writes one).
    kept = math.ceil(args.steps / args.checkpoint_every) + 1
    outcome = train_driver.run(spec, spec.build_config("tiny", overrides={
        "seed": args.seed, "data": {"shards": latents},
        "schedule": {"steps": args.steps, "val_every": args.steps, "checkpoint_every": args.checkpoint_every,
                     "keep_checkpoints": max(2, kept)},
        "job": {"name": "world-model-eval-trend", "workdir": work}}))
    run_dir = os.path.dirname(outcome.checkpoint)   # <storage>/<job name>/checkpoint-<step>
    print(f"world model: trained {args.steps} steps, checkpoints in {run_dir}: "
          f"{sorted(d for d in os.listdir(run_dir) if d.startswith('checkpoint-'))}", flush=True)
    seconds["world_model"] = time.perf_counter() - t

    t = time.perf_counter()
    nets_dir = os.path.join(work, "models", "eval-nets")
    nets = write_tiny_networks(nets_dir, seed=args.seed)
    segmenter = write_tiny_segmenter(os.path.join(nets_dir, "segmenter"), seed=args.seed)
    # One generating actor, then one measuring actor, at a time: each may use every core of the largest node.
    cpus = max(1, int(max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)))
    report = evaluate.run(evaluate.load_config("tiny", overrides={
        "generation": {"num_cpus": cpus}, "measure": {"num_cpus": cpus},
        "networks": {"fdd": nets["fdd"], "fid": nets["fid"], "fvd": nets["fvd"], "segmenter": segmenter},
        "job": {"checkpoints": run_dir, "tokenizer": tokenizer, "shards": shards, "latents": latents,
                "samples": args.samples, "sampler_steps": args.sampler_steps, "seed": args.seed,
                "name": "eval-trend", "workdir": work}}))
    seconds["evaluate"] = time.perf_counter() - t

    lines, result = trend(report, args.sampler_steps)
    print("\n" + "\n".join(lines))
    seconds["total"] = time.perf_counter() - t0
    print(json.dumps({**result, "seconds": {k: round(v, 1) for k, v in seconds.items()}}))


if __name__ == "__main__":
    main()
