"""Configuration of the shard build: presets ``tiny`` (CPU, tests, quickstart) and ``paper``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gaia2.config.base import StrictModel, build_config
from gaia2.schema.metadata import VOCABULARY


class WindowConfig(StrictModel):
    frames: int = Field(48, gt=0, description="frames per window: 48 for the world model, 24 for the tokenizer")
    hop: int = Field(12, gt=0, description="frames between the starts of consecutive candidate windows")
    grid_hz: float | None = Field(None, gt=0, description="frame grid rate; null = the clip's native rate")


class ImageConfig(StrictModel):
    height: int = Field(64, gt=0)
    width: int = Field(128, gt=0)

    @field_validator("height", "width")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (yuv420p video)")
        return v


class CodecConfig(StrictModel):
    codec: str = "libx264"
    crf: int = Field(23, ge=0, le=51)
    preset: str = "veryfast"
    gop: int = Field(12, gt=0, description="keyframe interval in frames")
    # Encoder threads are pinned so the same inputs give the same bytes on any machine;
    # parallelism comes from Ray, one window per task.
    threads: int = Field(1, ge=1)


class BoundsConfig(StrictModel):
    """Plausible ranges of a clip record, checked at ingest before any value sizes an array or a loop.

    A value outside is rejected (``out_of_bounds``) with a detail naming the field and the bound (e.g.
    ``ingest.bounds.max_frame_rate``): a frame rate of 1e7 on a 2 s clip is a lie, not a 20-million-step grid.
    """
    min_frame_rate: float = Field(1.0, gt=0, description="Hz, per camera")
    max_frame_rate: float = Field(120.0, gt=0, description="Hz, per camera")
    min_width: int = Field(16, ge=1, description="pixels, declared per camera")
    max_width: int = Field(8192, ge=1)
    min_height: int = Field(16, ge=1)
    max_height: int = Field(8192, ge=1)
    max_duration_s: float = Field(3600.0, gt=0, description="span of any timestamp series of a clip")
    max_abs_time_s: float = Field(1e10, gt=0, description="|start_time_s| and |timestamps| on the drive clock "
                                                          "(1e10 s is past the year 2286 in Unix time)")
    max_frames_per_camera: int = Field(200_000, ge=1, description="timestamps per camera")
    max_cameras: int = Field(16, ge=1)
    max_series_length: int = Field(1_000_000, ge=1, description="samples of ego, GPS and box timestamps")
    max_boxes: int = Field(2_000_000, ge=0, description="ground-truth boxes per clip")
    max_id_length: int = Field(128, ge=1, description="characters of clip_id, drive_id, rig_id and camera names")
    max_metadata_length: int = Field(64, ge=1, description="characters of a metadata value")
    max_record_mb: float = Field(256.0, gt=0, description="size of one clip record (clip.json or manifest row)")
    max_speed_mps: float = Field(100.0, gt=0, description="|ego.speed|, m/s")
    max_abs_curvature: float = Field(1.0, gt=0, description="|ego.curvature|, 1/m (1 = a 1 m turning radius)")
    max_camera_offset_m: float = Field(50.0, gt=0, description="camera's distance from the ego origin (extrinsics)")
    max_box_size_m: float = Field(100.0, gt=0, description="largest side of a ground-truth box")
    max_box_distance_m: float = Field(2000.0, gt=0, description="a ground-truth box centre's distance from the ego")

    @model_validator(mode="after")
    def _ordered(self) -> "BoundsConfig":
        for lo, hi in (("min_frame_rate", "max_frame_rate"), ("min_width", "max_width"),
                       ("min_height", "max_height")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"ingest.bounds.{lo} ({getattr(self, lo)}) > ingest.bounds.{hi} ({getattr(self, hi)})")
        return self


class ToleranceConfig(StrictModel):
    """How far a clip's declared values may disagree with its timestamps and its video files (checked at ingest)."""
    frame_rate: float = Field(0.02, ge=0, description="relative: |declared frame_rate / (1 / median timestamp "
                                                      "spacing) - 1|; beyond it, frame_rate_mismatch")
    container_frame_rate: float | None = Field(
        0.02, ge=0, description="relative: declared frame_rate vs the video container's average rate; null skips "
                                "the comparison (variable-rate streams whose average means little)")
    resolution_px: int = Field(0, ge=0, description="declared width/height vs the decoded frame, in pixels; "
                                                    "beyond it, resolution_mismatch")
    extra_frames: int = Field(0, ge=0, description="frames the video may have past its declared timestamps (never "
                                                   "used); fewer frames than timestamps is always a mismatch")


