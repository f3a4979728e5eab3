"""Evaluate trained world models the way the paper does (§6.2, Fig. 13), as a Ray job tracked in MLflow.

    gaia2 evaluate --world-model URI --tokenizer URI --shards SHARDS --latents LATENTS [--samples N]
        [--mode scratch|rollout|edit] [--metrics fdd,fid,fvd,fvmd,iou,action,loss]
        [--fdd-net DIR --fid-net FILE --fvd-net FILE --segmenter DIR] [--tracker lucas-kanade|FILE]
        [--checkpoints RUN_DIR] [--promote ALIAS --by METRIC] [--out DIR] [--workdir DIR]
        [--preset tiny|paper|nuscenes]
    python -m jobs.evaluate ...                     # the same job, as a Ray job entry point

Presets are protocols: ``paper`` is GAIA-2's (n = 1024, §6.2), ``nuscenes`` the nuScenes-val protocol of the open
driving world models (MagicDrive, W-CODA 2024, OpenDWM: FID over every frame, FVD over one 16-frame clip per
camera of each of the 150 val scenes, frames at 224 x 400; ``nuscenes()`` says which settings come from where),
``tiny`` a pipeline check. The report's ``protocol`` names the one followed, its settings and sources, and every
protocol-defining setting changed from the preset's (``deviations``).

Every sample of the validation split (the first ``--samples`` keys) is regenerated under its own recorded
conditioning (``spec_for_sample``: the generation job's actor pool), decoded, and measured beside its real video
in an actor pool (``pipelines.evaluation.measure``; ``measure.num_gpus`` per actor):

    fdd      Fréchet distance of DINOv2 ViT-L/14 CLS features of frames resized to 448 x 952
    fid      Fréchet distance of InceptionV3 pool features at 299 x 299 (torchmetrics' extractor, antialias off)
    fvd      Fréchet distance of I3D features of 16-frame clips (cd-fvd's I3D, 224 x 224; ``fvd_clip_frames``)
    fvmd     Fréchet Video Motion Distance over keypoint tracks (the tracker is named in the results)
    iou      agent adherence: class IoU of the conditioning boxes and what a segmenter finds in the generation
    action   action adherence: the generation's apparent ego speed against the commanded speed (Spearman), and
             the sign of its turning against the commanded curvature
    loss     the validation flow loss, by tau bucket and task (the paper's best proxy for human preference)

Each distance has its sample counts and a bootstrap interval (``bootstrap`` resamples, ``level``). Real-video
measurements are cached by (dataset fingerprint, extractor fingerprint incl. weights and resolution, frame
choice, clip length, evaluation size) under ``job.cache``, so evaluating another model reuses them, and a copy
of the same build elsewhere (the fingerprint is of the contents). Pretrained networks load from local paths
only (``networks.*``); nothing is downloaded. The shards (``--shards``, ``--latents``) are local directories or
object-storage URIs (``s3://``, ``gs://``: ``gaia2.storage``); so may ``--out`` be (the job then works in
``<workdir>/evaluations/<name>`` and copies its output to the URI at the end); the cache is local.

Output (``job.out``, default ``<workdir>/evaluations/<name>``): ``generations/<model>/<key>/``,
``measurements/<model>/``, ``evaluation.json`` (the report, with its ``protocol``), and one MLflow run (experiment
``evaluation``) with every metric and its interval, ``evaluation/protocol.json``, plots, a grid of real vs
generated frames and side-by-side videos; the scores are also set as tags on the evaluated registered model
versions. ``--checkpoints`` evaluates every checkpoint of one training run (metrics against training step:
Fig. 13); ``--promote ALIAS --by METRIC`` moves the alias to the evaluated version only when it beats the version
the alias holds beyond the confidence intervals. The last line printed is one JSON object: the metrics by name,
each with its interval and sample count.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Literal, Sequence

from pydantic import Field, field_validator

from gaia2 import storage
from gaia2.config.base import ConfigError, StrictModel, build_config
from gaia2.flow.stats import LatentStatsError
from gaia2.generation.spec import SpecError
from jobs.generate_batch import GenerateInputError
from jobs.options import Alias, Command
from jobs.registry import ModelInputError
from pipelines.evaluation.samples import unreadable

EXPERIMENT = "evaluation"
REPORT_FILE = "evaluation.json"
METRICS = ("fdd", "fid", "fvd", "fvmd", "iou", "action", "loss")
NETWORK_OF = {"fdd": "fdd", "fid": "fid", "fvd": "fvd", "iou": "segmenter"}   # metric -> its networks.* field
NETWORK_NOUN = {"fdd": "a DINOv2 ViT-L/14 checkpoint directory (transformers save_pretrained)",
                "fid": "an InceptionV3 weights file (torch-fidelity's pt_inception-2015-12-05)",
                "fvd": "an I3D weights file (i3d_pretrained_400.pt)",
                "segmenter": "a segmentation checkpoint directory (transformers) or a gaia2 3D detector"}


class EvaluationError(ValueError):
    """Inputs the evaluation cannot use (no samples, no real video, nothing measured); says which and why."""


class Networks(StrictModel):
    """Pretrained networks, from local paths only (a missing one is an error, never a download)."""
    fdd: str | None = Field(None, description="DINOv2 ViT-L/14 directory (transformers save_pretrained)")
    fid: str | None = Field(None, description="InceptionV3 weights file (torch-fidelity's FID Inception)")
    fvd: str | None = Field(None, description="I3D weights file (Kinetics-400, as cd-fvd loads it)")
    segmenter: str | None = Field(None, description="agent IoU: a transformers segmentation checkpoint directory "
                                                    "or a gaia2 reference 3D detector directory")
    tracker: str = Field("lucas-kanade", min_length=1, description="FVMD's point tracker: lucas-kanade (no "
                                                                   "weights) or a TorchScript point tracker file")
    resolutions: dict[str, list[int]] = Field(default_factory=dict,
                                              description="metric -> [H, W] its frames are resized to (default: "
                                                          "the metric's own, e.g. fdd 448 x 952)")

    @field_validator("resolutions")
    @classmethod
    def _sizes(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for metric, size in value.items():
            if metric not in ("fdd", "fid", "fvd"):
                raise ValueError(f"{metric!r}: resolutions are for fdd, fid or fvd")
            if len(size) != 2 or min(size) < 8:
                raise ValueError(f"{metric}: expected [H, W] of at least 8 pixels, got {size}")
        return value


class Measure(StrictModel):
    """How videos are measured and on what resources."""
    frames_per_video: int | Literal["all"] = Field(4, description="frames per camera for FDD and FID: N spread "
                                                                  "evenly over the video, or 'all' (every frame "
                                                                  "of every camera, as nuScenes papers take FID)")
    clips_per_video: int = Field(1, ge=1, description="clips per camera (spread evenly) for FVD (fvd_clip_frames "
                                                      "long) and FVMD (16 frames, its paper's length)")
    fvd_clip_frames: int = Field(16, ge=8, le=128, description="frames per FVD clip: 16, the FVD paper's and the "
                                                               "nuScenes protocol's (some driving papers use 8 "
                                                               "or 25)")
    frame_sizes: dict[str, list[int]] = Field(default_factory=dict,
                                              description="metric -> [H, W] real and generated frames are resized "
                                                          "to (antialiased) before its network: the resolution a "
                                                          "protocol evaluates at, e.g. nuScenes' 224 x 400 for fid "
                                                          "and fvd (absent: as decoded)")
    fvmd_cells: int = Field(2, ge=1, le=8, description="FVMD's spatial cells per side")
    batch_size: int = Field(16, ge=1, description="images / clips per network call")
    rows_per_call: int = Field(2, ge=1, description="videos per actor call")
    concurrency: int = Field(1, ge=1, description="measuring actors (each loads the networks once)")
    num_gpus: float = Field(0, ge=0, description="GPUs per measuring actor")
    num_cpus: float = Field(1, gt=0, description="CPUs per measuring actor (and its torch threads on the CPU)")

    @field_validator("frames_per_video")
    @classmethod
    def _frames(cls, value: int | str) -> int | str:
        if value != "all" and value < 1:
            raise ValueError(f"expected a count of at least 1 or 'all', got {value!r}")
        return value

    @field_validator("frame_sizes")
    @classmethod
    def _frame_sizes(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for metric, size in value.items():
            if metric not in ("fdd", "fid", "fvd", "fvmd"):
                raise ValueError(f"{metric!r}: frame sizes are for fdd, fid, fvd or fvmd")
            if len(size) != 2 or min(size) < 8:
                raise ValueError(f"{metric}: expected [H, W] of at least 8 pixels, got {size}")
        return value


class Protocol(StrictModel):
    """The published protocol the figures follow, recorded in ``evaluation.json`` and the MLflow run (with every
    protocol-defining setting changed from its preset's) so that a reader knows what they compare with."""
    name: str = Field("gaia2-tiny", min_length=1, description="the protocol's name")
    summary: str = Field("", description="one line: what is measured, on what, at which settings")
    frame_rate: float | None = Field(None, gt=0, description="Hz the protocol's videos are at: every evaluated "
                                                             "sample's recorded frame_rate must be within 5 % "
                                                             "(checked before generating); null: not checked")
    samples: int | None = Field(None, ge=1, description="samples the protocol measures (nuScenes val: its 150 "
                                                        "scenes); a different count is reported as a deviation")
    citations: list[str] = Field(default_factory=list, description="papers and files the settings come from")


class Generation(StrictModel):
    """How the samples are generated (the generation job's actor pool)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    batch_size: int = Field(4, ge=1)
    concurrency: int = Field(1, ge=1)
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(1, gt=0)


class EvaluateJob(StrictModel):
    world_model: str | None = Field(None, description="world model export directory or MLflow model URI")
    checkpoints: str | None = Field(None, description="instead of world_model: a training run's folder of "
                                                      "checkpoint-<step> directories (or a comma list of them)")
    tokenizer: str | None = Field(None, description="tokenizer export directory or MLflow model URI")
    shards: str | None = Field(None, description="pixel shards (gaia2 shards build), a directory or an s3:// / "
                                                 "gs:// URI: the real videos")
    latents: str | None = Field(None, description="latent shards of the same build (gaia2 encode-latents), a "
                                                  "directory or a URI: each sample's conditioning, and the "
                                                  "validation loss")
    split: str = Field("val", min_length=1)
    samples: int | None = Field(None, ge=1, description="the first N samples of the split (keys sorted; all by "
                                                        "default; the paper: 1024)")
    windows_per_clip: int | None = Field(None, ge=1, description="at most N windows of each source clip (e.g. a "
                                                                 "nuScenes scene), its first ones, before "
                                                                 "samples applies; null: every window")
    mode: Literal["scratch", "rollout", "edit"] = "scratch"
    context_steps: int = Field(3, ge=1)
    tau_start: float = Field(0.5, ge=0.0, le=1.0)
    sampler_steps: int = Field(50, ge=1, le=1000)
    seed: int = Field(0, ge=0, description="sampler seeds (a hash of seed and key per sample) and bootstrap")
    metrics: str = Field(",".join(METRICS), description="comma list of fdd, fid, fvd, fvmd, iou, action, loss")
    loss_samples: int | None = Field(None, ge=1, description="validation samples of the flow loss (default: "
                                                             "samples, i.e. the same first N keys)")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                             description="the evaluation's name (default: from the model and mode)")
    out: str | None = Field(None, description="output directory (default <workdir>/evaluations/<name>), or an "
                                              "s3:// / gs:// URI: then the job works in that default local "
                                              "directory and copies the output there at the end (not _models/), "
                                              "evaluation.json last")
    cache: str | None = Field(None, description="real-video measurement cache (default <workdir>/feature-cache); "
                                                "a local directory only (entries are published by renames that "
                                                "concurrent evaluations sharing it rely on)")
    workdir: str = Field(default_factory=lambda: os.environ.get("GAIA2_WORKDIR", "gaia2-work"))
    promote: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,100}$",
                                description="an alias to move to the evaluated version if it beats the holder")
    by: str | None = Field(None, description="with promote: the metric that decides (e.g. fdd, val_loss)")
    artifact_videos: int = Field(4, ge=0, description="side-by-side real | generated videos kept in the run")

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: str) -> str:
        names = [m.strip() for m in value.split(",") if m.strip()]
        unknown = [m for m in names if m not in METRICS]
        if unknown or not names:
            raise ValueError(f"{unknown or value!r}: metrics are a comma list of {', '.join(METRICS)}")
        return ",".join(dict.fromkeys(names))


class EvaluateConfig(StrictModel):
    preset: str = "tiny"
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples of each interval (0: none)")
    level: float = Field(0.95, gt=0.0, lt=1.0, description="the intervals' confidence level")
    generation: Generation = Field(default_factory=Generation)
    measure: Measure = Field(default_factory=Measure)
    networks: Networks = Field(default_factory=Networks)
    job: EvaluateJob = Field(default_factory=EvaluateJob)
    protocol: Protocol = Field(default_factory=Protocol)


GAIA2_PAPER = ("GAIA-2: A Controllable Multi-View Generative World Model for Autonomous Driving (Russell et al. "
               "2025, arXiv:2503.20523), Sec. 6.2 and Fig. 13")


def tiny() -> EvaluateConfig:
    """CPU, one actor each, few sampler steps; small resolutions for the tiny random feature networks."""
    return EvaluateConfig(preset="tiny", networks=Networks(resolutions={"fdd": [56, 112], "fvd": [64, 64]}),
                          job=EvaluateJob(sampler_steps=10),
                          protocol=Protocol(name="gaia2-tiny", summary="a pipeline check: tiny random feature "
                                                                       "networks at small sizes; the figures "
                                                                       "compare with nothing published"))


def paper() -> EvaluateConfig:
    """The paper's protocol: n = 1024 from scratch, 50 sampler steps, the networks' own resolutions, GPUs."""
    return EvaluateConfig(preset="paper", generation=Generation(precision="bf16", batch_size=2, concurrency=8,
                                                                num_gpus=1, num_cpus=4),
                          measure=Measure(frames_per_video=8, concurrency=4, num_gpus=1, num_cpus=4, batch_size=32),
                          job=EvaluateJob(samples=1024, world_model="models:/gaia2-world-model-paper@candidate",
                                          tokenizer="models:/gaia2-tokenizer-paper@candidate"),
                          protocol=Protocol(name="gaia2-paper", samples=1024, citations=[GAIA2_PAPER],
                                            summary="GAIA-2's own: the first 1,024 validation windows from "
                                                    "scratch, 50 sampler steps, 8 frames per camera (FDD, FID) "
                                                    "and one 16-frame clip per camera (FVD, FVMD), each network "
                                                    "at its own resolution"))


NUSCENES_CITATIONS = [
    "MagicDrive: Street View Generation with Diverse 3D Geometry Control (Gao et al., ICLR 2024, "
    "arXiv:2310.02601): 224 x 400; FID over every val keyframe x 6 cameras (cure-lab/MagicDrive "
    "tools/fid_score.py); video FVD on the whole val set, one sample each (cure-lab/MagicDrive issue #89)",
    "W-CODA 2024 Track 2 evaluation (pixeli99/W-CODA2024-Track2 test_fvd.py, get_fvd_features_nusc.py): 150 val "
    "scenes x 6 views, one 16-frame clip each, 12 Hz (nuscenes_interp_12Hz), frames at 224 x 400; StyleGAN-V's "
    "I3D, shorter side to 224 and a centre crop",
    "MagicDrive-V2 (Gao et al., arXiv:2411.13807) evaluates FVD with the W-CODA code (flymin/MagicDrive-V2 "
    "issue #61)",
    "OpenDWM (SenseTime-FVG/OpenDWM configs/ctsd/single_dataset/ctsd_35_tirda_bm_nusc_a.json, "
    "src/dwm/metrics/fvd.py, src/dwm/pipelines/ctsd.py): nuScenes val at 256 x 448, FVD over the first 16 frames "
    "of each view (TATS I3D i3d_pretrained_400.pt, bilinear 224 x 224, as here), FID over every generated frame "
    "of every view (torchmetrics)",
    "Alternatives: Panacea (arXiv:2311.16813) 256 x 512, 8 frames (wenyuqing/panacea configs/"
    "inference_nuscenes.yaml); DriveDreamer-2 (arXiv:2403.06845) 256 x 448, 8 frames at 4 Hz "
    "(f1yfisher/DriveDreamer2 configs/drivedreamer2_img_cond.py); Vista (arXiv:2405.17398) front camera "
    "576 x 1024, 5,369 clips of 25 frames at 10 Hz, FID over 5,369 x 24 frames (OpenDriveLab/Vista issues #9, "
    "#37); GEM (arXiv:2412.11198) Vista's clips (vita-epfl/GEM eval_utils.py)",
]


def nuscenes() -> EvaluateConfig:
    """The nuScenes validation protocol of the open multi-view driving world models, so that our FID and FVD
    compare with theirs (MagicDrive, MagicDrive-V2, OpenDWM and the papers that copy their tables).

    Data: nuScenes v1.0-trainval's 150 official validation scenes, i.e. shards built with ``split.kind:
    official`` from the ``nuscenes://`` source (``gaia2 shards build --source
    nuscenes:///data/nuscenes?version=v1.0-trainval --config <config with split.kind: official>``), at the
    cameras' own rate (12 Hz: ``protocol.frame_rate``, checked on every sample before generating), with windows
    of at least 16 frames. One sample per scene (``job.windows_per_clip`` 1: its first window; 150 samples),
    generated from scratch with 50 sampler steps, every camera of the rig (nuScenes: 6).

    Measured as those papers do: real and generated frames both at 224 x 400 (``measure.frame_sizes``: MagicDrive's
    resolution, and the W-CODA 2024 evaluation's), then
      FID  over every frame of every camera (``frames_per_video`` "all"; MagicDrive's FID takes every val
           keyframe of every camera, OpenDWM and Vista every generated frame), Inception at 299 x 299;
      FVD  over one 16-frame clip per camera per scene (150 x 6 = 900 clips: W-CODA 2024 Track 2 test_fvd.py,
           OpenDWM's ``sequence_count`` 16), I3D at 224 x 224.
    Also FDD (GAIA-2's own, on the same frames) and the validation loss, which no other paper reports.

    Where sources differ: FVD's I3D and its preprocessing here are cd-fvd's / TATS' (bilinear to 224 x 224), as
    OpenDWM's; W-CODA uses StyleGAN-V's TorchScript I3D with a centre crop, so its numbers and ours differ by the
    implementation. Other papers evaluate at their own generation resolution (Panacea 256 x 512, DriveDreamer-2
    and OpenDWM 256 x 448, Vista 576 x 1024 front camera) with 8 or 25-frame clips (``fvd_clip_frames``) and
    other clip counts (Vista: 5,369); their figures compare only roughly. Sources: ``NUSCENES_CITATIONS``."""
    return EvaluateConfig(preset="nuscenes", generation=Generation(precision="bf16", batch_size=2, concurrency=8,
                                                                   num_gpus=1, num_cpus=4),
                          measure=Measure(frames_per_video="all", clips_per_video=1, fvd_clip_frames=16,
                                          frame_sizes={"fid": [224, 400], "fvd": [224, 400]},
                                          concurrency=4, num_gpus=1, num_cpus=4, batch_size=32),
                          networks=Networks(resolutions={"fid": [299, 299], "fvd": [224, 224]}),
                          job=EvaluateJob(split="val", windows_per_clip=1, mode="scratch", sampler_steps=50,
                                          metrics="fid,fvd,fdd,loss"),
                          protocol=Protocol(name="nuscenes-val-multiview", frame_rate=12.0, samples=150,
                                            citations=list(NUSCENES_CITATIONS),
                                            summary="nuScenes val, one window per scene (150), 12 Hz, every "
                                                    "camera: FID over every frame and FVD over one 16-frame "
                                                    "clip per camera, frames at 224 x 400"))


PRESETS = {"tiny": tiny, "paper": paper, "nuscenes": nuscenes}
# The settings a protocol is defined by: one changed from the preset's is a deviation in the report.
PROTOCOL_FIELDS = ("job.split", "job.samples", "job.windows_per_clip", "job.mode", "job.sampler_steps",
                   "measure.frames_per_video", "measure.clips_per_video", "measure.fvd_clip_frames",
                   "measure.frame_sizes", "networks.resolutions", "protocol.name", "protocol.frame_rate",
                   "protocol.samples")
# Report names of the metrics, and which way is better.
LOWER_IS_BETTER = {"fdd", "fid", "fvd", "fvmd", "val_loss"}
HIGHER_IS_BETTER = {"agent_iou", "action_speed_spearman", "action_curvature_sign_agreement"}


def wanted(cfg: EvaluateConfig) -> list[str]:
    return cfg.job.metrics.split(",")


def load_config(preset: str | None = None, path: str | None = None, overrides: dict | None = None) -> EvaluateConfig:
    cfg = build_config(EvaluateConfig, PRESETS, preset=preset, overrides=overrides, path=path)
    job = cfg.job
    if bool(job.world_model) == bool(job.checkpoints):
        raise ConfigError("job.world_model / job.checkpoints: give exactly one (--world-model URI, or --checkpoints "
                          "RUN_DIR for every checkpoint of a training run)")
    for field in ("tokenizer", "shards", "latents"):
        if not getattr(job, field):
            raise ConfigError(f"job.{field}: required (pass --{field})")
    for field in ("shards", "latents"):
        problem = unreadable(getattr(job, field))
        if problem:
            raise ConfigError(f"job.{field}: {problem}")
    if job.cache and storage.is_uri(job.cache):
        raise ConfigError(f"job.cache: {storage.redact(job.cache)!r} is a URI; the measurement cache is a local "
                          f"directory (--shards, --latents and --out may be URIs)")
    missing = [(m, NETWORK_OF[m]) for m in wanted(cfg) if m in NETWORK_OF and not getattr(cfg.networks,
                                                                                           NETWORK_OF[m])]
    if missing:
        raise ConfigError("; ".join(f"networks.{f}: {m} needs {NETWORK_NOUN[f]} (--{f if f == 'segmenter' else m + '-net'}"
                                    f" PATH; nothing is downloaded)" for m, f in missing)
                          + f" — or leave {', '.join(m for m, _ in missing)} out of --metrics")
    for m in wanted(cfg):
        path = getattr(cfg.networks, NETWORK_OF[m]) if m in NETWORK_OF else None
        if path and not os.path.exists(path):
            raise ConfigError(f"networks.{NETWORK_OF[m]}: {path!r} does not exist (expected {NETWORK_NOUN[NETWORK_OF[m]]})")
    if (job.promote is None) != (job.by is None):
        raise ConfigError("job.promote / job.by: give both (--promote ALIAS --by METRIC) or neither")
    if job.by is not None:
        names = metric_names(wanted(cfg))
        if job.by not in names:
            raise ConfigError(f"job.by: {job.by!r} is not one of the metrics this evaluation computes ({', '.join(names)})")
    if job.promote and job.checkpoints:
        raise ConfigError("job.promote: promotes one evaluated registered version; not with --checkpoints")
    if job.promote and not job.world_model.startswith("models:/"):
        raise ConfigError(f"job.promote: {job.world_model!r} is not a registered model (models:/NAME@ALIAS or "
                          f"models:/NAME/VERSION); only registered versions carry aliases")
    if cfg.generation.device == "cuda" and cfg.generation.num_gpus == 0:
        raise ConfigError("generation.num_gpus: 0 with device cuda; give each generator actor a GPU")
    return cfg


def metric_names(metrics: Sequence[str]) -> list[str]:
    """The report's metric names for the measurements asked for."""
    names = []
    for m in metrics:
        names += {"iou": ["agent_iou"], "action": ["action_speed_spearman", "action_curvature_sign_agreement"],
                  "loss": ["val_loss"]}.get(m, [m])
    return names


# ------------------------------------------------------------------------------------------------ the job
def run(cfg: EvaluateConfig) -> dict:
    """Generate, measure, compute, track, maybe promote; returns the report (also ``<out>/evaluation.json``)."""
    from jobs.evaluate_run import Evaluation

    return Evaluation(cfg).run()


def protocol_digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _setting(cfg: EvaluateConfig, path: str):
    value = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def protocol_record(cfg: EvaluateConfig, digest: str, samples: int, cameras: Sequence[str] = ()) -> dict:
    """The ``protocol`` of the report and the MLflow run: which protocol the figures follow (name, summary,
    sources), its settings as run, per distance the frames, clip length and sizes it saw, and ``deviations``:
    every protocol-defining setting changed from the preset's and a sample count other than the protocol's.
    Figures compare with the cited ones only where ``conforms`` is true. ``digest``: the identity of the whole
    evaluation (data, keys, sampler, networks; what promotion compares)."""
    from gaia2.evaluation.features import STANDARD_RESOLUTIONS

    p, m, job = cfg.protocol, cfg.measure, cfg.job
    preset = PRESETS[cfg.preset]()
    deviations = [f"{path}: {_setting(cfg, path)!r} (the protocol's {_setting(preset, path)!r})"
                  for path in PROTOCOL_FIELDS if _setting(cfg, path) != _setting(preset, path)]
    if p.samples is not None and samples != p.samples:
        deviations.append(f"samples: {samples} evaluated (the protocol's {p.samples})")
    metrics = {}
    for metric in wanted(cfg):
        if metric not in ("fdd", "fid", "fvd", "fvmd"):
            continue
        entry: dict = {"frame_size": m.frame_sizes.get(metric)}
        if metric in ("fdd", "fid", "fvd"):
            entry["network_resolution"] = list(cfg.networks.resolutions.get(metric, STANDARD_RESOLUTIONS[metric]))
        if metric in ("fdd", "fid"):
            entry["frames_per_camera"] = m.frames_per_video
        else:
            entry.update(clip_frames=m.fvd_clip_frames if metric == "fvd" else 16, clips_per_camera=m.clips_per_video)
        metrics[metric] = entry
    return {"name": p.name, "preset": cfg.preset, "summary": p.summary, "digest": digest,
            "conforms": not deviations, "deviations": deviations, "split": job.split, "mode": job.mode,
            "sampler_steps": job.sampler_steps, "samples": samples, "windows_per_clip": job.windows_per_clip,
            "frame_rate": p.frame_rate, "cameras": list(cameras), "metrics": metrics, "citations": list(p.citations)}


def summary(report: dict) -> str:
    """The figures per model, the promotion, where everything is; last, one JSON line: the (last) evaluated
    model's metrics by name, with ``by_step`` when several checkpoints were evaluated."""
    lines = []
    for cand in report["candidates"]:
        head = f"{cand['tag']}" + (f" (step {cand['step']})" if cand.get("step") is not None else "")
        role = " [the version @" + str(report.get("promotion", {}).get("alias")) + " held]" \
            if cand["role"] == "holder" else ""
        lines.append(f"{head}: {cand['world_model']}{role}")
        for name, m in cand["metrics"].items():
            interval = (f" [{m['low']:.4g}, {m['high']:.4g}]" if m.get("low") is not None else " [no interval]")
            lines.append(f"  {name:<34} {m['value']:.4g}{interval}  n={m.get('n', m.get('n_fake'))}")
    if report["failures"]:
        lines.append(f"failures: {len(report['failures'])} (first: {report['failures'][0]['model']} "
                     f"{report['failures'][0]['key']} at {report['failures'][0]['stage']}: "
                     f"{report['failures'][0]['detail'][:300]}); all in evaluation.json")
    if report.get("promotion"):
        lines.append(f"promotion: {report['promotion']['decision']}")
    lines.append(f"report: {report['out']}/{REPORT_FILE}; mlflow run {report['run_id']} in experiment "
                 f"'{EXPERIMENT}' at {report['tracking_uri']}")
    evaluated = [c for c in report["candidates"] if c["role"] == "evaluated"]
    final = dict(evaluated[-1]["metrics"])
    final["samples"] = report["counts"]["samples"]
    if len(evaluated) > 1:
        final["by_step"] = [{"tag": c["tag"], "step": c.get("step"),
                             **{k: v["value"] for k, v in c["metrics"].items()}} for c in evaluated]
    if report.get("promotion"):
        final["promotion"] = report["promotion"]
    final["run_id"] = report["run_id"]
    lines.append(json.dumps(_no_nan(final), sort_keys=True))
    return "\n".join(lines)


def _no_nan(value):
    """NaN (a metric that could not be computed) as JSON null: the last line is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _work(cfg: EvaluateConfig) -> str:
    return summary(run(cfg))


COMMAND = Command(
    prog="python -m jobs.evaluate", description=__doc__.splitlines()[0],
    aliases=(Alias("--world-model", "job.world_model", "world model export directory or MLflow model URI",
                   metavar="URI"),
             Alias("--checkpoints", "job.checkpoints", "every checkpoint of a training run (its folder) instead",
                   metavar="RUN_DIR"),
             Alias("--tokenizer", "job.tokenizer", "tokenizer export directory or MLflow model URI", metavar="URI"),
             Alias("--shards", "job.shards", "pixel shards: the real videos", metavar="SHARDS"),
             Alias("--latents", "job.latents", "latent shards: each sample's conditioning", metavar="LATENTS"),
             Alias("--split", "job.split", "the split evaluated (val)"),
             Alias("--samples", "job.samples", "the first N samples of the split", int),
             Alias("--mode", "job.mode", "scratch, rollout or edit"),
             Alias("--steps", "job.sampler_steps", "sampler steps", int),
             Alias("--context-steps", "job.context_steps", "with --mode rollout: context latents", int),
             Alias("--tau-start", "job.tau_start", "with --mode edit: the noising flow time", float),
             Alias("--metrics", "job.metrics", "comma list of fdd,fid,fvd,fvmd,iou,action,loss"),
             Alias("--fdd-net", "networks.fdd", "DINOv2 ViT-L/14 directory", metavar="DIR"),
             Alias("--fid-net", "networks.fid", "InceptionV3 weights file", metavar="FILE"),
             Alias("--fvd-net", "networks.fvd", "I3D weights file", metavar="FILE"),
             Alias("--segmenter", "networks.segmenter", "segmentation model or gaia2 3D detector directory",
                   metavar="DIR"),
             Alias("--tracker", "networks.tracker", "FVMD tracker: lucas-kanade or a TorchScript file"),
             Alias("--promote", "job.promote", "alias to move if the model beats its holder", metavar="ALIAS"),
             Alias("--by", "job.by", "with --promote: the deciding metric", metavar="METRIC"),
             Alias("--name", "job.name", "the evaluation's name"),
             Alias("--out", "job.out", "output directory"),
             Alias("--cache", "job.cache", "real-video measurement cache directory"),
             Alias("--workdir", "job.workdir", "local MLflow database and artifacts"),
             Alias("--device", "generation.device", "generation: cpu, cuda or auto"),
             Alias("--num-gpus", "measure.num_gpus", "GPUs per measuring actor", float),
             Alias("--concurrency", "measure.concurrency", "measuring actors", int)),
    presets=tuple(PRESETS), build=load_config, work=_work,
    input_errors=(EvaluationError, GenerateInputError, ModelInputError, SpecError, LatentStatsError,
                  FileNotFoundError))


def main(argv: Sequence[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

