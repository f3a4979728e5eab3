"""``gaia2 quickstart``: the local pipeline end to end on this machine, printing where everything is.

1. synthetic clips -> balanced, geofenced shards (``gaia2 shards build``);
2. the tiny video tokenizer trained on them with Ray Train (``gaia2 train tokenizer``), its EMA
   weights exported and registered in MLflow;
3. the shards encoded into latent shards with that tokenizer (``gaia2 encode-latents``);
4. the tiny world model trained on those latents with flow matching (``gaia2 train world-model``),
   its EMA weights exported and registered in MLflow;
5. one generation per inference mode from those models (``examples/generation/{scratch,rollout,inpaint,edit}
   .yaml``, as ``gaia2 generate --spec`` runs them), into ``<workdir>/generations/<mode>/``;
6. the world model evaluated on the validation split (``gaia2 evaluate``: FDD, FID, FVD, FVMD, agent IoU, action
   adherence, validation loss), its scores tagged on the registered version;
7. with ``--serve``: the generation service (``gaia2 serve``) on those models, one request answered over HTTP,
   and the URL of its page printed; it serves until Ctrl-C.

No pretrained weights can be assumed on a fresh machine. Unless GAIA2_CLIP_PATH, GAIA2_DINO_PATH and
GAIA2_TORCH_HOME name real ones (a CLIP vision model, a DINOv2 model, a torch home caching the LPIPS
AlexNet backbone), the quickstart writes tiny randomly initialised networks of the same classes and
says so: CLIP embeddings and the DINO / LPIPS loss terms then exercise the pipeline, not semantics. The same
holds for the evaluation's feature networks (GAIA2_EVAL_NETWORKS: a directory holding ``fdd/`` (DINOv2 ViT-L/14),
``fid/weights-inception-2015-12-05.pth``, ``fvd/i3d_pretrained_400.pt`` and ``segmenter/``): random stand-ins
measure that the pipeline is right, not how good the video looks.
"""

from __future__ import annotations

import os

from pydantic import Field

from gaia2.config.base import StrictModel, build_config
from jobs.options import Alias, Command

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "generation")
MODES = ("scratch", "rollout", "inpaint", "edit")


def pretrained_networks(work: str) -> dict[str, str]:
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


def evaluation_networks(work: str) -> dict[str, str]:
    """The evaluation's feature networks: GAIA2_EVAL_NETWORKS's, or tiny random ones of the same classes (said)."""
    from gaia2.evaluation.agent_iou import write_tiny_segmenter
    from gaia2.evaluation.features import TINY_FILES, write_tiny_networks

    root = os.environ.get("GAIA2_EVAL_NETWORKS", "")
    if root:
        return {**{m: os.path.join(root, name) for m, name in TINY_FILES.items()},
                "segmenter": os.path.join(root, "segmenter"), "random": ""}
    root = os.path.join(work, "models", "evaluation-random")
    paths = {m: os.path.join(root, name) for m, name in TINY_FILES.items()}
    if not all(os.path.exists(p) for p in paths.values()):
        paths = write_tiny_networks(root)
    paths["segmenter"] = os.path.join(root, "segmenter")
    if not os.path.exists(os.path.join(paths["segmenter"], "config.json")):
        write_tiny_segmenter(paths["segmenter"])
    print(f"[quickstart] no GAIA2_EVAL_NETWORKS: evaluating with randomly initialised DINOv2, Inception, I3D and "
          f"SegFormer of the real classes in {root} (they check the pipeline, not semantics)")
    return {**paths, "random": "1"}


class QuickstartConfig(StrictModel):
    preset: str = "tiny"
    workdir: str = Field("gaia2-quickstart", description="everything goes here: clips, shards, models, MLflow")
    clips: int = Field(24, ge=2, description="synthetic clips generated")
    seed: int = 0
    tokenizer_steps: int = Field(200, ge=1, description="tokenizer main-stage steps (about 4 minutes on 2 cores; "
                                                        "the tiny preset has 300)")
    world_model_steps: int = Field(300, ge=1, description="world-model steps (the tiny preset's 300, about 3 minutes)")
    generation_steps: int = Field(50, ge=1, description="denoising steps of each example generation (the paper's 50)")
    eval_samples: int = Field(8, ge=2, description="validation samples evaluated (8 give bootstrap intervals)")
    eval_steps: int = Field(10, ge=1, description="denoising steps of each evaluated generation")
    serve: bool = Field(False, description="then start the generation service on the trained models (until Ctrl-C)")
    port: int = Field(8000, ge=1, le=65535, description="with serve: the service's HTTP port")


