"""Ray Train job: train the video tokenizer on shards (paper section 4), then export and register it.

    python -m jobs.train_tokenizer --shards SHARDS [--preset tiny|paper] [--config FILE] [--name NAME]
    gaia2 train tokenizer --shards SHARDS ...
    ray job submit --working-dir . -- python -m jobs.train_tokenizer --preset paper --shards /mnt/shards ...

A ``TorchTrainer`` with ``workers.num_workers`` workers is fed by Ray Data streaming from the shards
(videos decoded on Data tasks). Checkpoints go to ``<storage>/<name>/`` (a path or a URI); a worker
failure restarts the group from the last checkpoint (``workers.max_failures``), and running the job
again with the same name and storage resumes it, in the same MLflow run (experiment ``tokenizer``,
found by its tags). At the end the EMA weights are exported
(``<workdir>/tokenizer-jobs/<name>/export/tokenizer``) and registered in MLflow as
``gaia2-tokenizer-<preset>`` with the alias ``candidate``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from gaia2.config.base import ConfigError
from gaia2.tokenizer.train_config import TokenizerTrainConfig, check_pretrained, train_config
from jobs.train_driver import TrainOutcome, execute_job, outcome_lines, overrides_from

EXPERIMENT = "tokenizer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", help="shard build directory (overrides data.shards)")
    p.add_argument("--preset", help="tiny (default, CPU) or paper")
    p.add_argument("--config", help="YAML overrides on top of the preset (may name its own `preset:`)")
    p.add_argument("--name", help="job name: checkpoints and resume key (default: tokenizer-<preset>)")
    p.add_argument("--steps", type=int, help="main-stage steps (schedule.steps)")
    p.add_argument("--gan-steps", type=int, help="decoder GAN fine-tune steps (gan.steps)")
    p.add_argument("--batch-size", type=int, help="clips per worker and step (data.batch_size)")
    p.add_argument("--workers", type=int, help="Ray Train workers (workers.num_workers)")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker (workers.use_gpu)")
    p.add_argument("--seed", type=int)
    p.add_argument("--dino-path", help="local DINOv2 directory (loss.dino_path)")
    p.add_argument("--lpips-torch-home", help="torch home holding the LPIPS backbone (loss.lpips_torch_home)")
    p.add_argument("--storage", help="checkpoint storage (default: <workdir>/ray_results; a URI on a cluster)")
    p.add_argument("--workdir", default=os.environ.get("GAIA2_WORKDIR", "gaia2-work"),
                   help="where the local MLflow database and artifacts live (default: ./gaia2-work)")
    p.add_argument("--inject-failure-at", type=int, metavar="STEP",
                   help="testing resume: crash rank 0 once at this step (after its checkpoint, if any)")


def resolve_config(args: argparse.Namespace) -> TokenizerTrainConfig:
    pairs = [(args.shards, ("data", "shards")), (args.steps, ("schedule", "steps")),
             (args.gan_steps, ("gan", "steps")), (args.batch_size, ("data", "batch_size")),
             (args.workers, ("workers", "num_workers")), (args.gpu, ("workers", "use_gpu")),
             (args.seed, ("seed",)), (args.dino_path, ("loss", "dino_path")),
             (args.lpips_torch_home, ("loss", "lpips_torch_home"))]
    return train_config(preset=args.preset, path=args.config, overrides=overrides_from(pairs))


def preflight(cfg: TokenizerTrainConfig) -> dict:
    """Everything checkable before Ray starts: pretrained files, the shards, window length vs clip length."""
    from pipelines.tokenizer.train_data import DataError, split_summary

    check_pretrained(cfg)
    if not cfg.data.shards:
        raise ConfigError("data.shards: required (pass --shards DIR, a `gaia2 shards build` output)")
    if not os.path.isdir(cfg.data.shards):
        raise ConfigError(f"data.shards: {cfg.data.shards!r} is not a directory")
    try:
        summary = {split: split_summary(cfg.data.shards, split) for split in ("train", "val")}
    except DataError as err:
        raise ConfigError(str(err)) from None
    frames = summary["train"]["window_frames"]
    if frames < cfg.model.frames:
        raise ConfigError(f"model.frames: {cfg.model.frames} frames per clip, but the shards' windows have "
                          f"only {frames} (build shards with window.frames >= {cfg.model.frames})")
    if summary["train"]["samples"] * summary["train"]["cameras"] < cfg.data.batch_size * cfg.workers.num_workers:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} clips x {cfg.workers.num_workers} workers is "
                          f"more than the train split's ~{summary['train']['samples'] * summary['train']['cameras']} clips")
    return summary


def run(cfg: TokenizerTrainConfig, name: str, workdir: str, storage: str | None = None,
        fail_at_step: int | None = None) -> TrainOutcome:
    from gaia2.tokenizer.export import save_tokenizer
    from gaia2.tokenizer.model import Tokenizer
    from jobs.tokenizer_loop import train_loop
    from jobs.tokenizer_registry import log_and_register
    from jobs.train_driver import register_once, train
    from pipelines.tokenizer.train_data import clip_dataset, split_files

    summary = preflight(cfg)
    d, m = cfg.data, cfg.model

    def datasets() -> dict:
        return {
            "train": clip_dataset(split_files(d.shards, "train"), m.height, m.width, d.decode_cpus, d.decode_batch)
            .select_columns(["frames"]),
            "val": clip_dataset(split_files(d.shards, "val"), m.height, m.width, d.decode_cpus, d.decode_batch)
            .select_columns(["frames"]).limit(d.val_clips),
        }

    result: dict = {}

    def export(training) -> None:
        model = Tokenizer(cfg.model)
        model.load_state_dict(training.state["ema"]["model"])
        step = int(training.state["step"])
        result["export_dir"] = save_tokenizer(os.path.join(training.local_dir, "export", "tokenizer"), model,
                                              extra={"step": step, "ema_decay": cfg.optim.ema_decay,
                                                     "mlflow_run_id": training.run_id})
        result["model_name"] = f"gaia2-tokenizer-{cfg.preset}"
        result["version"] = register_once(step, lambda: log_and_register(result["export_dir"], result["model_name"]))

    training = train("tokenizer", EXPERIMENT, name, workdir, storage, cfg, train_loop, datasets,
                     cfg.workers, cfg.schedule.keep_checkpoints,
                     {"train_samples": summary["train"]["samples"], "val_samples": summary["val"]["samples"]},
                     fail_at_step, export)
    return TrainOutcome(training.run_id, result["export_dir"], result["model_name"], result["version"],
                        training.metrics, training.checkpoint)


def summary(outcome: TrainOutcome, workdir: str) -> str:
    m = outcome.metrics
    lines = outcome_lines(outcome, EXPERIMENT, workdir)
    if "val_psnr" in m:
        lines.insert(0, f"validation: PSNR {m['val_psnr']:.2f} dB (mean-colour baseline {m['val_baseline_psnr']:.2f} dB, "
                        f"gain {m['val_gain_db']:.2f} dB), SSIM {m['val_ssim']:.3f}"
                        + (f", LPIPS {m['val_lpips']:.3f}" if "val_lpips" in m else ""))
    return "\n".join(lines)


def execute(args: argparse.Namespace) -> int:
    def work() -> str:
        cfg = resolve_config(args)
        outcome = run(cfg, args.name or f"tokenizer-{cfg.preset}", args.workdir, args.storage,
                      fail_at_step=args.inject_failure_at)
        return summary(outcome, args.workdir)

    return execute_job(work)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train_tokenizer", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
