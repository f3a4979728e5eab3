"""World-model training throughput under Ray Train against the same step loop in plain PyTorch, in one run;
on a GPU also the MFU of a stack of ``paper``-width blocks.

    python benchmarks/train_world_model.py [--steps 80] [--repeats 2] [--batch-size 8] [--workdir bench-train-wm]

ray:   ``gaia2 train world-model`` (the real job: a TorchTrainer worker, Ray Data converting the latent
       shards, rank-0 MLflow logging, a checkpoint at the end), tiny preset, one worker.
plain: ``WorldModelTrainer.train_step`` in a loop in this process, fed by the same Ray Data pipeline over
       the same latent shards, with as many torch threads as the Ray worker has CPUs.

Both are steps/s over the same intervals of ``--log-every`` steps, the first (start-up) left out, as the
harmonic mean over intervals; alternately ``--repeats`` times; ``ratio`` = median ray / median plain.

MFU (CUDA only): ``--mfu-blocks`` space-time blocks at C = 4096, 32 heads on the paper's token grid
(6 x 5 x 14 x 30) in bf16; forward + backward FLOPs counted by ``torch.utils.flop_counter`` over the
measured step time, divided by the GPU's dense bf16 peak (``--peak-tflops``, default 989 for H100/H200).
The last line is one JSON object: {"ray_steps_per_s", "plain_steps_per_s", "ratio", "mfu", ...}.
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
    from jobs.train_world_model import run

    return job_steps_per_s(work, run(cfg, name, work).run_id)


def plain_run(cfg) -> float:
    import torch

    from gaia2.world_model.trainer import WorldModelTrainer
    from jobs.train_loop import epoch_batches
    from pipelines.world_model.train_data import sample_dataset, split_files

    torch.set_num_threads(cfg.workers.torch_threads or max(1, int(cfg.workers.cpus_per_worker)))
    trainer = WorldModelTrainer(cfg)
    d, m = cfg.data, cfg.model
    ds = sample_dataset(split_files(d.shards, "train"), m.cameras, m.max_agents, d.read_cpus)
    every, rates, epoch = cfg.schedule.log_every, [], 0
    mark = time.perf_counter()
    while trainer.step < cfg.total_steps:
        for batch in epoch_batches(ds, d.batch_size, epoch, cfg.seed, d.shuffle_buffer):
            out = trainer.train_step(batch)
            if trainer.step % every == 0:
                float(out["loss"])   # the Ray loop logs (and so synchronises on) the loss at these steps
                now = time.perf_counter()
                rates.append(every / (now - mark))
                mark = now
            if trainer.step >= cfg.total_steps:
                break
        epoch += 1
    return harmonic_rate(rates[1:])


def block_mfu(blocks: int, peak_tflops: float, iters: int = 5) -> dict:
    """bf16 forward + backward of ``blocks`` paper-width blocks on the paper's token grid -> MFU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gaia2.world_model.block import SpaceTimeBlock
    from gaia2.world_model.config import world_model_config

    cfg = world_model_config("paper")
    dev = torch.device("cuda")
    stack = torch.nn.ModuleList(SpaceTimeBlock(cfg) for _ in range(blocks)).to(dev, torch.bfloat16)
    b, t, n, h, w, c, k = 1, cfg.frames, cfg.cameras, cfg.height, cfg.width, cfg.dim, 337
    x = torch.randn(b, t, n, h, w, c, device=dev, dtype=torch.bfloat16, requires_grad=True)
    pos = torch.randn(b, t, n, h, w, c, device=dev, dtype=torch.bfloat16)
    cond = torch.randn(b, t, c, device=dev, dtype=torch.bfloat16)
    tokens = torch.randn(b, t, k, c, device=dev, dtype=torch.bfloat16)
    mask = torch.ones(b, t, k, dtype=torch.bool, device=dev)

    def step() -> None:
        y = x
        for blk in stack:
            y = blk(y, pos, cond, tokens, mask)
        y.float().square().mean().backward()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / iters
    return {"mfu": flops / seconds / (peak_tflops * 1e12), "mfu_blocks": blocks, "mfu_step_s": seconds,
            "mfu_tflops": flops / seconds / 1e12, "gpu": torch.cuda.get_device_name()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--mfu-blocks", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--skip-ray", action="store_true", help="only the MFU measurement")
    p.add_argument("--workdir", default="bench-train-wm")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import torch

    result: dict = {}
    if not args.skip_ray:
        from gaia2.config.shards import load_shard_config
        from gaia2.embedding.clip import save_random_clip
        from gaia2.synth.generate import generate_clips
        from gaia2.tokenizer import Tokenizer, tiny
        from gaia2.tokenizer.export import save_tokenizer
        from gaia2.world_model.train_config import train_config
        from jobs.runtime import init_ray
        from pipelines.shards.build import build_shards
        from pipelines.tokenizer.latents import encode_latents, latent_config

        work = os.path.abspath(args.workdir)
        shutil.rmtree(work, ignore_errors=True)
        clips = os.path.join(work, "clips")
        generate_clips(clips, args.clips, seed=0, duration_s=4.0, workers=None)
        init_ray()
        shards = os.path.join(work, "shards")
        build_shards(clips, shards, load_shard_config("tiny", overrides={
            "balance": {"min_stride_s": 0.5},
            "embedding": {"clip_path": save_random_clip(os.path.join(work, "models", "clip"))}}))
        torch.manual_seed(0)
        tok = save_tokenizer(os.path.join(work, "models", "tokenizer"), Tokenizer(tiny()))
        latents = os.path.join(work, "latents")
        encode_latents(shards, tok, latents, latent_config(mode="mean"))
        cfg = train_config("tiny", overrides={
            "data": {"shards": latents, "batch_size": args.batch_size, "val_samples": 4},
            "schedule": {"steps": args.steps, "log_every": args.log_every, "val_every": 10 ** 9,
                         "checkpoint_every": args.steps}})
        ray_rates, plain_rates = [], []
        for i in range(args.repeats):
            ray_rates.append(ray_run(cfg, work, f"bench-{i}"))
            plain_rates.append(plain_run(cfg))
            print(f"repeat {i}: ray {ray_rates[-1]:.3f} steps/s, plain {plain_rates[-1]:.3f} steps/s", flush=True)
        ray_med, plain_med = statistics.median(ray_rates), statistics.median(plain_rates)
        result.update({"ray_steps_per_s": round(ray_med, 4), "plain_steps_per_s": round(plain_med, 4),
                       "ratio": round(ray_med / plain_med, 4), "ray_runs": [round(r, 4) for r in ray_rates],
                       "plain_runs": [round(r, 4) for r in plain_rates], "steps": args.steps,
                       "batch_size": args.batch_size})
    if torch.cuda.is_available():
        result.update(block_mfu(args.mfu_blocks, args.peak_tflops))
    else:
        result.update({"mfu": None, "mfu_note": "no CUDA device: MFU is measured on a GPU only"})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
