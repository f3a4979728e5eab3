"""Training quality of any model of the spine, trained from scratch on synthetic data, against its baseline.

    python benchmarks/train_quality.py --model tokenizer|world-model [--clips 30] [--steps 300]

Synthetic clips -> shards (tokenizer: 24-frame windows at its 32 x 64; world model: 48-frame windows,
encoded to latent shards by ``--tokenizer`` or a random tiny tokenizer, a fixed random encoding) -> the
real training job on local Ray (Ray Data, Ray Train, MLflow) -> the EMA model evaluated on the validation
split (clips from geofenced areas the training split never touches).

tokenizer:   PSNR against the best constant prediction per clip (its mean colour): ``val_gain_db``.
             Its loss includes LPIPS and DINOv2 at 0.1; unless ``--dino-path`` / ``--lpips-torch-home``
             name real networks, random stand-ins of the same classes are used (the ``pretrained:`` line).
world model: flow loss against the best constant-velocity predictor: ``val_improvement`` = 1 - loss / baseline.

Prints the learning curve (validation every ``--val-every`` steps); the last line is one JSON object with
the final validation metrics, the steps and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import fresh, training_data  # noqa: E402

CURVES = {"tokenizer": ("val_psnr", "val_baseline_psnr"), "world-model": ("val_loss", "val_baseline_loss")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=tuple(CURVES), required=True)
    p.add_argument("--clips", type=int, default=30, help="synthetic clips (4 s each, over the three rigs)")
    p.add_argument("--steps", type=int, default=300, help="training steps (the tiny presets' 300; the tokenizer's "
                                                          "GAN fine-tune adds its 20)")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="world model: a tokenizer export directory (default: a random tiny one)")
    p.add_argument("--dino-path")
    p.add_argument("--lpips-torch-home")
    p.add_argument("--workdir", help="default: bench-quality-<model>")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from mlflow.tracking import MlflowClient

    from gaia2.config.base import deep_merge
    from jobs.specs import SPECS
    from jobs.tracking import tracking_uri
    from jobs.train_driver import run

    spec = SPECS[args.model]
    work = fresh(args.workdir or f"bench-quality-{args.model}")
    t0 = time.perf_counter()
    data = training_data(args.model, work, args.clips, args.seed, args.tokenizer, args.dino_path,
                         args.lpips_torch_home)
    data_s = time.perf_counter() - t0
    cfg = spec.build_config("tiny", overrides=deep_merge(data, {
        "seed": args.seed, "data": {"val_samples": 64},
        "schedule": {"steps": args.steps, "val_every": args.val_every, "checkpoint_every": args.steps, "log_every": 25},
        "job": {"name": "quality", "workdir": work}}))
    t1 = time.perf_counter()
    outcome = run(spec, cfg)
    train_s = time.perf_counter() - t1

    client = MlflowClient(tracking_uri(work))
    metric, baseline = CURVES[args.model]
    curve = {m.step: m.value for m in client.get_metric_history(outcome.run_id, metric)}
    base = {m.step: m.value for m in client.get_metric_history(outcome.run_id, baseline)}
    train = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "loss")}
    print("learning curve (EMA model on the validation split):")
    print(f"  step  train_loss  {metric:>10}  {baseline}")
    for step in sorted(curve):
        near = min(train, key=lambda s: abs(s - step)) if train else None
        print(f"  {step:>4}  {train.get(near, float('nan')):>10.4f}  {curve[step]:>10.4f}  {base[step]:.4f}")
    print(json.dumps({"model": args.model, **{k: round(v, 5) for k, v in outcome.metrics.items() if k.startswith("val_")},
                      "steps": cfg.total_steps, "data_seconds": round(data_s, 1), "train_seconds": round(train_s, 1),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
