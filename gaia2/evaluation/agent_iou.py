"""Agent adherence (paper §6.2, "Dynamic Agent Conditioning"): class IoU between the projected conditioning boxes
and what a segmenter (or a 3D detector) finds in the generated frames.

    cond = conditioning_masks(boxes, valid, H, W)              # (N, T, B, 13) agent features -> (N, T, H, W) map
    found = load_segmenter(path).segment(frames, cameras)      # (N, T, H, W, 3) uint8 -> (N, T, H, W) map
    inter, union = iou_counts(cond, found)                     # (classes,) pixel counts, one row per sample
    result = agent_iou(np.stack(inters), np.stack(unions))     # class IoU with a bootstrap interval

A category map holds ids of ``AGENT_CATEGORIES`` per pixel, 0 = no agent (background). The class IoU is the mean,
over the agent categories that occur (in the conditioning or in what was found) anywhere in the evaluated set, of
sum(intersection) / sum(union) over all samples' pixels: pooled counts, as semantic-segmentation benchmarks compute
it, so that a sample with a small agent weighs by its pixels, not as much as a sample with a large one.

The segmenter is the paper's kind (OneFormer; any semantic or universal segmentation model that transformers loads,
e.g. SegFormer on Cityscapes) with its label names mapped onto our categories by ``LABEL_CATEGORIES``, or any
``Detector3D`` whose boxes are projected and rasterised exactly as the conditioning is (``DetectorSegmenter``).
The box outline is what the conditioning paints; a segmenter's mask follows the agent's silhouette, so a perfect
generation scores below 1 with a segmenter (the paper's figures share that ceiling) and at 1 with a detector.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from gaia2.camera.model import CameraModel
from gaia2.detection.base import Detector3D
from gaia2.detection.features import NEAR, agent_features
from gaia2.schema.metadata import AGENT_CATEGORIES
from gaia2.schema.sample import AGENT_FEATURES

X1, Y1, X2, Y2, DEPTH, CATEGORY = 0, 1, 2, 3, 6, 12   # indices into the 13 agent features

# Label names of segmentation datasets -> our agent categories (Cityscapes, ADE20K, COCO(-panoptic), Mapillary
# Vistas, and OneFormer/Mask2Former checkpoints trained on them). A model's label is lower-cased, its hierarchy
# prefix dropped ("human--rider--bicyclist" -> "bicyclist"), "-" / "_" read as spaces, and ADE20K's synonym lists
# ("car;auto;automobile;machine;motorcar") matched on any synonym. Labels that map to nothing are background.
LABEL_CATEGORIES: Mapping[str, str] = {
    "car": "car", "cars": "car", "auto": "car", "automobile": "car", "motorcar": "car", "taxi": "car",
    "van": "van", "minivan": "van", "truck": "van", "trucks": "van", "motortruck": "van", "lorry": "van",
    "pickup truck": "van",
    "bus": "bus", "autobus": "bus", "motorbus": "bus", "omnibus": "bus", "minibus": "bus", "coach": "bus",
    "bicycle": "cyclist", "bike": "cyclist", "motorcycle": "cyclist", "motorbike": "cyclist", "minibike": "cyclist",
    "rider": "cyclist", "bicyclist": "cyclist", "motorcyclist": "cyclist", "cyclist": "cyclist",
    "other rider": "cyclist",
    "person": "pedestrian", "pedestrian": "pedestrian", "people": "pedestrian", "individual": "pedestrian",
}

_EXPECTED = ("a transformers segmentation checkpoint (save_pretrained: config.json with a model_type, weights, "
             "preprocessor_config.json or processor_config.json) or the reference 3D detector (MonoDetector3D.save_pretrained: config.json "
             "+ model.safetensors)")


# ----------------------------------------------------------------------------------------- maps and counts
def conditioning_masks(boxes: np.ndarray, valid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Agent features (..., B, 13) (x1, y1, x2, y2 normalised; camera-frame depth at 6; category id at 12) and
    valid (..., B) bool -> (..., height, width) uint8 category map, 0 = no agent.

    Pixel (i, j) is inside a box when its centre ((j + 0.5) / width, (i + 0.5) / height) lies in [x1, x2) x [y1, y2);
    where boxes overlap the nearer one (smaller depth) wins: boxes are painted far to near.
    """
    boxes, valid = np.asarray(boxes, np.float64), np.asarray(valid, bool)
    if boxes.ndim < 2 or boxes.shape[-1] != AGENT_FEATURES or valid.shape != boxes.shape[:-1]:
        raise ValueError(f"conditioning_masks: expected boxes (..., B, {AGENT_FEATURES}) and valid (..., B), got "
                         f"{boxes.shape} and {valid.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"conditioning_masks: height and width must be >= 1, got {height} x {width}")
    lead = boxes.shape[:-2]
    flat, ok = boxes.reshape(-1, *boxes.shape[-2:]), valid.reshape(-1, valid.shape[-1])   # (M, B, 13), (M, B)
    cat = np.rint(flat[..., CATEGORY])
    ok = ok & (cat >= 1) & (cat < len(AGENT_CATEGORIES))   # padding (id 0) and out-of-range ids paint nothing
    # First pixel whose centre is >= the edge: [x1, x2) covers columns j0 <= j < j1.
    cols = np.searchsorted((np.arange(width) + 0.5) / width, flat[..., [X1, X2]], side="left")     # (M, B, 2)
    rows = np.searchsorted((np.arange(height) + 0.5) / height, flat[..., [Y1, Y2]], side="left")
    out = np.zeros((flat.shape[0], height, width), np.uint8)
    # Far to near (stable: equal depths keep slot order, the later slot on top).
    order = np.argsort(-flat[..., DEPTH], axis=1, kind="stable")
    for m, b in zip(*np.nonzero(np.take_along_axis(ok, order, axis=1))):
        k = order[m, b]
        out[m, rows[m, k, 0]:rows[m, k, 1], cols[m, k, 0]:cols[m, k, 1]] = cat[m, k]
    return out.reshape(*lead, height, width)


def iou_counts(conditioned: np.ndarray, found: np.ndarray,
               classes: int = len(AGENT_CATEGORIES)) -> tuple[np.ndarray, np.ndarray]:
    """Two (..., H, W) category maps -> (intersection (classes,), union (classes,)) int64 pixel counts per
    category; index 0 (background) is counted too and ignored by ``agent_iou``."""
    a, b = np.asarray(conditioned), np.asarray(found)
    if a.shape != b.shape:
        raise ValueError(f"iou_counts: maps differ in shape: conditioned {a.shape}, found {b.shape}")
    a, b = a.astype(np.int64).ravel(), b.astype(np.int64).ravel()
    for name, x in (("conditioned", a), ("found", b)):
        if x.size and (x.min() < 0 or x.max() >= classes):
            raise ValueError(f"iou_counts: {name} holds ids outside 0..{classes - 1}: {sorted(set(x.tolist()))[:8]}")
    inter = np.bincount(a[a == b], minlength=classes)
    union = np.bincount(a, minlength=classes) + np.bincount(b, minlength=classes) - inter
    return inter, union


def sample_iou_counts(boxes: np.ndarray, valid: np.ndarray, found: np.ndarray,
                      classes: int = len(AGENT_CATEGORIES)) -> tuple[np.ndarray, np.ndarray]:
    """One sample: its conditioning in the shards' layout, boxes (T, N_all, B, 13) and valid (T, N_all, B), against
    the found map (N, T, H, W) of its N <= N_all generated cameras (the first N of the rig, as the world model takes
    them) -> (intersection, union) (classes,)."""
    boxes, valid, found = np.asarray(boxes), np.asarray(valid), np.asarray(found)
    if found.ndim != 4 or boxes.ndim != 4 or boxes.shape[0] != found.shape[1] or boxes.shape[1] < found.shape[0]:
        raise ValueError(f"sample_iou_counts: boxes (T, N_all, B, 13) {boxes.shape} do not cover found (N, T, H, W) "
                         f"{found.shape}")
    n, _, h, w = found.shape
    cond = conditioning_masks(boxes[:, :n].swapaxes(0, 1), valid[:, :n].swapaxes(0, 1), h, w)   # (N, T, H, W)
    return iou_counts(cond, found, classes)


# ----------------------------------------------------------------------------------------- the metric
@dataclass(frozen=True)
class AgentIoU:
    value: float                   # class IoU, NaN when no agent occurs anywhere
    low: float | None              # percentile bootstrap interval (None when not computed)
    high: float | None
    per_class: dict[str, float]    # category name -> IoU, for the categories that occur
    n_samples: int
    union_pixels: dict[str, int]   # category name -> pooled union (how much each class weighs in its own IoU)

    def to_json(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high,
                "interval": None if self.low is None else [self.low, self.high], "n": self.n_samples,
                "per_class": dict(self.per_class), "union_pixels": dict(self.union_pixels)}


def _class_iou(inter: np.ndarray, union: np.ndarray) -> tuple[float, np.ndarray]:
    """Pooled (classes,) counts -> (mean IoU over the agent categories with union > 0 (NaN: none), per class)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    per[0] = np.nan   # background is not an agent
    return (float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")), per


def agent_iou(intersections: np.ndarray, unions: np.ndarray, bootstrap: int = 200, level: float = 0.95,
              seed: int = 0, min_bootstrap_count: int = 8) -> AgentIoU:
    """Per-sample counts (S, classes) from ``iou_counts`` -> class IoU (see the module docstring), with a
    percentile bootstrap interval at ``level`` over ``bootstrap`` resamples of the samples when
    S >= ``min_bootstrap_count`` (resamples without any agent are left out). No agent anywhere gives NaN and an
    empty ``per_class``, not an error."""
    inter, union = np.asarray(intersections, np.int64), np.asarray(unions, np.int64)
    if inter.ndim != 2 or inter.shape != union.shape or inter.shape[1] < 2:
        raise ValueError(f"agent_iou: expected intersections and unions of the same shape (S, classes >= 2), got "
                         f"{inter.shape} and {union.shape}")
    if np.any(inter < 0) or np.any(inter > union):
        raise ValueError("agent_iou: counts must satisfy 0 <= intersection <= union")
    names = [AGENT_CATEGORIES[k] if k < len(AGENT_CATEGORIES) else f"class_{k}" for k in range(inter.shape[1])]
    total_i, total_u = inter.sum(0), union.sum(0)
    value, per = _class_iou(total_i, total_u)
    per_class = {names[k]: float(per[k]) for k in range(1, len(per)) if np.isfinite(per[k])}
    pixels = {names[k]: int(total_u[k]) for k in range(1, len(per)) if total_u[k] > 0}
    low = high = None
    s = len(inter)
    if bootstrap > 0 and s >= min_bootstrap_count and np.isfinite(value):
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):
            pick = rng.integers(0, s, s)
            draws.append(_class_iou(inter[pick].sum(0), union[pick].sum(0))[0])
        draws = np.asarray(draws)
        draws = draws[np.isfinite(draws)]
        if draws.size:
            tail = (1.0 - level) / 2 * 100
            low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    return AgentIoU(value, low, high, per_class, s, pixels)


# ----------------------------------------------------------------------------------------- segmenters
class Segmenter(ABC):
    """Generated frames -> what agents they show, as a category map."""

    name: str

    @abstractmethod
    def segment(self, frames: np.ndarray, cameras: list[CameraModel] | None = None,
                timestamps: np.ndarray | None = None) -> np.ndarray:
        """frames (N_cams, T, H, W, 3) uint8 RGB; cameras: N_cams camera models at the frames' size (needed by
        detectors, ignored by image segmenters); timestamps (T,) s -> (N_cams, T, H, W) uint8 category map."""


def _check_frames(frames: np.ndarray) -> tuple[int, ...]:
    if not isinstance(frames, np.ndarray) or frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"segment: expected frames (N_cams, T, H, W, 3) uint8, got {desc}")
    return frames.shape[:4]


def label_category(label: str) -> int:
    """A segmentation model's label name -> our category id (0: not an agent); see ``LABEL_CATEGORIES``."""
    name = str(label).lower().rsplit("--", 1)[-1].replace("-", " ").replace("_", " ")
    for synonym in name.replace(",", ";").split(";"):
        category = LABEL_CATEGORIES.get(" ".join(synonym.split()))
        if category is not None:
            return AGENT_CATEGORIES.index(category)
    return 0


