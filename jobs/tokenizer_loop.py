"""The tokenizer's Ray Train loop: what each worker runs (``train_loop``), kept apart from the driver.

Per worker: build ``TokenizerTrainer`` (DDP through ``prepare_model`` when there are several workers),
restore the latest checkpoint if Ray Train hands one back (after a worker failure or a restart of
the job under the same name), replay the data stream to the saved position, then step. Rank 0 logs to
MLflow, prints the progress line, validates the EMA model and writes the checkpoints; every rank calls
``ray.train.report`` at checkpoints (it is a barrier).

Data position: an epoch is one pass over this worker's shard of the train split, in a fixed order
(``preserve_order``) shuffled by a local buffer seeded with ``seed + epoch``; the position is
(epoch, batches consumed). Resuming re-reads the epoch's first batches and drops them, so the run
continues on exactly the batches an uninterrupted run would have seen (exact for one worker; with
several, Ray Data's streaming split may hand rows to workers in another order).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, Iterator

import torch

from gaia2.tokenizer.train_config import TokenizerTrainConfig

STATE_FILE = "state.pt"


def _fmt_time(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _say(line: str) -> None:
    """One progress line on the worker's stdout (Ray forwards it to the driver). Not ``print``: Ray Train
    patches print to also go through its logger, which would show every line twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _batches(shard, cfg: TokenizerTrainConfig, epoch: int) -> Iterator[torch.Tensor]:
    buffer = cfg.data.shuffle_buffer or None
    for batch in shard.iter_torch_batches(batch_size=cfg.data.batch_size, drop_last=True, dtypes=None, device="cpu",
                                          local_shuffle_buffer_size=buffer,
                                          local_shuffle_seed=cfg.seed + epoch if buffer else None):
        yield batch["frames"]


def _val_batches(shard, batch_size: int) -> Iterator[torch.Tensor]:
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=None, device="cpu"):
        yield batch["frames"]


class _Progress:
    """The progress line (rank 0): step, stage, loss, lr, steps/s over the last interval, ETA."""

    def __init__(self, total: int, start: int) -> None:
        self.total, self.mark_step, self.mark_time = total, start, time.perf_counter()

    def rate(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.mark_step) / max(now - self.mark_time, 1e-9)
        self.mark_step, self.mark_time = step, now
        return rate


def train_loop(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from gaia2.tokenizer.preview import write_comparison
    from gaia2.tokenizer.trainer import TokenizerTrainer, eta_seconds
    from jobs.tracking import RunLogger

    cfg = TokenizerTrainConfig.model_validate(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = cfg.workers.torch_threads or max(1, int(cfg.workers.cpus_per_worker))
    torch.set_num_threads(threads)
    device = ray.train.torch.get_device()
    wrap = ray.train.torch.prepare_model if world > 1 else (lambda m: m)
    trainer = TokenizerTrainer(cfg, device=device, rank=rank, wrap=wrap)
    total = cfg.total_steps
    epoch, position = 0, 0
    log = RunLogger(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 else None

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), map_location=device, weights_only=False)
        trainer.load_state_dict(state)
        epoch, position = state["data"]["epoch"], state["data"]["batch"]
        if log:
            log.metrics({"resumed_from_step": trainer.step, "resumed_epoch": epoch, "resumed_batch": position},
                        step=trainer.step)
            _say(f"[tokenizer] resumed from the checkpoint at step {trainer.step} "
                 f"(epoch {epoch}, batch {position})")
    fail_at = loop_config.get("fail_at_step")
    fail_marker = loop_config.get("fail_marker")

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if rank == 0 else None
    progress = _Progress(total, trainer.step)
    global_batch = cfg.data.batch_size * world
    last_val: dict[str, float] = {}

    def validate() -> dict[str, float]:
        first: list[torch.Tensor] = []

        def batches() -> Iterator[torch.Tensor]:
            for clips in _val_batches(val_shard, cfg.data.batch_size):
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
        _say(f"[tokenizer] validation at step {trainer.step}: PSNR {out['val_psnr']:.2f} dB "
             f"(mean-colour baseline {out['val_baseline_psnr']:.2f}), SSIM {out['val_ssim']:.3f}"
             + (f", LPIPS {out['val_lpips']:.3f}" if "val_lpips" in out else ""))
        return out

    def save_checkpoint(metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                state = trainer.state_dict()
                state["data"] = {"epoch": epoch, "batch": position}
                state["config"] = cfg.model_dump(mode="json")
                torch.save(state, os.path.join(tmp, STATE_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({"step": trainer.step, **metrics}, checkpoint=ckpt,
                             checkpoint_dir_name=f"checkpoint-{trainer.step:08d}")

    while trainer.step < total:
        consumed = 0
        for i, clips in enumerate(_batches(train_shard, cfg, epoch)):
            consumed = i + 1
            if i < position:
                continue   # replaying to the checkpoint's data position
            stage = trainer.stage
            out = trainer.train_step(clips)
            position = i + 1
            step = trainer.step
            if log and (step % cfg.schedule.log_every == 0 or step == total):
                values = {k: float(v) for k, v in out.items()}
                rate = progress.rate(step)
                values.update({"steps_per_s": rate, "clips_per_s": rate * global_batch, "epoch": epoch})
                log.metrics(values, step=step)
                _say(f"[tokenizer] step {step}/{total} {stage:<4} | loss {values['loss']:.4f} | "
                     f"lr {values['lr']:.2e} | grad {values['grad_norm']:.3f} | {rate:.2f} steps/s | "
                     f"ETA {_fmt_time(eta_seconds(step, total, rate))}")
            if log and (step % cfg.schedule.val_every == 0 or step == total):
                last_val = validate()
            if step % cfg.schedule.checkpoint_every == 0 or step == total:
                save_checkpoint(last_val if step == total else {})
            if fail_at is not None and step == fail_at and rank == 0 and not os.path.exists(fail_marker):
                # Test hook: a hard crash of this worker process, once (the marker survives the restart).
                # Ray Train's controller collects reported checkpoints when it polls the workers, every
                # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s); a crash sooner after a report loses that
                # checkpoint and the run resumes from the one before. Waiting two intervals makes the
                # resume point deterministic for the tests.
                time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0")))
                open(fail_marker, "w").close()
                _say(f"[tokenizer] injected worker failure at step {step}")
                os._exit(1)
            if step >= total:
                break
        else:
            if consumed == 0:
                raise RuntimeError(f"the train split gave this worker no batch of {cfg.data.batch_size} clips "
                                   f"(data.batch_size is larger than the worker's share of the split)")
            epoch, position = epoch + 1, 0
