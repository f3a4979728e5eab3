"""Tokenizer reconstruction quality: the tiny preset trained from scratch, against a mean-colour baseline.

    python benchmarks/tokenizer_quality.py [--clips 30] [--steps 300] [--workdir bench-tokenizer]

Synthetic clips -> shards (24-frame windows at the tiny tokenizer's 32 x 64) -> ``gaia2 train tokenizer``
on local Ray (the real job: Ray Data decoding, Ray Train, MLflow) -> the EMA model evaluated on the
validation split (clips from geofenced areas the training split never touches).

baseline: the best constant prediction per clip under L2, i.e. each clip's mean colour, scored with
          the same PSNR. ``gain_db`` = val_psnr - baseline_psnr.

The loss has the tiny preset's weights, including LPIPS and DINOv2 at 0.1; their pretrained weights
cannot be downloaded here, so unless ``--dino-path`` / ``--lpips-torch-home`` name real ones,
randomly initialised stand-ins of the same classes are used (the line ``pretrained:`` says which).
Prints the learning curve (validation PSNR every ``--val-every`` steps); the last line is one JSON
object: {"val_psnr", "baseline_psnr", "gain_db", "val_ssim", "steps", "seconds", ...}.
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
    p.add_argument("--clips", type=int, default=30, help="synthetic clips (4 s each, over the three rigs)")
    p.add_argument("--steps", type=int, default=300, help="main-stage steps (the tiny preset's 300; the GAN "
                                                          "fine-tune adds its 20)")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dino-path")
    p.add_argument("--lpips-torch-home")
    p.add_argument("--workdir", default="bench-tokenizer")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from mlflow.tracking import MlflowClient

    from gaia2.config.shards import load_shard_config
    from gaia2.embedding.clip import save_random_clip
    from gaia2.synth.generate import generate_clips
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone
    from gaia2.tokenizer.train_config import train_config
    from jobs.runtime import init_ray
    from jobs.tracking import tracking_uri
    from jobs.train_tokenizer import run
    from pipelines.shards.build import build_shards

    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    clips = os.path.join(work, "clips")
    generate_clips(clips, args.clips, seed=args.seed, duration_s=4.0, workers=None)
    init_ray()
    shard_cfg = load_shard_config("tiny", overrides={
        "window": {"frames": 24, "hop": 12}, "image": {"height": 32, "width": 64},
        "balance": {"min_stride_s": 0.5}, "shards": {"target_mb": 1.0},
        "embedding": {"clip_path": save_random_clip(os.path.join(work, "models", "clip"))}})
    shards = os.path.join(work, "shards")
    build_shards(clips, shards, shard_cfg)
    data_s = time.perf_counter() - t0

    pretrained = {"dino": "given" if args.dino_path else "random stand-in",
                  "lpips": "given" if args.lpips_torch_home else "random stand-in"}
    dino = args.dino_path or save_random_dinov2(os.path.join(work, "models", "dino"))
    torch_home = args.lpips_torch_home or os.path.join(work, "models", "torch")
    if not args.lpips_torch_home:
        save_random_lpips_backbone(torch_home)
    print(f"pretrained: DINOv2 {pretrained['dino']}, LPIPS backbone {pretrained['lpips']}", flush=True)
    cfg = train_config("tiny", overrides={
        "seed": args.seed, "loss": {"dino_path": dino, "lpips_torch_home": torch_home},
        "data": {"shards": shards, "val_clips": 64},
        "schedule": {"steps": args.steps, "val_every": args.val_every, "checkpoint_every": args.steps,
                     "log_every": 25}})
    t1 = time.perf_counter()
    outcome = run(cfg, "quality", work)
    train_s = time.perf_counter() - t1

    client = MlflowClient(tracking_uri(work))
    curve = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "val_psnr")}
    losses = {m.step: m.value for m in client.get_metric_history(outcome.run_id, "loss")}
    print("learning curve (EMA model on the validation split):")
    print("  step  train_loss  val_psnr")
    for step in sorted(curve):
        near = min(losses, key=lambda s: abs(s - step)) if losses else None
        print(f"  {step:>4}  {losses.get(near, float('nan')):>10.4f}  {curve[step]:>8.2f}")
    m = outcome.metrics
    print(json.dumps({
        "val_psnr": round(m["val_psnr"], 3), "baseline_psnr": round(m["val_baseline_psnr"], 3),
        "gain_db": round(m["val_gain_db"], 3), "val_ssim": round(m["val_ssim"], 4),
        "val_lpips": round(m.get("val_lpips", float("nan")), 4), "val_clips": int(m["val_clips"]),
        "steps": cfg.total_steps, "data_seconds": round(data_s, 1), "train_seconds": round(train_s, 1),
        "seconds": round(time.perf_counter() - t0, 1), "pretrained": pretrained}))


if __name__ == "__main__":
    main()