class IngestConfig(StrictModel):
    min_cameras: int = Field(5, ge=1, description="clips with fewer cameras are rejected (missing_camera)")
    decode_check: Literal["container", "last_frame", "all_frames"] = Field(
        "container", description="how far ingest decodes each video: container = open it, check its box "
                                 "structure, frame count, rate and the first frame's size (catches empty, "
                                 "unreadable, truncated, short and mis-sized files); last_frame/all_frames also "
                                 "decode later frames (corrupt streams). An image-sequence camera: container = "
                                 "every image there and not empty, the first decoded and its size checked; "
                                 "last_frame/all_frames decode the last / every image too")
    batch_size: int = Field(32, ge=1, description="clips per ingest task (at most: the last tasks get fewer)")
    allow_absolute_videos: bool = Field(
        False, description="accept absolute paths and URIs as camera videos and images; otherwise each must be "
                           "a path inside its clip's directory (the manifest's for a Parquet source, the dataset "
                           "root for nuScenes), and one that is absolute or climbs out with '..' is rejected "
                           "(video_path_outside_source)")
    extra_keys: Literal["reject", "ignore"] = Field(
        "reject", description="unknown keys in a clip record (a typo such as 'boxs' would silently drop data): "
                              "reject the clip (invalid_record, naming them) or ignore them; null-valued keys "
                              "count as absent")
    bounds: BoundsConfig = BoundsConfig()
    tolerance: ToleranceConfig = ToleranceConfig()


class DetectionConfig(StrictModel):
    kind: Literal["ground_truth", "network"] = "ground_truth"
    checkpoint: str | None = Field(None, description="directory of a MonoDetector3D checkpoint (kind=network)")
    max_agents: int = Field(32, gt=0, description="A: agent slots per frame and camera (boxes.npy's third axis)")
    score_threshold: float = Field(0.3, ge=0, le=1)
    batch_size: int = Field(4, ge=1, description="windows per detector call")
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(0.25, gt=0)
    concurrency: int = Field(1, ge=1, description="detector actors")

    @model_validator(mode="after")
    def _checkpoint(self) -> "DetectionConfig":
        if self.kind == "network" and not self.checkpoint:
            raise ValueError("detection.checkpoint: required when detection.kind is 'network'")
        return self


class EmbeddingConfig(StrictModel):
    clip_path: str | None = Field(None, description="directory of a transformers CLIP vision model")
    batch_size: int = Field(8, ge=1, description="windows per embedding call")
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(0.25, gt=0, description="per CLIP actor (placement actor)")
    concurrency: int = Field(1, ge=1, description="CLIP actors (placement actor)")
    placement: Literal["auto", "task", "actor"] = Field(
        "auto", description="where CLIP runs: 'task', in the task that encodes the window (the model loaded "
                            "once per worker process; no copy of the frames to an actor: faster on CPUs); "
                            "'actor', in an actor pool of `concurrency` (GPUs, or a model too large to load in "
                            "every worker); 'auto', actor when num_gpus > 0, else task")

    @model_validator(mode="after")
    def _placement(self) -> "EmbeddingConfig":
        if self.placement == "task" and self.num_gpus > 0:
            raise ValueError("embedding.placement: 'task' runs CLIP on the window task's CPUs; with "
                             "embedding.num_gpus > 0 use 'actor' (or 'auto')")
        return self

    def in_task(self) -> bool:
        """Whether CLIP runs inside the window task (``placement``, ``auto`` resolved)."""
        return self.placement == "task" or (self.placement == "auto" and self.num_gpus == 0)


class BalanceConfig(StrictModel):
    keys: list[str] = Field(default_factory=lambda: ["country", "weather", "time_of_day"])
    temperature: float = Field(2.0, ge=1.0, description="1 keeps the natural distribution; larger is flatter")
    repeat_cap: float = Field(4.0, ge=1.0, description="largest weight a rare-cell window may get")
    min_stride_s: float = Field(1.0, ge=0, description="minimum time between selected windows of one drive")
    splits: list[Literal["train", "val"]] = Field(default_factory=lambda: ["train"])

    @field_validator("keys")
    @classmethod
    def _known(cls, keys: list[str]) -> list[str]:
        unknown = [k for k in keys if k not in VOCABULARY]
        if unknown or not keys:
            raise ValueError(f"unknown metadata key(s) {unknown}; choose from {list(VOCABULARY)}")
        return keys


class SplitConfig(StrictModel):
    """Which windows are validation: those whose GPS track touches a geofence (the paper's way, default), or
    those of the clips a dataset's official list names (``kind: official``, e.g. nuScenes' val scenes, so
    that validation figures are the ones every paper reports on)."""
    kind: Literal["geofence", "official"] = "geofence"
    geofences: str | None = Field(None, description="kind geofence: GeoJSON of validation geofences; null = the "
                                                    "packaged default")
    lists: str | None = Field(None, description="kind official: a packaged list (nuscenes-v1.0-trainval, "
                                                "nuscenes-v1.0-mini) or a JSON file {\"train\": [clip ids], "
                                                "\"val\": [clip ids]}; null = the nuscenes:// source's own "
                                                "version. A clip in neither list is not selected "
                                                "(not_selected_split)")

    @model_validator(mode="after")
    def _lists(self) -> "SplitConfig":
        if self.kind == "geofence" and self.lists is not None:
            raise ValueError("split.lists: only with split.kind official")
        return self