def load_config(preset: str | None = None, path: str | None = None, overrides: dict | None = None
                ) -> QuickstartConfig:
    return build_config(QuickstartConfig, {"tiny": QuickstartConfig}, preset=preset, overrides=overrides, path=path)


def run(cfg: QuickstartConfig) -> str:
    """Every stage through its job's own config builder and ``run``, exactly as its command would."""
    from gaia2.synth.generate import generate_clips
    from jobs import build_shards, encode_latents, train_driver
    from jobs.specs import SPECS

    work = os.path.abspath(cfg.workdir)
    clips = os.path.join(work, "clips")
    if not os.path.isdir(clips) or len(os.listdir(clips)) < cfg.clips:
        print(f"[quickstart] generating {cfg.clips} synthetic clips in {clips}")
        generate_clips(clips, cfg.clips, seed=cfg.seed, workers=None)
    pretrained = pretrained_networks(work)
    shards, latents = os.path.join(work, "shards"), os.path.join(work, "latents")
    lines = []

    print("[quickstart] 1/6 building shards")
    result, run_id = build_shards.run(build_shards.load_config("tiny", overrides={
        "seed": cfg.seed, "embedding": {"clip_path": pretrained["clip"]},
        "job": {"source": clips, "out": shards, "workdir": work}}))
    lines.append(build_shards.summary(result, run_id, work))

    print("[quickstart] 2/6 training the tiny tokenizer (Ray Train; main stage, then the decoder's GAN fine-tune)")
    spec = SPECS["tokenizer"]
    outcome = train_driver.run(spec, spec.build_config("tiny", overrides={
        "seed": cfg.seed, "data": {"shards": shards}, "schedule": {"steps": cfg.tokenizer_steps},
        "loss": {"dino_path": pretrained["dino"], "lpips_torch_home": pretrained["torch_home"]},
        "job": {"name": "tokenizer-quickstart", "workdir": work}}))
    lines.append(train_driver.summary(spec, outcome, work))
    tokenizer_outcome = outcome

    print("[quickstart] 3/6 encoding the shards into latent shards")
    result, run_id = encode_latents.run(encode_latents.load_config("tiny", overrides={
        "seed": cfg.seed, "job": {"shards": shards, "tokenizer": f"models:/{outcome.model_name}@candidate",
                                  "out": latents, "workdir": work}}))
    lines.append(encode_latents.summary(result, run_id, work))

    print("[quickstart] 4/6 training the tiny world model on the latents (Ray Train, flow matching)")
    spec = SPECS["world-model"]
    outcome = train_driver.run(spec, spec.build_config("tiny", overrides={
        "seed": cfg.seed, "data": {"shards": latents}, "schedule": {"steps": cfg.world_model_steps},
        "job": {"name": "world-model-quickstart", "workdir": work}}))
    lines.append(train_driver.summary(spec, outcome, work))
    print("[quickstart] 5/6 generating one video per inference mode with the trained models")
    lines.append(generations(work, outcome.export_dir, tokenizer_outcome.export_dir, latents, pretrained["clip"],
                             cfg.generation_steps))
    print("[quickstart] 6/6 evaluating the world model on the validation split (gaia2 evaluate)")
    lines.append(evaluation(work, shards, latents, f"models:/{outcome.model_name}@candidate",
                            f"models:/{tokenizer_outcome.model_name}@candidate", cfg.eval_samples, cfg.eval_steps))
    if "val_improvement" in outcome.metrics:
        lines.append(f"world model: validation improvement {outcome.metrics['val_improvement']:.3f} over the "
                     f"constant-velocity baseline (1 - flow loss {outcome.metrics['val_loss']:.4f} / baseline "
                     f"{outcome.metrics['val_baseline_loss']:.4f}), trained on measured latent statistics "
                     f"({latents}/latent_stats.json)")
    if cfg.serve:
        print("\n\n".join(lines), flush=True)
        return serve(work, latents, cfg.port, min(cfg.generation_steps, 20))
    return "\n\n".join(lines) + f"\n\nnext: gaia2 serve --workdir {work}   (the generation service on these models)"


