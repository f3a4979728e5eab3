"""World-model quality on latents of a *trained* tiny tokenizer, against the constant-velocity baseline.

    python benchmarks/world_model_quality.py [--clips 24] [--tokenizer-steps 200] [--steps 300] [--val-every 50]
        [--tokenizer DIR_OR_MODEL_URI] [--mode sample|mean] [--workdir bench-wm-quality]

The quickstart's pipeline, each stage through its job: synthetic clips -> shards (``gaia2 shards build``) ->
the tiny tokenizer trained on them (``gaia2 train tokenizer``; or ``--tokenizer``: an existing one) -> latent
shards, whose per-channel statistics ``encode-latents`` measures (``gaia2 encode-latents``) -> the tiny world
model trained on them with those statistics (``gaia2 train world-model``), its EMA model validated every
``--val-every`` steps on the geofenced validation split.

The ratio reported is ``val_improvement`` = 1 - flow loss / loss of the best constant-velocity predictor (per
latent channel, the mean target), on the same validation draws. Prints the learning curve and, last, one JSON
line with the final metrics, the latent statistics' range and the seconds of each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import fresh  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=24, help="synthetic clips (the quickstart's 24)")
    p.add_argument("--tokenizer-steps", type=int, default=200, help="tokenizer main-stage steps (the quickstart's)")
    p.add_argument("--steps", type=int, default=300, help="world-model steps (the quickstart's 300)")
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="a trained tokenizer (export directory or models:/ URI) instead of training one")
    p.add_argument("--mode", choices=("sample", "mean"), default="sample",
                   help="latents: posterior samples (the quickstart's, the paper's) or means")
    p.add_argument("--workdir", default="bench-wm-quality")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from mlflow.tracking import MlflowClient

    from gaia2.flow.stats import read_stats
    from gaia2.synth.generate import generate_clips
    from jobs import build_shards, encode_latents, train_driver
    from jobs.quickstart import pretrained_networks
    from jobs.specs import SPECS
    from jobs.tracking import tracking_uri

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

    tokenizer = args.tokenizer
    if tokenizer is None:
        t = time.perf_counter()
        spec = SPECS["tokenizer"]
        outcome = train_driver.run(spec, spec.build_config("tiny", overrides={
            "seed": args.seed, "data": {"shards": shards}, "schedule": {"steps": args.tokenizer_steps},
            "loss": {"dino_path": pretrained["dino"], "lpips_torch_home": pretrained["torch_home"]},
            "job": {"name": "tokenizer-bench", "workdir": work}}))
        tokenizer = f"models:/{outcome.model_name}@candidate"
        print(f"tokenizer: trained {args.tokenizer_steps} steps: "
              + " ".join(f"{k}={v:.4g}" for k, v in outcome.metrics.items() if k.startswith("val_")), flush=True)
        seconds["tokenizer"] = time.perf_counter() - t

    t = time.perf_counter()
    encode_latents.run(encode_latents.load_config("tiny", overrides={
        "seed": args.seed, "mode": args.mode, "job": {"shards": shards, "tokenizer": tokenizer, "out": latents,
                                                      "workdir": work}}))
    stats = read_stats(latents)
    print(f"latents: {args.mode} mode; measured statistics: {stats.summary()}", flush=True)
    seconds["latents"] = time.perf_counter() - t

    t = time.perf_counter()
    spec = SPECS["world-model"]
    outcome = train_driver.run(spec, spec.build_config("tiny", overrides={
        "seed": args.seed, "data": {"shards": latents},
        "schedule": {"steps": args.steps, "val_every": args.val_every, "checkpoint_every": args.steps},
        "job": {"name": "world-model-bench", "workdir": work}}))
    seconds["world_model"] = time.perf_counter() - t

    client = MlflowClient(tracking_uri(work))
    history = {key: {m.step: m.value for m in client.get_metric_history(outcome.run_id, key)}
               for key in ("loss", "val_loss", "val_baseline_loss", "val_improvement")}
    print("learning curve (EMA world model on the validation split):")
    print("  step  train_loss  val_loss  baseline  improvement")
    train = history["loss"]
    for step in sorted(history["val_loss"]):
        near = min(train, key=lambda s: abs(s - step)) if train else None
        print(f"  {step:>4}  {train.get(near, float('nan')):>10.4f}  {history['val_loss'][step]:>8.4f}  "
              f"{history['val_baseline_loss'][step]:>8.4f}  {history['val_improvement'][step]:>11.4f}")
    print(json.dumps({
        "tokenizer": tokenizer if args.tokenizer else f"trained here ({args.tokenizer_steps} steps)",
        "mode": args.mode, **{k: round(v, 5) for k, v in outcome.metrics.items() if k.startswith("val_")},
        "latent_std_range": [round(min(stats.std), 4), round(max(stats.std), 4)],
        "latent_mean_range": [round(min(stats.mean), 4), round(max(stats.mean), 4)],
        "steps": args.steps, **{f"{k}_seconds": round(v, 1) for k, v in seconds.items()},
        "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
