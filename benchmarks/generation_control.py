"""Does the conditioning steer what is generated? Commanded ego action against the motion the decoded video shows.

    python benchmarks/generation_control.py [--clips 16] [--tokenizer-steps 150] [--world-model-steps 300]
        [--scenes 6] [--steps 50] [--guidance 4] [--workdir bench-generation-control]
    python benchmarks/generation_control.py --reuse DIR      # the models and latents of an earlier run (or quickstart)

1. Trains the tiny models on synthetic data with the real jobs, as the quickstart does (clips -> shards ->
   tokenizer -> latent shards with measured statistics -> world model), within about 15 minutes on 2 cores.
2. For ``--scenes`` validation samples (their rig, timestamps, metadata and CLIP embeddings; not their agents,
   whose boxes would carry the recorded ego motion), generates from scratch under each commanded action of a
   grid: constant speeds x left / right bends (at most 0.02 1/m and 2 m/s^2 sideways, the range of the synthetic
   roads). The same seeds are generated again with the action left
   out (unconditional: the chance reference), and, with ``--guidance``, guided on the action (the unconditional
   branch drops speed and curvature).
3. Measures every decoded video with ``gaia2.evaluation.ego_motion`` (dense photometric fit of ego speed and yaw
   rate to all cameras; it never sees the conditioning), and the real validation videos (every validation
   sample, decoded at the generated frame size) against their recorded speed and curvature: how well the
   estimator reads real video is the ceiling.

Figures: the Spearman correlation between commanded (recorded, for real video) and apparent mean speed, and the
fraction of clips whose apparent turn (sign of the yaw rate) matches the sign of the commanded curvature (real:
among clips whose |curvature| exceeds ``--min-curvature``). Goals: speed correlation >= 0.5, curvature sign
agreement >= 0.75. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tarfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import fresh  # noqa: E402

SPEEDS = (2.0, 6.0, 10.0, 15.0, 22.0)       # m/s, commanded constants (the synthetic drives' range)
TURNS = (-1.0, 1.0)                         # right, left
LATERAL_ACCEL = 2.0                         # m/s^2: commanded bends are as gentle as the synthetic roads' at speed


def curvature_for(speed: float, turn: float) -> float:
    """A bend the training data could contain: at most 0.02 1/m, and at most ``LATERAL_ACCEL`` sideways."""
    return turn * min(0.02, LATERAL_ACCEL / max(speed, 1.0) ** 2)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def sign_agreement(commanded, yaw_rate) -> float:
    c, w = np.sign(np.asarray(commanded, float)), np.sign(np.asarray(yaw_rate, float))
    ok = (c != 0) & np.isfinite(w)
    return float((c[ok] == w[ok]).mean()) if ok.any() else float("nan")


def train(args, work: str) -> dict:
    """The quickstart's stages with the benchmark's sizes -> {world_model, tokenizer, latents, shards} paths."""
    from gaia2.synth.generate import generate_clips
    from jobs import build_shards, encode_latents, train_driver
    from jobs.quickstart import pretrained_networks
    from jobs.specs import SPECS

    clips = os.path.join(work, "clips")
    generate_clips(clips, args.clips, seed=args.seed, workers=None)
    pretrained = pretrained_networks(work)
    shards, latents = os.path.join(work, "shards"), os.path.join(work, "latents")
    build_shards.run(build_shards.load_config("tiny", overrides={
        "seed": args.seed, "embedding": {"clip_path": pretrained["clip"]},
        "job": {"source": clips, "out": shards, "workdir": work}}))
    spec = SPECS["tokenizer"]
    tok = train_driver.run(spec, spec.build_config("tiny", overrides={
        "seed": args.seed, "data": {"shards": shards}, "schedule": {"steps": args.tokenizer_steps},
        "loss": {"dino_path": pretrained["dino"], "lpips_torch_home": pretrained["torch_home"]},
        "job": {"name": "tokenizer-control", "workdir": work}}))
    encode_latents.run(encode_latents.load_config("tiny", overrides={
        "seed": args.seed, "job": {"shards": shards, "tokenizer": tok.export_dir, "out": latents, "workdir": work}}))
    spec = SPECS["world-model"]
    wm = train_driver.run(spec, spec.build_config("tiny", overrides={
        "seed": args.seed, "data": {"shards": latents}, "schedule": {"steps": args.world_model_steps},
        "job": {"name": "world-model-control", "workdir": work}}))
    print(f"trained: world model val_improvement {wm.metrics.get('val_improvement', float('nan')):.3f}", flush=True)
    return {"world_model": wm.export_dir, "tokenizer": tok.export_dir, "latents": latents, "shards": shards}


def reuse(work: str) -> dict:
    """An earlier run's (or the quickstart's) exports and data, found by their layout."""
    def one(pattern: str) -> str:
        found = sorted(glob.glob(os.path.join(work, pattern)))
        if not found:
            raise SystemExit(f"--reuse {work}: nothing matches {pattern}")
        return found[-1]
    return {"world_model": one("world-model-jobs/*/export/world_model"),
            "tokenizer": one("tokenizer-jobs/*/export/tokenizer"),
            "latents": os.path.join(work, "latents"), "shards": os.path.join(work, "shards")}


def calibrations(rig, frame_hw: tuple[int, int]) -> dict:
    """The rig's cameras for frames of ``frame_hw``, as the estimator takes them."""
    from gaia2.evaluation import CameraCalibration

    return {name: CameraCalibration.from_record({"width": c.width, "height": c.height, "intrinsics": c.intrinsics,
                                                 "extrinsics": c.cam_to_ego, "distortion": c.distortion}, frame_hw)
            for name, c in zip(rig.names, rig.cameras)}