def label_table(id2label: Mapping[int, str], where: str = "model") -> np.ndarray:
    """A model's id2label -> lookup (num_labels,) uint8 of category ids. ValueError when no label maps to an agent
    category (a model that cannot see agents would score 0 for reasons that have nothing to do with generation)."""
    ids = {int(k): v for k, v in id2label.items()}
    table = np.zeros(max(ids) + 1 if ids else 0, np.uint8)
    for k, label in ids.items():
        table[k] = label_category(label)
    if not table.any():
        raise ValueError(f"{where}: none of its labels maps to an agent category {list(AGENT_CATEGORIES[1:])} "
                         f"(labels {list(ids.values())[:12]}...); see LABEL_CATEGORIES in gaia2/evaluation/agent_iou.py")
    return table


class TransformersSegmenter(Segmenter):
    """A semantic (SegFormer, UperNet, ...) or universal (OneFormer, Mask2Former) segmentation checkpoint from a
    local directory, through transformers with ``local_files_only=True``; preprocessing and semantic
    post-processing (upsampling to the frame size, argmax) are the checkpoint's own processor's. Labels are mapped
    onto our categories by ``label_table``."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16):
        import torch
        from transformers import (AutoImageProcessor, AutoModelForSemanticSegmentation,
                                  AutoModelForUniversalSegmentation, AutoProcessor)
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

        if batch_size < 1:
            raise ValueError(f"TransformersSegmenter: batch_size must be >= 1, got {batch_size}")
        model_type = _config(path).get("model_type")
        if not any(os.path.isfile(os.path.join(path, f)) for f in ("preprocessor_config.json", "processor_config.json")):
            raise FileNotFoundError(f"segmenter path {path!r} lacks preprocessor_config.json (or processor_config.json); "
                                    f"expected {_EXPECTED}")
        semantic = model_type in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
        auto = AutoModelForSemanticSegmentation if semantic else AutoModelForUniversalSegmentation
        try:
            model, info = auto.from_pretrained(path, local_files_only=True, output_loading_info=True)
        except (ValueError, OSError, RuntimeError) as err:
            raise ValueError(f"segmenter path {path!r}: model_type {model_type!r} does not load as a semantic or "
                             f"universal segmentation model: {err}") from err
        if info["missing_keys"]:
            raise ValueError(f"segmenter path {path!r}: checkpoint lacks weights {sorted(info['missing_keys'])[:8]}")
        self.table = label_table(model.config.id2label, f"segmenter {path!r}")
        # OneFormer conditions on a task prompt and needs its processor's tokenizer.
        self.task_prompt = model_type == "oneformer"
        processor_cls = AutoProcessor if self.task_prompt else AutoImageProcessor
        self.processor = processor_cls.from_pretrained(path, local_files_only=True)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.path = path
        self.name = f"transformers:{model_type}"

    def segment(self, frames: np.ndarray, cameras: list[CameraModel] | None = None,
                timestamps: np.ndarray | None = None) -> np.ndarray:
        import torch

        n, t, h, w = _check_frames(frames)
        images = frames.reshape(n * t, h, w, 3)                      # "n t h w c -> (n t) h w c"
        out = np.empty((n * t, h, w), np.uint8)
        for s in range(0, len(images), self.batch_size):
            chunk = list(images[s:s + self.batch_size])
            kwargs = {"task_inputs": ["semantic"] * len(chunk)} if self.task_prompt else {}
            inputs = self.processor(images=chunk, return_tensors="pt", **kwargs)
            inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            with torch.no_grad():
                outputs = self.model(**inputs)
                labels = self.processor.post_process_semantic_segmentation(outputs, target_sizes=[(h, w)] * len(chunk))
            labels = torch.stack(list(labels)).cpu().numpy()        # (b, H, W) model label ids; one host copy
            inside = (labels >= 0) & (labels < len(self.table))       # anything else (no object) is background
            out[s:s + len(chunk)] = np.where(inside, self.table[np.where(inside, labels, 0)], 0)
        return out.reshape(n, t, h, w)


class DetectorSegmenter(Segmenter):
    """Any ``Detector3D``: its ego-frame boxes per frame are turned into agent features for each camera exactly as the
    shards' conditioning is (``gaia2.detection.features.agent_features``: the 8 corners clipped at the near plane,
    projected, their enclosing rectangle clipped to the image; boxes whose centre is behind the camera dropped) and
    rasterised by ``conditioning_masks`` (nearest wins). Boxes drawn where they are conditioned score IoU 1."""

    def __init__(self, detector: Detector3D, near: float = NEAR, name: str | None = None):
        if detector.requires_clip:
            raise ValueError(f"DetectorSegmenter: {type(detector).__name__} needs the source clip (ground truth); "
                             "generated video has none: use a detector that reads the frames")
        self.detector, self.near = detector, near
        self.name = name or f"detector:{type(detector).__name__}"

    def segment(self, frames: np.ndarray, cameras: list[CameraModel] | None = None,
                timestamps: np.ndarray | None = None) -> np.ndarray:
        n, t, h, w = _check_frames(frames)
        if cameras is None:
            raise ValueError(f"{self.name}: segment needs the {n} camera models of the frames")
        ts = np.arange(t, dtype=np.float64) if timestamps is None else np.asarray(timestamps, np.float64)
        boxes = self.detector.detect(frames, cameras, ts)
        most = max([len(b) for b in boxes] + [1])
        feats, valid = agent_features(boxes, cameras, max_agents=most, near=self.near)   # (T, N, A, 13), (T, N, A)
        return conditioning_masks(feats.swapaxes(0, 1), valid.swapaxes(0, 1), h, w)


# ----------------------------------------------------------------------------------------- loading
def _config(path: str) -> dict:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"segmenter path {path!r} is not a directory; expected {_EXPECTED}")
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"segmenter path {path!r} lacks config.json; expected {_EXPECTED}")
    try:
        with open(config) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"segmenter path {path!r}: config.json is not JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"segmenter path {path!r}: config.json is not a JSON object")
    return data


def load_segmenter(path: str, device: str = "cpu", score_threshold: float = 0.3) -> Segmenter:
    """A local directory -> its segmenter: a transformers segmentation checkpoint (config.json has a
    ``model_type``) -> ``TransformersSegmenter``; the reference 3D detector (``MonoDetector3D.save_pretrained``)
    -> ``DetectorSegmenter`` over a ``NetworkDetector`` (``score_threshold`` applies to it). Nothing is downloaded;
    FileNotFoundError names the path and what is expected."""
    path = os.fspath(path)
    if "model_type" in _config(path):
        return TransformersSegmenter(path, device)
    from gaia2.detection.mono3d import NetworkDetector

    return DetectorSegmenter(NetworkDetector(path, score_threshold=score_threshold, device=device),
                             name=f"detector:mono3d:{os.path.basename(os.path.normpath(path))}")


CITYSCAPES_LABELS = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                     "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                     "bicycle")


def write_tiny_segmenter(directory: str, seed: int = 0, image_size: int = 64) -> str:
    """A tiny randomly initialised SegFormer (``SegformerForSemanticSegmentation``, the class of the real
    Cityscapes checkpoints: two stages of one block, widths 8 and 16) with Cityscapes' 19 labels and a
    ``SegformerImageProcessor`` resizing to ``image_size`` squared, written with ``save_pretrained``; returns its
    path. For tests and the quickstart: what it finds is noise, loaded by the real code."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    id2label = dict(enumerate(CITYSCAPES_LABELS))
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=len(id2label), id2label=id2label,
                             label2id={v: k for k, v in id2label.items()})
    with torch.random.fork_rng(devices=[]):   # the same weights for a seed, the caller's RNG untouched
        torch.manual_seed(seed)
        model = SegformerForSemanticSegmentation(config)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    SegformerImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory
