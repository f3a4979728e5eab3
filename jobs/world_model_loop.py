"""The world model's Ray Train loop: what each worker runs (``train_loop``), on the shared skeleton of
``jobs.train_loop`` (checkpoints with the data position, resume, progress, rank-0 MLflow logging).

Rank 0 logs the flow loss overall, by tau bucket and by task, tokens/s, and the validation loss of the
EMA model on the geofenced val split next to the best constant-velocity predictor's.
"""

from __future__ import annotations

from typing import Any

import torch

from gaia2.flow.tasks import TASK_NAMES
from gaia2.world_model.train_config import WorldModelTrainConfig
from gaia2.world_model.trainer import TAU_EDGES
from jobs.train_loop import STATE_FILE, LoopSpec, epoch_batches, run_loop, say

__all__ = ["STATE_FILE", "train_loop"]


def scalars(out: dict) -> dict[str, float]:
    """train_step output -> loggable floats: loss, lr, grad norm, loss by tau bucket and by task (this
    worker's batch; buckets with no sample are left out)."""
    values = {"loss": float(out["loss"]), "lr": float(out["lr"]), "grad_norm": float(out["grad_norm"])}
    for k in range(len(TAU_EDGES) - 1):
        if out["tau_count"][k] > 0:
            values[f"loss_tau_{TAU_EDGES[k]:.2f}_{TAU_EDGES[k + 1]:.2f}"] = float(out["tau_sum"][k] / out["tau_count"][k])
    for k, name in enumerate(TASK_NAMES):
        if out["task_count"][k] > 0:
            values[f"loss_task_{name}"] = float(out["task_sum"][k] / out["task_count"][k])
    return values


def train_loop(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from gaia2.world_model.trainer import WorldModelTrainer
    from jobs.tracking import RunLogger

    cfg = WorldModelTrainConfig.model_validate(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.workers.torch_threads or max(1, int(cfg.workers.cpus_per_worker)))
    from jobs.parallelize import wrapper

    device = ray.train.torch.get_device()
    wrap = wrapper(cfg.workers.strategy, cfg.precision, world, device)
    trainer = WorldModelTrainer(cfg, device=device, rank=rank, wrap=wrap, sharded=cfg.workers.strategy == "fsdp")
    log = RunLogger(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 else None
    train_shard = ray.train.get_dataset_shard("train")
    sharded = cfg.workers.strategy == "fsdp"
    val_shard = ray.train.get_dataset_shard("val") if rank == 0 or sharded else None   # FSDP: all ranks validate

    def validate() -> dict[str, float]:
        m = trainer.evaluate(epoch_batches(val_shard, cfg.data.batch_size),
                             max_samples=cfg.data.val_samples)
        out = {f"val_{k}": v for k, v in m.items()}
        if log is None:
            return out
        log.metrics(out, step=trainer.step)
        say(f"[world-model] validation at step {trainer.step}: flow loss {out['val_loss']:.4f} "
            f"(constant-velocity baseline {out['val_baseline_loss']:.4f}, improvement {out['val_improvement']:.3f})")
        return out

    s = cfg.schedule
    global_batch = cfg.data.batch_size * world
    spec = LoopSpec(tag="world-model", total=cfg.total_steps, log_every=s.log_every, val_every=s.val_every,
                    checkpoint_every=s.checkpoint_every, global_batch=global_batch,
                    batches=lambda epoch: epoch_batches(train_shard, cfg.data.batch_size, epoch, cfg.seed,
                                                   cfg.data.shuffle_buffer),
                    scalars=scalars, validate=validate, config_json=cfg.model_dump(mode="json"),
                    batch_name=f"batch of {cfg.data.batch_size} samples", tokens_per_sample=cfg.model.tokens)
    run_loop(trainer, spec, loop_config, rank, log)