def serve(work: str, latents: str, port: int, steps: int) -> str:
    """The service on the quickstart's registered models and latent shards; one generation asked of it over HTTP."""
    import requests

    from jobs.serve import cli

    print("[quickstart] then: starting the generation service on the trained models (Ray Serve)")
    cfg = cli.build("tiny", overrides={"models": {"workdir": work}, "dataset": latents, "http": {"port": port}})
    url = cli.start(cfg)
    spec = {"name": "quickstart", "rig": {"name": "sedan6_30hz"}, "duration": {"latent_steps": 6},
            "action": {"speed": 8.0, "curvature": {"profile": "turn_left"}}, "metadata": {"weather": "rain"},
            "sampler": {"steps": steps, "seed": 0}}
    status = requests.post(url + "v1/generations", json=spec, params={"wait": 300}, timeout=330).json()
    if status.get("status") != "done":
        raise RuntimeError(f"the service did not answer the first request: {status}")
    print(cli.banner(cfg, url))
    print(f"answered: {url.rstrip('/')}{status['links']['video']} ({status['frames']} frames x "
          f"{len(status['cameras'])} cameras in {status['seconds']:.1f} s)", flush=True)
    return cli.serve_forever_started(cfg)


def evaluation(work: str, shards: str, latents: str, world_model: str, tokenizer: str, samples: int,
               steps: int) -> str:
    """``gaia2 evaluate`` on the trained models, every metric, as its command runs it."""
    from jobs import evaluate

    nets = evaluation_networks(work)
    overrides = {"networks": {"fdd": nets["fdd"], "fid": nets["fid"], "fvd": nets["fvd"],
                              "segmenter": nets["segmenter"]},
                 "job": {"world_model": world_model, "tokenizer": tokenizer, "shards": shards, "latents": latents,
                         "samples": samples, "sampler_steps": steps, "workdir": work, "name": "quickstart"}}
    if not nets["random"]:   # real networks: their own resolutions, not the tiny preset's small ones
        overrides["networks"]["resolutions"] = {"fdd": [448, 952], "fvd": [224, 224]}
    text = evaluate.summary(evaluate.run(evaluate.load_config("tiny", overrides=overrides)))
    note = " (random feature networks: pipeline check)" if nets["random"] else ""
    return f"evaluation{note}:\n" + "\n".join(text.splitlines()[:-1])


def generations(work: str, world_model: str, tokenizer: str, latents: str, clip: str, steps: int) -> str:
    """The example spec of every mode generated with these models, each as ``gaia2 generate --spec`` runs it, into
    ``<work>/generations/<mode>/``; the summary says where the videos are."""
    from jobs import generate

    lines = [f"generations (examples/generation/<mode>.yaml, {steps} denoising steps each):"]
    for mode in MODES:
        out = os.path.join(work, "generations", mode)
        summary = generate.run_local(generate.load_config("tiny", overrides={"job": {
            "spec": os.path.join(EXAMPLES, f"{mode}.yaml"), "out": out, "world_model": world_model,
            "tokenizer": tokenizer, "latents": latents, "clip": clip, "sampler_steps": steps, "workdir": work}}))
        what = summary.splitlines()[0].split(out, 1)[-1].strip()   # "(mode, steps = frames at rate, cameras) in s"
        lines.append(f"  {mode:<8} {os.path.join(out, 'video.mp4')}  {what}")
    return "\n".join(lines)


COMMAND = Command(
    prog="gaia2 quickstart", description="the local pipeline end to end on synthetic data",
    aliases=(Alias("--workdir", "workdir", "where everything goes"), Alias("--clips", "clips", "synthetic clips", int),
             Alias("--seed", "seed", "seed of every stage", int),
             Alias("--tokenizer-steps", "tokenizer_steps", "tokenizer main-stage steps", int),
             Alias("--world-model-steps", "world_model_steps", "world-model steps", int),
             Alias("--generation-steps", "generation_steps", "denoising steps per example generation", int),
             Alias("--serve", "serve", "then serve the trained models (gaia2 serve) until Ctrl-C", None),
             Alias("--port", "port", "with --serve: the service's HTTP port", int)),
    presets=("tiny",), build=load_config, work=run,
    input_errors=())
