"""World-model quality: the tiny preset trained on synthetic latent shards, against the best constant velocity.

    python benchmarks/world_model_quality.py [--clips 30] [--steps 300] [--workdir bench-world-model]

Synthetic clips -> shards (48-frame windows) -> latent shards (a tiny tokenizer; ``--tokenizer`` takes a
trained one, else a randomly initialised one is used: its latents are a fixed random encoding of the
videos, which keeps their structure) -> ``gaia2 train world-model`` on local Ray (the real job) -> the
EMA model's flow loss on the validation split.

baseline: the best constant-velocity predictor under the same tau and task draws: per latent channel the
          mean target velocity of the validation elements in the loss (an oracle constant, so the
          strongest one). ``improvement`` = 1 - val_loss / baseline_loss.

Prints the learning curve (validation every ``--val-every`` steps); the last line is one JSON object:
{"val_loss", "baseline_loss", "improvement", "steps", "seconds", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=30)
    p.add_argument("--steps", type=int, default=300, help="training steps (the tiny preset's 300)")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="a save_tokenizer directory (default: a random tiny tokenizer)")
    p.add_argument("--workdir", default="bench-world-model")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    import torch
    from mlflow.tracking import MlflowClient

    from gaia2.config.shards import load_shard_config
    from gaia2.embedding.clip import save_random_clip
    from gaia2.synth.generate import generate_clips
    from gaia2.tokenizer import Tokenizer, tiny
    from gaia2.tokenizer.export import save_tokenizer
    from gaia2.world_model.train_config import train_config
    from jobs.runtime import init_ray
    from jobs.tracking import tracking_uri
    from jobs.train_world_model import run
    from pipelines.shards.build import build_shards
    from pipelines.tokenizer.latents import encode_latents, latent_config

    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    clips = os.path.join(work, "clips")
    generate_clips(clips, args.clips, seed=args.seed, duration_s=4.0, workers=None)
    init_ray()
    shards = os.path.join(work, "shards")
    build_shards(clips, shards, load_shard_config("tiny", overrides={
        "balance": {"min_stride_s": 0.5}, "shards": {"target_mb": 2.0},
        "embedding": {"clip_path": save_random_clip(os.path.join(work, "models", "clip"))}}))
    tokenizer = args.tokenizer
    if tokenizer is None:
        torch.manual_seed(args.seed)
        tokenizer = save_tokenizer(os.path.join(work, "models", "tokenizer"), Tokenizer(tiny()))
    print(f"tokenizer: {'given' if args.tokenizer else 'random tiny (fixed random encoding)'} {tokenizer}", flush=True)
    latents = os.path.join(work, "latents")
    encode_latents(shards, tokenizer, latents, latent_config(mode="mean"))
    data_s = time.perf_counter() - t0

    cfg = train_config("tiny", overrides={
        "seed": args.seed, "data": {"shards": latents, "val_samples": 64},
        "schedule": {"steps": args.steps, "val_every": args.val_every, "checkpoint_every": args.steps,
                     "log_every": 25}})
    t1 = time.perf_counter()
    outcome = run(cfg, "quality", work)
    train_s = time.perf_counter() - t1

    client = MlflowClient(tracking_uri(work))
    val = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "val_loss")}
    base = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "val_baseline_loss")}
    train = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "loss")}
    print("learning curve (EMA model on the validation split):")
    print("  step  train_loss  val_loss  baseline")
    for step in sorted(val):
        near = min(train, key=lambda s: abs(s - step)) if train else None
        print(f"  {step:>4}  {train.get(near, float('nan')):>10.4f}  {val[step]:>8.4f}  {base[step]:>8.4f}")
    m = outcome.metrics
    print(json.dumps({"val_loss": round(m["val_loss"], 5), "baseline_loss": round(m["val_baseline_loss"], 5),
                      "improvement": round(m["val_improvement"], 4), "val_samples": int(m["val_samples"]),
                      "steps": cfg.total_steps, "data_seconds": round(data_s, 1), "train_seconds": round(train_s, 1),
                      "seconds": round(time.perf_counter() - t0, 1),
                      "tokenizer": "given" if args.tokenizer else "random"}))


if __name__ == "__main__":
    main()
