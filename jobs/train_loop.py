"""The Ray Train loop every trainable model runs on every worker (``train_loop``), driven by its spec.

Build the trainer (distributed by ``jobs.parallelize``), restore the newest valid checkpoint
(``jobs.checkpoint.restore``: after a worker failure, or when the job is run again under the same name;
a corrupt or partial latest checkpoint is skipped with a warning), replay the data stream to the saved
position, then step: rank 0 logs to MLflow and prints the progress line; validation runs on rank 0 (on
every rank under FSDP, whose forward is collective); the spec's light evaluation, when it has one
(``ModelSpec.light_eval``: the world model's FDD of a few generations, ``jobs/light_eval.py``), runs at its
steps and is logged beside the losses; every rank writes its part of each checkpoint and calls
``ray.train.report`` (a barrier).

Data position: an epoch is one pass over this worker's shard of the train split in a fixed order
(``preserve_order``) shuffled by a local buffer seeded with ``seed + epoch``; the position is (epoch,
batches consumed). With ``data.weighted`` the shard is this worker's part of the epoch's weighted draws
(``spec.train_epoch``: a pure function of seed and epoch, ``pipelines/weighted.py``), read in draw order.
Resuming re-reads the epoch's first batches and drops them, so the run continues on exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, Iterator

import torch


def say(line: str) -> None:
    """One progress line on the worker's stdout (Ray forwards it to the driver). Not ``print``: Ray Train
    patches print to also go through its logger, which would show every line twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def epoch_batches(source, batch_size: int, epoch: int | None = None, seed: int = 0,
                  shuffle_buffer: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of CPU tensor batches from a Ray dataset or dataset shard. With ``epoch`` (training): full
    batches only, shuffled by a local buffer seeded with ``seed + epoch`` (reproducible, so a resumed run can
    replay its position); without it (validation): every row in order."""
    shuffle = shuffle_buffer if epoch is not None and shuffle_buffer else None
    yield from source.iter_torch_batches(batch_size=batch_size, drop_last=epoch is not None, dtypes=None,
                                         device="cpu", local_shuffle_buffer_size=shuffle,
                                         local_shuffle_seed=seed + epoch if shuffle else None)


def fmt_time(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def checkpoint_candidates(latest) -> list:
    """The latest Ray Train checkpoint and the earlier ones kept beside it, newest first (a checkpoint
    directory newer than the latest registered one was never completed and is not a candidate)."""
    import pyarrow.fs as pafs
    import ray.train

    parent, latest_name = os.path.split(latest.path.rstrip("/"))
    infos = latest.filesystem.get_file_info(pafs.FileSelector(parent))
    names = sorted((os.path.basename(i.path) for i in infos if i.type == pafs.FileType.Directory
                    and os.path.basename(i.path).startswith("checkpoint-")), reverse=True)
    return [ray.train.Checkpoint(path=f"{parent}/{n}", filesystem=latest.filesystem)
            for n in names if n <= latest_name]


def light_evaluation(evaluation, step: int, name: str, rank: int, log, last_val: dict[str, float],
                     last_val_step: int) -> dict[str, float]:
    """The spec's light evaluation at ``step`` (``ModelSpec.light_eval``), logged beside the losses with its line
    (and the latest validation loss) on rank 0 -> its metrics ({} elsewhere). A failure is a warning line and no
    figure: the training goes on (misconfiguration was refused before it started)."""
    try:
        result = evaluation(step)
    except Exception as err:   # never the job's failure
        where = "" if rank == 0 else f" (rank {rank})"
        say(f"[{name}] warning: light evaluation at step {step} failed{where}: {type(err).__name__}: {err}; "
            f"training goes on without it")
        return {}
    if result is None or log is None:
        return {}
    metrics, text = result
    log.metrics(metrics, step=step)
    if "val_loss" in last_val:
        text += f"; validation loss {last_val['val_loss']:.4g}" + (
            "" if last_val_step == step else f" (at step {last_val_step})")
    say(f"[{name}] light evaluation at step {step}: {text}")
    return metrics


def train_loop(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from jobs import checkpoint as ckpt
    from jobs.parallelize import parallelizer, reshard
    from jobs.specs import SPECS
    from jobs.tracking import RunLogger

    spec = SPECS[loop_config["model"]]
    cfg = spec.config_type().model_validate(loop_config["config"])
    config_json = loop_config["config"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    w, s = cfg.workers, cfg.schedule
    torch.set_num_threads(w.torch_threads or max(1, int(w.cpus_per_worker)))
    device = ray.train.torch.get_device()
    parallelize = parallelizer(w, cfg.precision, world, device, find_unused=spec.find_unused_parameters)
    trainer = spec.trainer(cfg, device, rank, parallelize)
    log = RunLogger.for_loop(loop_config) if rank == 0 else None   # buffers through a tracking outage
    sharded = w.strategy == "fsdp"
    light = spec.light_eval(trainer, cfg, device, rank, sharded)
    # data.weighted: each epoch's draws are read by this worker itself (spec.train_epoch), not Train's split
    train_shard = None if cfg.data.weighted else ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if rank == 0 or sharded else None

    epoch, position = 0, 0
    latest = ray.train.get_checkpoint()
    if latest is not None:
        restored = ckpt.restore(checkpoint_candidates(latest), trainer, rank, world, config_json,
                                lambda c: c.as_directory())
        if restored is None:
            raise RuntimeError(f"no usable checkpoint among {latest.path} and the ones before it (see the warnings "
                               f"above); run under a new job name to start afresh")
        used, extra, skipped = restored
        epoch, position = extra["data"]["epoch"], extra["data"]["batch"]
        if log:
            log.metrics({"resumed_from_step": trainer.step, "resumed_epoch": epoch, "resumed_batch": position},
                        step=trainer.step)
            for reason in skipped:
                say(f"[{spec.name}] skipped checkpoint {reason}")
            log.tags({"gaia2.resumed_from": used.path, "gaia2.skipped_checkpoints": " | ".join(skipped)})
            say(f"[{spec.name}] resumed from {used.path} at step {trainer.step} (epoch {epoch}, batch {position})")

    total, global_batch = cfg.total_steps, cfg.data.batch_size * world
    tokens = spec.tokens_per_sample(cfg)
    fail_at, fail_marker = cfg.job.fail_at_step, loop_config["fail_marker"]
    mark_step, mark_time = trainer.step, time.perf_counter()
    last_val: dict[str, float] = {}
    last_val_step, last_eval = 0, {}

    def validate() -> dict[str, float]:
        out, text = spec.validate(trainer, cfg, epoch_batches(val_shard, cfg.data.batch_size), log)
        if sharded:
            reshard(trainer.stateful())
        if log:
            log.metrics(out, step=trainer.step)
            say(f"[{spec.name}] validation at step {trainer.step}: {text}")
        return out

    def save_checkpoint(metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:   # this rank's part; Ray Train merges the ranks' directories
            ckpt.save(tmp, trainer, rank, world, {"epoch": epoch, "batch": position}, config_json)
            ray.train.report({"step": trainer.step, **metrics}, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"checkpoint-{trainer.step:08d}")

    while trainer.step < total:
        consumed = 0
        source = train_shard if train_shard is not None else spec.train_epoch(cfg, epoch, rank, world)
        batches = epoch_batches(source, cfg.data.batch_size, epoch, cfg.seed, cfg.data.shuffle_buffer)
        for i, rows in enumerate(batches):
            consumed = i + 1
            if i < position:
                continue   # replaying to the checkpoint's data position
            stage = trainer.stage
            out = trainer.train_step(spec.batch(rows))
            position = i + 1
            step = trainer.step
            if log and (step % s.log_every == 0 or step == total):
                values = spec.scalars(out)
                now = time.perf_counter()
                rate = (step - mark_step) / max(now - mark_time, 1e-9)
                mark_step, mark_time = step, now
                values.update({"steps_per_s": rate, "samples_per_s": rate * global_batch, "epoch": epoch})
                if tokens:
                    values["tokens_per_s"] = rate * global_batch * tokens
                log.metrics(values, step=step)
                eta = (total - step) / rate if rate > 0 else float("inf")
                say(f"[{spec.name}] step {step}/{total} {stage:<4} | loss {values['loss']:.4f} | "
                    f"lr {values['lr']:.2e} | grad {values['grad_norm']:.3f} | {rate:.2f} steps/s | ETA {fmt_time(eta)}")
            if val_shard is not None and (step % s.val_every == 0 or step == total):
                last_val, last_val_step = validate(), step
            if light is not None and light.due(step):
                last_eval = light_evaluation(light, step, spec.name, rank, log, last_val, last_val_step)
            if step % s.checkpoint_every == 0 or step == total:
                save_checkpoint({**last_val, **last_eval} if step == total else {})
            if fail_at is not None and step == fail_at and rank == 0 and not os.path.exists(fail_marker):
                # Test hook: a hard crash of this worker process, once (the marker survives the restart).
                # Ray Train's controller collects reported checkpoints when it polls the workers, every
                # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s); a crash sooner after a report loses that
                # checkpoint and the run resumes from the one before. Waiting three intervals makes the
                # resume point deterministic for the tests.
                time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0")))
                open(fail_marker, "w").close()
                say(f"[{spec.name}] injected worker failure at step {step}")
                os._exit(1)
            if step >= total:
                break
        else:
            if consumed == 0:
                raise RuntimeError(f"the train split gave this worker no full batch of {cfg.data.batch_size} "
                                   f"{spec.batch_noun} (data.batch_size is larger than the worker's share of the split)")
            epoch, position = epoch + 1, 0
    if log:
        log.close()   # flush what an outage buffered; what is left, the driver flushes
