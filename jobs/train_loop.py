"""The Ray Train loop skeleton shared by the training jobs (tokenizer, world model), run on every worker.

Restore the latest checkpoint Ray Train hands back (after a worker failure or a restart of the job under
the same name), replay the data stream to the saved position, then step: rank 0 logs to MLflow and prints
the progress line, validates and writes checkpoints; every rank calls ``ray.train.report`` at
checkpoints (it is a barrier).

Data position: an epoch is one pass over this worker's shard of the train split in a fixed order
(``preserve_order``) shuffled by a local buffer seeded with ``seed + epoch``; the position is (epoch,
batches consumed). Resuming re-reads the epoch's first batches and drops them, so the run continues on
exactly the batches an uninterrupted run would have seen (exact for one worker; with several, Ray
Data's streaming split may hand rows to workers in another order).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

STATE_FILE = "state.pt"


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


@dataclass
class LoopSpec:
    tag: str                                              # e.g. "tokenizer": the progress lines' prefix
    total: int                                            # steps
    log_every: int
    val_every: int
    checkpoint_every: int
    global_batch: int                                     # samples per step over all workers
    batches: Callable[[int], Iterator[Any]]               # epoch -> this worker's batches
    scalars: Callable[[dict], dict[str, float]]           # train_step output -> the values to log
    validate: Callable[[], dict[str, float]] | None       # rank 0: validation metrics (it logs them)
    config_json: dict                                     # saved in each checkpoint
    batch_name: str = "batch"                             # what an empty epoch lacks, for its error
    tokens_per_sample: int = 0                            # > 0: also log tokens/s


def run_loop(trainer: Any, spec: LoopSpec, loop_config: dict[str, Any], rank: int, log: Any) -> None:
    """``trainer``: ``step``, ``stage``, ``train_step(batch)``, ``state_dict()``, ``load_state_dict()``.
    ``log``: a ``RunLogger`` on rank 0, None elsewhere. ``loop_config``: ``fail_at_step`` / ``fail_marker``."""
    import ray.train

    from jobs.parallelize import load_sharded, save_sharded

    sharded = getattr(trainer, "sharded", False)   # FSDP: every rank saves and loads its own shard
    epoch, position = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if sharded:
                state = trainer.sharded_state()
                extra = load_sharded(state, d, rank)
                # The sharded load is partial (optimizer state exists only for trained parameters), so a
                # checkpoint of another architecture would not fail by itself: compare the model configs.
                if extra.get("config", {}).get("model") != spec.config_json.get("model"):
                    raise RuntimeError(f"checkpoint {checkpoint.path}: written for another model configuration; "
                                       f"resume with the same model config or use a new job name")
                trainer.load_sharded_state(state)
                trainer.load_extra_state(extra)
                data = extra["data"]
            else:
                state = torch.load(os.path.join(d, STATE_FILE), map_location=trainer.device, weights_only=False)
                trainer.load_state_dict(state)
                data = state["data"]
        epoch, position = data["epoch"], data["batch"]
        if log:
            log.metrics({"resumed_from_step": trainer.step, "resumed_epoch": epoch, "resumed_batch": position},
                        step=trainer.step)
            say(f"[{spec.tag}] resumed from the checkpoint at step {trainer.step} (epoch {epoch}, batch {position})")
    fail_at, fail_marker = loop_config.get("fail_at_step"), loop_config.get("fail_marker")
    mark_step, mark_time = trainer.step, time.perf_counter()
    last_val: dict[str, float] = {}

    def save_checkpoint(metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if sharded:
                extra = {**trainer.extra_state(), "data": {"epoch": epoch, "batch": position},
                         "config": spec.config_json}
                save_sharded(trainer.sharded_state(), extra, tmp, rank)
                ckpt = ray.train.Checkpoint.from_directory(tmp)   # Ray merges the ranks' directories
            elif rank == 0:
                state = trainer.state_dict()
                state["data"] = {"epoch": epoch, "batch": position}
                state["config"] = spec.config_json
                torch.save(state, os.path.join(tmp, STATE_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({"step": trainer.step, **metrics}, checkpoint=ckpt,
                             checkpoint_dir_name=f"checkpoint-{trainer.step:08d}")

    while trainer.step < spec.total:
        consumed = 0
        for i, batch in enumerate(spec.batches(epoch)):
            consumed = i + 1
            if i < position:
                continue   # replaying to the checkpoint's data position
            stage = trainer.stage
            out = trainer.train_step(batch)
            position = i + 1
            step = trainer.step
            if log and (step % spec.log_every == 0 or step == spec.total):
                values = spec.scalars(out)
                now = time.perf_counter()
                rate = (step - mark_step) / max(now - mark_time, 1e-9)
                mark_step, mark_time = step, now
                values.update({"steps_per_s": rate, "samples_per_s": rate * spec.global_batch, "epoch": epoch})
                if spec.tokens_per_sample:
                    values["tokens_per_s"] = rate * spec.global_batch * spec.tokens_per_sample
                log.metrics(values, step=step)
                eta = (spec.total - step) / rate if rate > 0 else float("inf")
                say(f"[{spec.tag}] step {step}/{spec.total} {stage:<4} | loss {values['loss']:.4f} | "
                    f"lr {values['lr']:.2e} | grad {values['grad_norm']:.3f} | {rate:.2f} steps/s | ETA {fmt_time(eta)}")
            # Validation runs on rank 0, or on every rank when the model is sharded (FSDP's forward gathers
            # parameters from all ranks, so they must all take part; only rank 0 logs).
            if (log or sharded) and spec.validate and (step % spec.val_every == 0 or step == spec.total):
                last_val = spec.validate()
            if step % spec.checkpoint_every == 0 or step == spec.total:
                save_checkpoint(last_val if step == spec.total else {})
            if fail_at is not None and step == fail_at and rank == 0 and not os.path.exists(fail_marker):
                # Test hook: a hard crash of this worker process, once (the marker survives the restart).
                # Ray Train's controller collects reported checkpoints when it polls the workers, every
                # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s); a crash sooner after a report loses that
                # checkpoint and the run resumes from the one before. Waiting two intervals makes the
                # resume point deterministic for the tests.
                time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0")))
                open(fail_marker, "w").close()
                say(f"[{spec.tag}] injected worker failure at step {step}")
                os._exit(1)
            if step >= spec.total:
                break
        else:
            if consumed == 0:
                raise RuntimeError(f"the train split gave this worker no full {spec.batch_name} "
                                   f"(data.batch_size is larger than the worker's share of the split)")
            epoch, position = epoch + 1, 0
