"""The video tokenizer on the training spine (paper section 4): shards -> one uint8 clip per camera and
window (decoded on Ray Data), ``TokenizerTrainer`` (main stage, then the decoder's GAN fine-tune),
validation of the EMA model by PSNR / SSIM / LPIPS against the mean-colour baseline with reconstruction
videos, exported and registered as ``gaia2-tokenizer-<preset>``."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterable

from gaia2.config.base import ConfigError
from jobs.options import Alias
from jobs.specs.base import COMMON_ALIASES, ModelSpec


class TokenizerSpec(ModelSpec):
    name = "tokenizer"
    experiment = "tokenizer"
    export_format = "gaia2-tokenizer"
    batch_noun = "clips"
    aliases = (
        Alias("--shards", "data.shards", "shard build directory (`gaia2 shards build` output)"),
        *COMMON_ALIASES,
        Alias("--gan-steps", "gan.steps", "decoder GAN fine-tune steps after the main stage", int),
        Alias("--dino-path", "loss.dino_path", "local DINOv2 directory"),
        Alias("--lpips-torch-home", "loss.lpips_torch_home", "torch home caching the LPIPS backbone"),
    )

    def config_type(self) -> type:
        from gaia2.tokenizer.train_config import TokenizerTrainConfig

        return TokenizerTrainConfig

    def build_config(self, preset=None, path=None, overrides=None):
        from gaia2.tokenizer.train_config import train_config

        return train_config(preset=preset, path=path, overrides=overrides)

    def preflight(self, cfg) -> dict:
        """Pretrained files, the shards, window length against clip length, batch against split size."""
        from gaia2.tokenizer.train_config import check_pretrained
        from pipelines.tokenizer.train_data import PRODUCED_BY, DataError, split_summary

        check_pretrained(cfg)
        self.require_shards(cfg, PRODUCED_BY)
        try:
            summary = {split: split_summary(cfg.data.shards, split) for split in ("train", "val")}
        except DataError as err:
            raise ConfigError(str(err)) from None
        frames = summary["train"]["window_frames"]
        if frames < cfg.model.frames:
            raise ConfigError(f"model.frames: {cfg.model.frames} frames per clip, but the shards' windows have "
                              f"only {frames} (build shards with window.frames >= {cfg.model.frames})")
        clips = summary["train"]["samples"] * summary["train"]["cameras"]
        if clips < cfg.data.batch_size * cfg.workers.num_workers:
            raise ConfigError(f"data.batch_size: {cfg.data.batch_size} clips x {cfg.workers.num_workers} workers is "
                              f"more than the train split's ~{clips} clips")
        return {"train_samples": summary["train"]["samples"], "val_samples": summary["val"]["samples"]}

    def datasets(self, cfg) -> dict:
        from pipelines.tokenizer.train_data import PRODUCED_BY, clip_dataset, split_files

        d, m = cfg.data, cfg.model

        def split(name: str):
            files = split_files(d.shards, name, PRODUCED_BY)
            return clip_dataset(files, m.height, m.width, d.read_cpus, d.read_batch).select_columns(["frames"])

        return {"train": split("train"), "val": split("val").limit(d.val_samples)}

    def train_epoch(self, cfg, epoch, rank, world):
        from pipelines.tokenizer.train_data import weighted_clip_dataset

        d, m = cfg.data, cfg.model
        return weighted_clip_dataset(d.shards, m.height, m.width, d.read_cpus, d.read_batch, cfg.seed, epoch, rank,
                                     world).select_columns(["frames"])

    def build_model(self, cfg):
        from gaia2.tokenizer.model import Tokenizer

        return Tokenizer(cfg.model)

    def summary(self, metrics: dict) -> list[str]:
        m = metrics
        if "val_psnr" not in m:
            return []
        return [f"validation: PSNR {m['val_psnr']:.2f} dB (mean-colour baseline {m['val_baseline_psnr']:.2f} dB, "
                f"gain {m['val_gain_db']:.2f} dB), SSIM {m['val_ssim']:.3f}"
                + (f", LPIPS {m['val_lpips']:.3f}" if "val_lpips" in m else "")]

    def trainer(self, cfg, device, rank, parallelize):
        from gaia2.tokenizer.trainer import TokenizerTrainer

        return TokenizerTrainer(cfg, device=device, rank=rank, parallelize=parallelize)

    def batch(self, rows: dict) -> Any:
        return rows["frames"]

    def validate(self, trainer, cfg, batches: Iterable[dict], log) -> tuple[dict[str, float], str]:
        from gaia2.tokenizer.preview import write_comparison

        first: list = []

        def clips():
            for batch in batches:
                if not first:
                    first.append(batch["frames"])
                yield batch["frames"]

        out = {f"val_{k}": v for k, v in trainer.evaluate(clips(), max_clips=cfg.data.val_samples).compute().items()}
        previews = cfg.schedule.preview_clips
        if log is not None and previews and first:
            video, recon = trainer.reconstruct(first[0][:previews])
            with tempfile.TemporaryDirectory() as tmp:
                path = write_comparison(os.path.join(tmp, f"step-{trainer.step:08d}.mp4"), video, recon,
                                        max_clips=previews)
                log.artifact(path, "reconstructions")
        return out, self.summary(out)[0].removeprefix("validation: ")

    def predict(self, model, model_input):
        """uint8 clips (B, T, H, W, 3), T a multiple of the temporal factor -> latent means (B, L, T/8, h, w)
        as float32 numpy."""
        import numpy as np
        import torch

        from gaia2.tokenizer.clips import to_model_input

        with torch.no_grad():
            mean, _ = model.encode(to_model_input(np.asarray(model_input, dtype=np.uint8)))
        return mean.numpy()
