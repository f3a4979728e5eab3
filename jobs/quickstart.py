"""``gaia2 quickstart``: the local pipeline end to end on this machine, printing where everything is.

1. synthetic clips -> balanced, geofenced shards (``gaia2 shards build``);
2. the tiny video tokenizer trained on them with Ray Train (``gaia2 train tokenizer``), its EMA
   weights exported and registered in MLflow;
3. the shards encoded into latent shards with that tokenizer (``gaia2 encode-latents``);
4. the tiny world model trained on those latents with flow matching (``gaia2 train world-model``),
   its EMA weights exported and registered in MLflow.

No pretrained weights can be assumed on a fresh machine. Unless GAIA2_CLIP_PATH, GAIA2_DINO_PATH and
GAIA2_TORCH_HOME name real ones (a CLIP vision model, a DINOv2 model, a torch home caching the LPIPS
AlexNet backbone), the quickstart writes tiny randomly initialised networks of the same classes and
says so: CLIP embeddings and the DINO / LPIPS loss terms then exercise the pipeline, not semantics.
"""

from __future__ import annotations

import argparse
import os


def _pretrained(work: str) -> dict[str, str]:
    from gaia2.embedding.clip import save_random_clip
    from gaia2.tokenizer.losses import lpips_backbone_cache_path
    from gaia2.tokenizer.standins import save_random_dinov2, save_random_lpips_backbone

    models = os.path.join(work, "models")
    out = {"clip": os.environ.get("GAIA2_CLIP_PATH", ""), "dino": os.environ.get("GAIA2_DINO_PATH", ""),
           "torch_home": os.environ.get("GAIA2_TORCH_HOME", "")}
    if not out["clip"]:
        out["clip"] = os.path.join(models, "clip-random")
        if not os.path.exists(os.path.join(out["clip"], "config.json")):
            save_random_clip(out["clip"])
        print(f"[quickstart] no GAIA2_CLIP_PATH: using a randomly initialised tiny CLIP at {out['clip']}")
    if not out["dino"]:
        out["dino"] = os.path.join(models, "dinov2-random")
        if not os.path.exists(os.path.join(out["dino"], "config.json")):
            save_random_dinov2(out["dino"])
        print(f"[quickstart] no GAIA2_DINO_PATH: using a randomly initialised tiny DINOv2 at {out['dino']}")
    if not out["torch_home"]:
        out["torch_home"] = os.path.join(models, "torch-random")
        if not lpips_backbone_cache_path("alex", out["torch_home"]).is_file():
            save_random_lpips_backbone(out["torch_home"])
        print(f"[quickstart] no GAIA2_TORCH_HOME: using a randomly initialised AlexNet for LPIPS in {out['torch_home']}")
    return out


def main(args: argparse.Namespace) -> int:
    from gaia2.synth.generate import generate_clips
    from jobs import build_shards, encode_latents, train_tokenizer, train_world_model

    work = os.path.abspath(args.workdir)
    clips = os.path.join(work, "clips")
    if not os.path.isdir(clips) or len(os.listdir(clips)) < args.clips:
        print(f"[quickstart] generating {args.clips} synthetic clips in {clips}")
        generate_clips(clips, args.clips, seed=args.seed, workers=None)
    pretrained = _pretrained(work)
    shards = os.path.join(work, "shards")

    print("[quickstart] 1/4 building shards")
    code = build_shards.execute(argparse.Namespace(
        source=clips, out=shards, config=None, preset="tiny", seed=args.seed, clip_path=pretrained["clip"],
        workdir=work))
    if code:
        return code

    print("[quickstart] 2/4 training the tiny tokenizer (Ray Train; main stage, then the decoder's GAN fine-tune)")
    code = train_tokenizer.execute(argparse.Namespace(
        shards=shards, preset="tiny", config=None, name="tokenizer-quickstart", steps=args.tokenizer_steps,
        gan_steps=None, batch_size=None, workers=None, gpu=None, seed=args.seed, dino_path=pretrained["dino"],
        lpips_torch_home=pretrained["torch_home"], storage=None, workdir=work, inject_failure_at=None))
    if code:
        return code

    print("[quickstart] 3/4 encoding the shards into latent shards")
    latents = os.path.join(work, "latents")
    code = encode_latents.execute(argparse.Namespace(
        shards=shards, tokenizer="models:/gaia2-tokenizer-tiny@candidate", out=latents, mode=None, seed=args.seed,
        batch_size=None, num_gpus=None, num_cpus=None, concurrency=None, workdir=work))
    if code:
        return code

    print("[quickstart] 4/4 training the tiny world model on the latents (Ray Train, flow matching)")
    return train_world_model.execute(argparse.Namespace(
        shards=latents, preset="tiny", config=None, name="world-model-quickstart", steps=args.world_model_steps,
        batch_size=None, workers=None, gpu=None, seed=args.seed, storage=None, workdir=work, inject_failure_at=None))
