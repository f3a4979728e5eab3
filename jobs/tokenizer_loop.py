"""The tokenizer's Ray Train loop: what each worker runs (``train_loop``), on the shared skeleton of
``jobs.train_loop`` (checkpoints with the data position, resume, progress, rank-0 MLflow logging).

Per worker: build ``TokenizerTrainer`` (DDP through ``prepare_model`` when there are several workers)
and feed it this worker's shard of the clip stream; rank 0 validates the EMA model on the val split
(PSNR, SSIM, LPIPS against the mean-colour baseline) and logs reconstruction videos.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterator

import torch

from gaia2.tokenizer.train_config import TokenizerTrainConfig
from jobs.train_loop import STATE_FILE, LoopSpec, epoch_batches, run_loop, say

__all__ = ["STATE_FILE", "train_loop"]


def train_loop(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from gaia2.tokenizer.preview import write_comparison
    from gaia2.tokenizer.trainer import TokenizerTrainer
    from jobs.tracking import RunLogger

    cfg = TokenizerTrainConfig.model_validate(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.workers.torch_threads or max(1, int(cfg.workers.cpus_per_worker)))
    wrap = ray.train.torch.prepare_model if world > 1 else (lambda m: m)
    trainer = TokenizerTrainer(cfg, device=ray.train.torch.get_device(), rank=rank, wrap=wrap)
    log = RunLogger(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 else None
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if rank == 0 else None

    def validate() -> dict[str, float]:
        first: list[torch.Tensor] = []

        def batches() -> Iterator[torch.Tensor]:
            for batch in epoch_batches(val_shard, cfg.data.batch_size):
                clips = batch["frames"]
                if not first:
                    first.append(clips)
                yield clips

        metrics = trainer.evaluate(batches(), max_clips=cfg.data.val_clips)
        out = {f"val_{k}": v for k, v in metrics.compute().items()}
        if cfg.schedule.preview_clips and first:
            video, recon = trainer.reconstruct(first[0][:cfg.schedule.preview_clips])
            with tempfile.TemporaryDirectory() as tmp:
                path = write_comparison(os.path.join(tmp, f"step-{trainer.step:08d}.mp4"), video, recon,
                                        max_clips=cfg.schedule.preview_clips)
                log.artifact(path, "reconstructions")
        log.metrics(out, step=trainer.step)
        say(f"[tokenizer] validation at step {trainer.step}: PSNR {out['val_psnr']:.2f} dB "
            f"(mean-colour baseline {out['val_baseline_psnr']:.2f}), SSIM {out['val_ssim']:.3f}"
            + (f", LPIPS {out['val_lpips']:.3f}" if "val_lpips" in out else ""))
        return out

    s = cfg.schedule
    spec = LoopSpec(tag="tokenizer", total=cfg.total_steps, log_every=s.log_every, val_every=s.val_every,
                    checkpoint_every=s.checkpoint_every, global_batch=cfg.data.batch_size * world,
                    batches=lambda epoch: (b["frames"] for b in epoch_batches(
                        train_shard, cfg.data.batch_size, epoch, cfg.seed, cfg.data.shuffle_buffer)),
                    scalars=lambda out: {k: float(v) for k, v in out.items()},
                    validate=validate, config_json=cfg.model_dump(mode="json"),
                    batch_name=f"batch of {cfg.data.batch_size} clips")
    run_loop(trainer, spec, loop_config, rank, log)
