"""Tokenizer training throughput under Ray Train against the same step loop in plain PyTorch, in one run.

    python benchmarks/train_tokenizer.py [--steps 80] [--repeats 2] [--batch-size 8] [--workdir bench-train]

ray:   ``gaia2 train tokenizer`` (the real job: a TorchTrainer worker, Ray Data decoding the shards,
       rank-0 MLflow logging, a checkpoint at the end), tiny preset, one worker.
plain: ``TokenizerTrainer.train_step`` in a loop in this process, fed by the same Ray Data pipeline
       over the same shards (so both wait on the same decoding), with as many torch threads as the
       Ray worker has CPUs.

Both report steps/s over the same intervals of ``--log-every`` steps, excluding the first interval
(start-up: worker group, first decoded batches); each is the harmonic mean over intervals (total
steps over total time). They run alternately ``--repeats`` times; ``ratio`` = median ray / median
plain. The last line is one JSON object: {"ray_steps_per_s", "plain_steps_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.throughput import harmonic_rate, job_steps_per_s  # noqa: E402


def ray_run(cfg, work: str, name: str) -> float:
    from jobs.train_tokenizer import run

    return job_steps_per_s(work, run(cfg, name, work).run_id)


def plain_run(cfg) -> float:
    import torch

    from gaia2.tokenizer.trainer import TokenizerTrainer
    from jobs.train_loop import epoch_batches
    from pipelines.tokenizer.train_data import clip_dataset, split_files

    torch.set_num_threads(cfg.workers.torch_threads or max(1, int(cfg.workers.cpus_per_worker)))
    trainer = TokenizerTrainer(cfg)
    d, m = cfg.data, cfg.model
    ds = clip_dataset(split_files(d.shards, "train"), m.height, m.width, d.decode_cpus, d.decode_batch)
    ds = ds.select_columns(["frames"])
    every, rates = cfg.schedule.log_every, []
    mark = time.perf_counter()
    epoch = 0
    while trainer.step < cfg.total_steps:
        for batch in epoch_batches(ds, d.batch_size, epoch, cfg.seed, d.shuffle_buffer):
            out = trainer.train_step(batch["frames"])
            if trainer.step % every == 0:
                float(out["loss"])   # the Ray loop logs (and so synchronises on) the loss at these steps
                now = time.perf_counter()
                rates.append(every / (now - mark))
                mark = now
            if trainer.step >= cfg.total_steps:
                break
        epoch += 1
    return harmonic_rate(rates[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--workdir", default="bench-train")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    from gaia2.config.shards import load_shard_config
    from gaia2.embedding.clip import save_random_clip
    from gaia2.synth.generate import generate_clips
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone
    from gaia2.tokenizer.train_config import train_config
    from jobs.runtime import init_ray
    from pipelines.shards.build import build_shards

    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    clips = os.path.join(work, "clips")
    generate_clips(clips, args.clips, seed=0, duration_s=4.0, workers=None)
    init_ray()
    shards = os.path.join(work, "shards")
    build_shards(clips, shards, load_shard_config("tiny", overrides={
        "window": {"frames": 24, "hop": 12}, "image": {"height": 32, "width": 64},
        "balance": {"min_stride_s": 0.5}, "shards": {"target_mb": 1.0},
        "embedding": {"clip_path": save_random_clip(os.path.join(work, "models", "clip"))}}))
    torch_home = os.path.join(work, "models", "torch")
    save_random_lpips_backbone(torch_home)
    cfg = train_config("tiny", overrides={
        "loss": {"dino_path": save_random_dinov2(os.path.join(work, "models", "dino")), "lpips_torch_home": torch_home},
        "data": {"shards": shards, "batch_size": args.batch_size, "val_clips": 8},
        "schedule": {"steps": args.steps, "log_every": args.log_every, "val_every": 10 ** 9,
                     "checkpoint_every": args.steps, "preview_clips": 0},
        "gan": {"steps": 0}})

    ray_rates, plain_rates = [], []
    for i in range(args.repeats):
        ray_rates.append(ray_run(cfg, work, f"bench-{i}"))
        plain_rates.append(plain_run(cfg))
        print(f"repeat {i}: ray {ray_rates[-1]:.3f} steps/s, plain {plain_rates[-1]:.3f} steps/s", flush=True)
    ray_med, plain_med = statistics.median(ray_rates), statistics.median(plain_rates)
    print(json.dumps({"ray_steps_per_s": round(ray_med, 4), "plain_steps_per_s": round(plain_med, 4),
                      "ratio": round(ray_med / plain_med, 4), "ray_runs": [round(r, 4) for r in ray_rates],
                      "plain_runs": [round(r, 4) for r in plain_rates], "steps": args.steps,
                      "batch_size": args.batch_size, "torch_threads": int(cfg.workers.cpus_per_worker)}))


if __name__ == "__main__":
    main()