def measure(frames: np.ndarray, rig, frame_hw: tuple[int, int]) -> tuple[float, float]:
    from gaia2.evaluation import estimate_ego_motion

    est = estimate_ego_motion(dict(zip(rig.names, frames)), calibrations(rig, frame_hw), rig.frame_rate)
    return est.speed, est.yaw_rate


def real_reference(shards: str, frame_hw: tuple[int, int], cameras: int, limit: int | None,
                   split: str = "val") -> dict:
    """Every sample of a split of the shard build (``*``: all): apparent motion of its real video at the generated
    size against its recorded mean speed and curvature."""
    from gaia2.evaluation import CameraCalibration, estimate_ego_motion
    from gaia2.tokenizer.clips import decode_camera

    rows = []
    for tar in sorted(glob.glob(os.path.join(shards, split, "*.tar"))):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, _, field = m.name.partition(".")
                members.setdefault(key, {})[field] = t.extractfile(m).read()
        for key, files in sorted(members.items()):
            if limit is not None and len(rows) >= limit:
                break
            meta = json.loads(files["json"])
            cams = meta["cameras"][:cameras]
            videos = {c["name"]: decode_camera(files[f"{c['name']}.mp4"], c["name"], (c["height"], c["width"]),
                                               frame_hw) for c in cams}
            calib = {c["name"]: CameraCalibration.from_record(c, frame_hw) for c in cams}
            grid = np.asarray(meta["timestamps"])
            est = estimate_ego_motion(videos, calib, float(1.0 / np.median(np.diff(grid))))
            rows.append((float(np.mean(meta["ego"]["speed"])), float(np.mean(meta["ego"]["curvature"])),
                         est.speed, est.yaw_rate))
    return {"rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--tokenizer-steps", type=int, default=150)
    p.add_argument("--world-model-steps", type=int, default=300)
    p.add_argument("--scenes", type=int, default=6, help="validation samples generated under every command")
    p.add_argument("--steps", type=int, default=50, help="denoising steps per generation")
    p.add_argument("--guidance", type=float, default=4.0, help="also guided on the action at this scale (1 = skip)")
    p.add_argument("--min-curvature", type=float, default=0.002, help="real clips: |curvature| above this count")
    p.add_argument("--real-limit", type=int, default=None, help="at most this many real validation clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", help="models and latents of an earlier run of this benchmark or of the quickstart")
    p.add_argument("--workdir", default="bench-generation-control")
    args = p.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    import torch

    from gaia2.generation import Generator, LocalSources, parse_spec
    from gaia2.generation.sampler import batch_key

    t0 = time.perf_counter()
    seconds = {}
    if args.reuse:
        paths = reuse(os.path.abspath(args.reuse))
    else:
        paths = train(args, fresh(args.workdir))
        seconds["train"] = time.perf_counter() - t0
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    gen = Generator.from_dirs(paths["world_model"], paths["tokenizer"], device="cpu")
    sources = LocalSources(latents=paths["latents"])
    scenes = sources.shards.keys("val")[:args.scenes]
    frame_hw = gen.geometry.frame_hw
    window = gen.geometry.window

    variants = {"conditional": (True, 1.0), "unconditional": (False, 1.0)}
    if args.guidance != 1.0:
        variants["guided"] = (True, args.guidance)
    commands = [(s, curvature_for(s, turn)) for s in SPEEDS for turn in TURNS]
    results = {name: [] for name in variants}
    t = time.perf_counter()
    for i, key in enumerate(scenes):
        for name, (conditioned, scale) in variants.items():
            specs = []
            for j, (speed, curvature) in enumerate(commands):
                spec = {"rig": {"sample": key}, "duration": {"latent_steps": window}, "inherit": ["metadata", "clip"],
                        "sampler": {"steps": args.steps, "seed": 1000 * i + j}}
                if conditioned:
                    spec["action"] = {"speed": speed, "curvature": curvature}
                if scale != 1.0:
                    spec["guidance"] = {"scale": scale, "drop": ["action"]}
                specs.append(parse_spec(spec))
            requests = [gen.prepare(s, sources) for s in specs]
            assert len({batch_key(r) for r in requests}) == 1
            for r, latents, (speed, curvature) in zip(requests, gen.sample(requests), commands):
                speed_est, yaw_est = measure(gen.decode(latents), r.rig, frame_hw)
                results[name].append((speed, curvature, speed_est, yaw_est))
        print(f"scene {i + 1}/{len(scenes)} {key}: "
              + "; ".join(f"{n} speed rho {spearman(*np.array(v)[:, [0, 2]].T):.2f}" for n, v in results.items()),
              flush=True)
    seconds["generate_and_measure"] = time.perf_counter() - t

    t = time.perf_counter()
    real = np.array(real_reference(paths["shards"], frame_hw, gen.geometry.cameras, args.real_limit)["rows"])
    # The validation split is one geofenced area (few drives, few bends): the estimator is also measured on every
    # clip of the build, for a reference over the whole range of speeds and turns.
    every = np.array(real_reference(paths["shards"], frame_hw, gen.geometry.cameras, args.real_limit, "*")["rows"])
    seconds["real"] = time.perf_counter() - t
    turning = np.abs(real[:, 1]) > args.min_curvature
    turning_all = np.abs(every[:, 1]) > args.min_curvature

    figures = {}
    for name, rows in results.items():
        a = np.array(rows)
        figures[name] = {"speed_spearman": spearman(a[:, 0], a[:, 2]),
                         "curvature_sign_agreement": sign_agreement(a[:, 1], a[:, 3]), "clips": len(a),
                         "apparent_speed_by_command": {f"{s:g}": float(np.mean(a[a[:, 0] == s, 2])) for s in SPEEDS}}
    figures["real"] = {"speed_spearman": spearman(real[:, 0], real[:, 2]),
                       "curvature_sign_agreement": sign_agreement(real[turning, 1], real[turning, 3]),
                       "clips": len(real), "turning_clips": int(turning.sum())}
    figures["real_all_splits"] = {"speed_spearman": spearman(every[:, 0], every[:, 2]),
                                  "curvature_sign_agreement": sign_agreement(every[turning_all, 1],
                                                                             every[turning_all, 3]),
                                  "clips": len(every), "turning_clips": int(turning_all.sum())}
    print(f"{'':<16} {'speed rho':>10} {'turn sign':>10} {'clips':>6}")
    for name, f in figures.items():
        print(f"{name:<16} {f['speed_spearman']:>10.3f} {f['curvature_sign_agreement']:>10.3f} {f['clips']:>6}")
    print("mean apparent speed (m/s) by commanded speed: " + "; ".join(
        f"{n}: " + ", ".join(f"{k}->{v:.1f}" for k, v in figures[n]["apparent_speed_by_command"].items())
        for n in results))
    out = {
        "speed_spearman": figures["conditional"]["speed_spearman"],
        "curvature_sign_agreement": figures["conditional"]["curvature_sign_agreement"],
        "real_speed_spearman": figures["real"]["speed_spearman"],
        "real_curvature_sign_agreement": figures["real"]["curvature_sign_agreement"],
        "unconditional_speed_spearman": figures["unconditional"]["speed_spearman"],
        "unconditional_curvature_sign_agreement": figures["unconditional"]["curvature_sign_agreement"],
        "real_all_splits_speed_spearman": figures["real_all_splits"]["speed_spearman"],
        "real_all_splits_curvature_sign_agreement": figures["real_all_splits"]["curvature_sign_agreement"],
    }
    if "guided" in figures:
        out.update(guided_speed_spearman=figures["guided"]["speed_spearman"],
                   guided_curvature_sign_agreement=figures["guided"]["curvature_sign_agreement"],
                   guidance_scale=args.guidance)
    out.update(scenes=len(scenes), commands=len(commands), real_clips=len(real),
               real_turning_clips=int(turning.sum()), real_all_splits_clips=len(every),
               real_all_splits_turning_clips=int(turning_all.sum()), steps=args.steps,
               **{f"{k}_seconds": round(v, 1) for k, v in seconds.items()},
               seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}))


if __name__ == "__main__":
    main()
