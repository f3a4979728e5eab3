"""Training throughput under Ray Train against the same step loop in plain PyTorch, in one run, for any
model of the training spine; for the world model on a GPU also the MFU of a stack of paper-width blocks.

    python benchmarks/train_throughput.py --model tokenizer|world-model [--steps 80] [--repeats 2] [--batch-size 8]

ray:   the real job (``jobs.train_driver.run``: a TorchTrainer worker, Ray Data reading / decoding the
       shards, rank-0 MLflow logging, a checkpoint at the end), tiny preset, one worker.
plain: the same spec's trainer (``spec.trainer``) stepping in this process, fed by the same Ray Data
       pipeline (``spec.datasets``), with as many torch threads as the Ray worker has CPUs.

Both are steps/s over the same intervals of ``--log-every`` steps, the first (start-up) left out, as the
harmonic mean over intervals (total steps over total time); alternately ``--repeats`` times; ``ratio`` =
median ray / median plain.

MFU (world model, CUDA only): ``--mfu-blocks`` space-time blocks at C = 4096, 32 heads on the paper's token
grid (6 x 5 x 14 x 30) in bf16; forward + backward FLOPs counted by ``torch.utils.flop_counter`` over the
measured step time, divided by the GPU's dense bf16 peak (``--peak-tflops``, default 989 for H100/H200).
The last line is one JSON object: {"model", "ray_steps_per_s", "plain_steps_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import fresh, training_data  # noqa: E402


def harmonic_rate(rates: list[float]) -> float:
    """Equal-length intervals at these steps/s -> steps/s over all of them (total steps over total time)."""
    return len(rates) / sum(1.0 / r for r in rates)


def ray_run(spec, cfg, name: str) -> float:
    """The job's ``steps_per_s`` history (one value per logging interval), the first interval left out."""
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri
    from jobs.train_driver import run

    cfg = cfg.model_copy(update={"job": cfg.job.model_copy(update={"name": name})})
    history = MlflowClient(tracking_uri(cfg.job.workdir)).get_metric_history(run(spec, cfg).run_id, "steps_per_s")
    return harmonic_rate([m.value for m in sorted(history, key=lambda m: m.step)][1:])


def plain_run(spec, cfg) -> float:
    import torch

    from jobs.train_loop import epoch_batches

    torch.set_num_threads(cfg.workers.torch_threads or max(1, int(cfg.workers.cpus_per_worker)))
    trainer = spec.trainer(cfg, torch.device("cpu"), 0, lambda m: m)
    ds, d = spec.datasets(cfg)["train"], cfg.data
    every, rates, epoch = cfg.schedule.log_every, [], 0
    mark = time.perf_counter()
    while trainer.step < cfg.total_steps:
        for rows in epoch_batches(ds, d.batch_size, epoch, cfg.seed, d.shuffle_buffer):
            out = trainer.train_step(spec.batch(rows))
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
    """bf16 forward + backward of ``blocks`` paper-width world-model blocks on the paper's token grid -> MFU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gaia2.world_model.block import SpaceTimeBlock
    from gaia2.world_model.config import world_model_config

    cfg = world_model_config("paper")
    dev = torch.device("cuda")
    stack = torch.nn.ModuleList(SpaceTimeBlock(cfg) for _ in range(blocks)).to(dev, torch.bfloat16)
    b, t, n, h, w, c, k = 1, cfg.latent_steps, cfg.cameras, cfg.height, cfg.width, cfg.dim, 337
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
    p.add_argument("--model", choices=("tokenizer", "world-model"), required=True)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--mfu-blocks", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--skip-ray", action="store_true", help="world model: only the MFU measurement")
    p.add_argument("--workdir", help="default: bench-throughput-<model>")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import torch

    from gaia2.config.base import deep_merge
    from jobs.specs import SPECS

    spec = SPECS[args.model]
    result: dict = {"model": args.model}
    if not args.skip_ray:
        work = fresh(args.workdir or f"bench-throughput-{args.model}")
        overrides = deep_merge(training_data(args.model, work, args.clips, seed=0), {
            "data": {"batch_size": args.batch_size, "val_samples": 8},
            "schedule": {"steps": args.steps, "log_every": args.log_every, "val_every": 10 ** 9,
                         "checkpoint_every": args.steps},
            "job": {"workdir": work}})
        if args.model == "tokenizer":
            overrides = deep_merge(overrides, {"schedule": {"preview_clips": 0}, "gan": {"steps": 0}})
        cfg = spec.build_config("tiny", overrides=overrides)
        ray_rates, plain_rates = [], []
        for i in range(args.repeats):
            ray_rates.append(ray_run(spec, cfg, f"bench-{i}"))
            plain_rates.append(plain_run(spec, cfg))
            print(f"repeat {i}: ray {ray_rates[-1]:.3f} steps/s, plain {plain_rates[-1]:.3f} steps/s", flush=True)
        ray_med, plain_med = statistics.median(ray_rates), statistics.median(plain_rates)
        result.update({"ray_steps_per_s": round(ray_med, 4), "plain_steps_per_s": round(plain_med, 4),
                       "ratio": round(ray_med / plain_med, 4), "ray_runs": [round(r, 4) for r in ray_rates],
                       "plain_runs": [round(r, 4) for r in plain_rates], "steps": args.steps,
                       "batch_size": args.batch_size, "torch_threads": int(cfg.workers.cpus_per_worker)})
    if args.model == "world-model":
        if torch.cuda.is_available():
            result.update(block_mfu(args.mfu_blocks, args.peak_tflops))
        else:
            result.update({"mfu": None, "mfu_note": "no CUDA device: MFU is measured on a GPU only"})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