class ShardWriterConfig(StrictModel):
    target_mb: float = Field(16.0, gt=0, description="approximate shard size")
    bits_per_pixel: float = Field(0.08, gt=0, description="expected video bits per pixel, to size shards")


class ResourcesConfig(StrictModel):
    """Logical CPUs per task of the stages that run as Ray tasks.

    ``window``: the decode -> detect (ground truth) -> encode-videos task, the heavy one (with CLIP on the CPU,
    ``embedding.placement``, it also embeds, packs and stages). ``pack``: packing and staging after a CLIP
    actor pool, light; ``assemble``: concatenating each shard's staged samples. A window task takes a whole CPU
    (measured on 2 cores with CLIP in the task: two at once, 61.7 ms per window, beat four, 67.4 ms).

    Ingest and assembly take a whole one too, so that no stage runs more tasks at once than the window stage:
    each task at once is a worker process, and a window task that lands on a process that has not run one
    yet loads CLIP there first (3.9 s of a core, torch and transformers imported), in whichever build that
    happens.
    """
    ingest_cpus: float = Field(1.0, gt=0)
    window_cpus: float = Field(1.0, gt=0)
    window_batch_size: int = Field(8, ge=1, description="windows per decode/encode task")
    pack_cpus: float = Field(0.25, gt=0, description="per packing task after a CLIP actor pool")
    assemble_cpus: float = Field(1.0, gt=0, description=(
        "per shard-assembly task. At least the window tasks' share on a small machine: more assembly tasks "
        "at once than there are idle window workers makes Ray start new worker processes for a second's "
        "work (~2.5 s of CPU each to start)"))
    reserve_per_operator: bool = Field(
        False, description="Ray Data's per-operator resource reservation; off on small machines, where it "
                           "starves the heavy window stage")


class RetryConfig(StrictModel):
    """Transient failures (I/O errors, a lost worker, out of memory) are retried; permanent ones (a broken record
    or file: ``ClipError``) reject the window at once."""
    attempts: int = Field(3, ge=1, description="tries of a window's decode, detection, encoding and embedding "
                                               "before a transient error rejects it")
    backoff_s: float = Field(0.5, ge=0, description="wait before the second try; doubled before each later one")


class GateConfig(StrictModel):
    """When a build that ran to the end still fails (non-zero exit; everything written is kept)."""
    max_reject_fraction: float = Field(
        1.0, ge=0, le=1, description="fail when the rejected share of clips (at ingest) or of selected windows "
                                     "(in the window stages) is larger; 1 never fails on rejects")
    min_samples: int = Field(1, ge=0, description="fail when fewer samples than this are written")


class LockConfig(StrictModel):
    """One writer per output: a lock file (object) with its owner and a heartbeat."""
    heartbeat_s: float = Field(10.0, gt=0, description="how often the holder refreshes the lock")
    stale_s: float = Field(120.0, gt=0, description="a lock not refreshed for this long is reclaimed")


class ShardBuildConfig(StrictModel):
    preset: str = "tiny"
    seed: int = 0
    window: WindowConfig = WindowConfig()
    image: ImageConfig = ImageConfig()
    codec: CodecConfig = CodecConfig()
    ingest: IngestConfig = IngestConfig()
    detection: DetectionConfig = DetectionConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    balance: BalanceConfig = BalanceConfig()
    split: SplitConfig = SplitConfig()
    shards: ShardWriterConfig = ShardWriterConfig()
    resources: ResourcesConfig = ResourcesConfig()
    retry: RetryConfig = RetryConfig()
    gate: GateConfig = GateConfig()
    lock: LockConfig = LockConfig()


def tiny() -> ShardBuildConfig:
    return ShardBuildConfig()


def paper() -> ShardBuildConfig:
    return ShardBuildConfig(
        preset="paper",
        image=ImageConfig(height=448, width=960),
        codec=CodecConfig(crf=18, preset="medium", gop=24),
        detection=DetectionConfig(kind="network", checkpoint="/models/mono3d", max_agents=64, batch_size=8,
                                  num_gpus=1, num_cpus=4, concurrency=8),
        embedding=EmbeddingConfig(clip_path="/models/clip-vit-large-patch14", batch_size=16, num_gpus=0.5,
                                  num_cpus=2, concurrency=8),
        balance=BalanceConfig(keys=["country", "weather", "time_of_day", "intersection_type"]),
        shards=ShardWriterConfig(target_mb=1024),
        resources=ResourcesConfig(ingest_cpus=1, window_cpus=4, window_batch_size=1, pack_cpus=1, assemble_cpus=1,
                                  reserve_per_operator=True),
    )


PRESETS = {"tiny": tiny, "paper": paper}


def load_shard_config(preset: str | None = None, path: str | None = None,
                      overrides: dict | None = None) -> ShardBuildConfig:
    return build_config(ShardBuildConfig, PRESETS, preset=preset, overrides=overrides, path=path)
