"""Training data the training benchmarks share: synthetic clips -> shards (-> latent shards), and the
pretrained-network stand-ins, each built with the same code the jobs use."""

from __future__ import annotations

import os
import shutil


def fresh(workdir: str) -> str:
    work = os.path.abspath(workdir)
    shutil.rmtree(work, ignore_errors=True)
    return work


def shards(work: str, clips: int, seed: int, frames: int, hop: int, size: tuple[int, int] | None = None,
           target_mb: float = 1.0) -> str:
    """``clips`` synthetic 4 s clips -> a shard build of ``frames``-frame windows every ``hop`` frames (at
    ``size`` = (H, W), else the tiny preset's)."""
    from gaia2.config.shards import load_shard_config
    from gaia2.embedding.clip import save_random_clip
    from gaia2.synth.generate import generate_clips
    from jobs.runtime import init_ray
    from pipelines.shards.build import build_shards

    source = os.path.join(work, "clips")
    generate_clips(source, clips, seed=seed, duration_s=4.0, workers=None)
    init_ray()
    out = os.path.join(work, "shards")
    overrides = {"window": {"frames": frames, "hop": hop}, "balance": {"min_stride_s": 0.5},
                 "shards": {"target_mb": target_mb},
                 "embedding": {"clip_path": save_random_clip(os.path.join(work, "models", "clip"))}}
    if size:
        overrides["image"] = {"height": size[0], "width": size[1]}
    build_shards(source, out, load_shard_config("tiny", overrides=overrides))
    return out


def latents(work: str, shard_dir: str, seed: int, tokenizer: str | None = None) -> tuple[str, str]:
    """``shard_dir`` encoded (posterior means) by ``tokenizer``, or by a random tiny tokenizer (a fixed random
    encoding) -> (latent shard directory, which tokenizer)."""
    import torch

    from gaia2.tokenizer import Tokenizer, tiny
    from gaia2.tokenizer.export import save_tokenizer
    from pipelines.tokenizer.latents import encode_latents, latent_config

    which = "given" if tokenizer else "random tiny (fixed random encoding)"
    if tokenizer is None:
        torch.manual_seed(seed)
        tokenizer = save_tokenizer(os.path.join(work, "models", "tokenizer"), Tokenizer(tiny()))
    out = os.path.join(work, "latents")
    encode_latents(shard_dir, tokenizer, out, latent_config(mode="mean"))
    return out, which


def pretrained(work: str, dino: str | None = None, torch_home: str | None = None) -> dict:
    """The tokenizer's loss networks: the given ones, or random stand-ins of the same classes."""
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone

    print(f"pretrained: DINOv2 {'given' if dino else 'random stand-in'}, LPIPS backbone "
          f"{'given' if torch_home else 'random stand-in'}", flush=True)
    if torch_home is None:
        torch_home = os.path.join(work, "models", "torch")
        save_random_lpips_backbone(torch_home)
    return {"dino_path": dino or save_random_dinov2(os.path.join(work, "models", "dino")), "lpips_torch_home": torch_home}


def training_data(model: str, work: str, clips: int, seed: int, tokenizer: str | None = None,
                  dino: str | None = None, torch_home: str | None = None) -> dict:
    """Config overrides that point ``model``'s training at freshly built data (and its pretrained networks)."""
    if model == "tokenizer":
        built = shards(work, clips, seed, frames=24, hop=12, size=(32, 64))
        return {"data": {"shards": built}, "loss": pretrained(work, dino, torch_home)}
    built, which = latents(work, shards(work, clips, seed, frames=48, hop=12, target_mb=2.0), seed, tokenizer)
    print(f"tokenizer: {which}", flush=True)
    return {"data": {"shards": built}}
