"""Reference monocular 3D detector (CenterNet-style) and the ``NetworkDetector`` that runs it.

Each image gives a stride-``s`` map of heads (h = ceil(H / s), w = ceil(W / s)):
    heatmap   (num_classes)  logits; a peak is the projected 3D box centre of an agent
    offset    (2)            sub-cell position: the centre pixel is u = (j + off_x) * s,
                             v = (i + off_y) * s (CenterNet: the target cell is floor(u / s))
    log_depth (1)            log of the centre's camera-frame z, metres
    log_size  (3)            log of l, w, h, metres
    yaw       (2)            sin, cos of the box yaw relative to the viewing ray of its centre:
                             ``alpha = yaw_box - heading(ray)``, headings about the ego up axis
                             (the appearance of an agent depends on alpha, not on its ego yaw)
Decoding back-projects the peak pixel through the camera (undistorting it) at the predicted depth,
then maps centre and yaw to the ego frame; ``NetworkDetector`` merges the cameras of each frame by
class-wise bird's-eye-view NMS.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaia2.camera.model import CameraModel, undistort
from gaia2.detection.base import Boxes3D, DetectionError, Detector3D, check_inputs
from gaia2.schema.metadata import AGENT_CATEGORIES

if TYPE_CHECKING:
    from gaia2.schema.clip import Clip

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TORCH_WEIGHTS_FILE = "model.pt"     # accepted when loading: torch.save of the state dict
HEADS = ("heatmap", "offset", "log_depth", "log_size", "yaw")
# Decoded values are clamped so that a diverging or untrained network cannot emit inf/0 boxes
# that would poison the features downstream.
LOG_DEPTH_RANGE = (math.log(0.1), math.log(1000.0))
LOG_SIZE_RANGE = (math.log(0.01), math.log(100.0))


@dataclass(frozen=True)
class Mono3DConfig:
    in_channels: int = 3
    width: int = 32              # channels of the first stage; doubled at each further downsampling
    depth: int = 3               # residual blocks at the output stride
    num_classes: int = 5         # class k is AGENT_CATEGORIES[k + 1]
    stride: int = 8              # output stride, a power of two
    top_k: int = 64              # peaks decoded per image before the score threshold
    pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406)   # of uint8 / 255, per channel
    pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"Mono3DConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.depth < 0:
            raise ValueError(f"Mono3DConfig.depth: must be >= 0, got {self.depth}")
        if not 1 <= self.num_classes <= len(AGENT_CATEGORIES) - 1:
            raise ValueError(f"Mono3DConfig.num_classes: must be in 1..{len(AGENT_CATEGORIES) - 1} "
                             f"(AGENT_CATEGORIES without 'unknown'), got {self.num_classes}")
        if self.stride < 2 or self.stride & (self.stride - 1):
            raise ValueError(f"Mono3DConfig.stride: must be a power of two >= 2, got {self.stride}")
        for name in ("pixel_mean", "pixel_std"):
            value = tuple(float(v) for v in getattr(self, name))
            object.__setattr__(self, name, value)   # lists from JSON -> tuples (hashable, comparable)
            if len(value) != self.in_channels:
                raise ValueError(f"Mono3DConfig.{name}: expected {self.in_channels} values, got {len(value)}")
        if min(self.pixel_std) <= 0:
            raise ValueError(f"Mono3DConfig.pixel_std: must be positive, got {self.pixel_std}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Mono3DConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Mono3DConfig: unknown field(s) {unknown}; known {sorted(known)}")
        return cls(**d)

    def head_channels(self) -> dict[str, int]:
        return {"heatmap": self.num_classes, "offset": 2, "log_depth": 1, "log_size": 3, "yaw": 2}


def _conv_norm_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(math.gcd(8, cout), cout), nn.SiLU())


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv_norm_act(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(math.gcd(8, channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x + self.norm2(self.conv2(self.conv1(x))))


class MonoDetector3D(nn.Module):
    """Images (B, C, H, W), normalised -> head maps (B, k, ceil(H/s), ceil(W/s)); see module doc."""

    def __init__(self, config: Mono3DConfig):
        super().__init__()
        self.config = config
        n_down = int(math.log2(config.stride))
        layers: list[nn.Module] = []
        cin = config.in_channels
        for stage in range(n_down):
            layers.append(_conv_norm_act(cin, config.width * 2 ** stage, stride=2))
            cin = config.width * 2 ** stage
        layers += [_Residual(cin) for _ in range(config.depth)]
        self.backbone = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.SiLU(), nn.Conv2d(cin, out, 1))
            for name, out in config.head_channels().items()})
        # Not persistent: the normalisation lives in config.json, the only source of truth.
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, -1, 1, 1), persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, _Residual):
                nn.init.zeros_(m.norm2.weight)   # every residual block starts as identity (+ SiLU)
        # CenterNet's focal-loss prior: start at heatmap probability 0.1 everywhere.
        nn.init.constant_(self.heads["heatmap"][-1].bias, -math.log((1 - 0.1) / 0.1))

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W), channels normalised by pixel_mean/std."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0)   # "b h w c -> b c h w"
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feat = self.backbone(x)                               # (B, C', h, w)
        return {name: head(feat) for name, head in self.heads.items()}

    @torch.no_grad()
    def decode(self, outputs: Mapping[str, Tensor], cameras: Sequence[CameraModel],
               score_threshold: float) -> list[np.ndarray]:
        """forward() outputs of B images and each image's camera -> B arrays (M, 9): ego-frame box
        (cx, cy, cz, l, w, h, yaw, category_id) + score, score descending, score >= threshold."""
        heat = outputs["heatmap"].float().sigmoid()
        b, k, h, w = heat.shape
        if len(cameras) != b:
            raise DetectionError(f"decode: {len(cameras)} cameras for {b} images")
        # A peak is a cell that is the maximum of its 3x3 neighbourhood (CenterNet's NMS).
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        scores, idx = peaks.flatten(1).topk(min(self.config.top_k, k * h * w), dim=1)   # (B, K) sorted
        cls, pix = idx // (h * w), idx % (h * w)

        def gather(name: str) -> Tensor:   # (B, c, h, w) at the peaks -> (B, K, c)
            t = outputs[name].float().flatten(2)
            return t.gather(2, pix[:, None, :].expand(-1, t.shape[1], -1)).transpose(1, 2)

        cols = torch.cat([scores[..., None], cls[..., None].float(), (pix // w)[..., None].float(),
                          (pix % w)[..., None].float()] + [gather(n) for n in HEADS[1:]], dim=-1)
        rows = cols.cpu().numpy().astype(np.float64)         # (B, K, 12); one device -> host copy
        return [peaks_to_ego_boxes(rows[n], cameras[n], self.config.stride, score_threshold)
                for n in range(b)]

    def save_pretrained(self, path: str) -> None:
        """Write ``config.json`` and ``model.safetensors`` under the directory ``path``."""
        from safetensors.torch import save_file
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, CONFIG_FILE), "w") as f:
            json.dump(asdict(self.config), f, indent=2, sort_keys=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(path, WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device = "cpu") -> "MonoDetector3D":
        """Load a ``save_pretrained`` directory (or one holding ``model.pt``) in eval mode."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"MonoDetector3D checkpoint: {path!r} is not a directory")
        config_path = os.path.join(path, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"MonoDetector3D checkpoint {path!r}: missing {CONFIG_FILE}")
        try:
            with open(config_path) as f:
                config = Mono3DConfig.from_dict(json.load(f))
        except (ValueError, TypeError) as err:
            raise ValueError(f"MonoDetector3D checkpoint {config_path}: {err}") from None
        weights = os.path.join(path, WEIGHTS_FILE)
        if os.path.isfile(weights):
            from safetensors.torch import load_file
            state = load_file(weights, device="cpu")
        elif os.path.isfile(os.path.join(path, TORCH_WEIGHTS_FILE)):
            weights = os.path.join(path, TORCH_WEIGHTS_FILE)
            state = torch.load(weights, map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"MonoDetector3D checkpoint {path!r}: missing {WEIGHTS_FILE} "
                                    f"(or {TORCH_WEIGHTS_FILE})")
        model = cls(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"MonoDetector3D checkpoint {weights}: weights do not match {CONFIG_FILE}: {err}") from None
        return model.to(device).eval()


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def peaks_to_ego_boxes(rows: np.ndarray, camera: CameraModel, stride: int, score_threshold: float) -> np.ndarray:
    """Decoded peaks of one image (K, 12): score, class, i, j, off_x, off_y, log_depth, log_l, log_w,
    log_h, sin, cos -> (M, 9) ego-frame boxes + score for the peaks with score >= threshold."""
    rows = rows[rows[:, 0] >= score_threshold]
    fx, fy, cx, cy = camera.intrinsics
    u = (rows[:, 3] + rows[:, 4]) * stride
    v = (rows[:, 2] + rows[:, 5]) * stride
    xy = undistort(np.stack([(u - cx) / fx, (v - cy) / fy], axis=-1), camera.distortion)   # (M, 2)
    ray = np.concatenate([xy, np.ones_like(xy[:, :1])], axis=1)                             # z = 1
    z = np.exp(np.clip(rows[:, 6:7], *LOG_DEPTH_RANGE))
    rot, trans = camera.cam_to_ego[:3, :3], camera.cam_to_ego[:3, 3]
    centre = (ray * z) @ rot.T + trans
    ray_ego = ray @ rot.T
    yaw = _wrap(np.arctan2(ray_ego[:, 1], ray_ego[:, 0]) + np.arctan2(rows[:, 10], rows[:, 11]))
    size = np.exp(np.clip(rows[:, 7:10], *LOG_SIZE_RANGE))
    return np.concatenate([centre, size, yaw[:, None], rows[:, 1:2] + 1, rows[:, 0:1]], axis=1)


def bev_nms(boxes: np.ndarray, radius_m: float) -> np.ndarray:
    """(M, 9) boxes + score -> the kept rows, score descending: per class, a box whose ground-plane
    centre lies within ``radius_m`` of a higher-scoring box's is dropped (the same agent seen by
    two cameras)."""
    b = boxes[np.argsort(-boxes[:, 8], kind="stable")]
    keep = np.ones(len(b), dtype=bool)
    for a in range(len(b)):
        if not keep[a]:
            continue
        rest = b[a + 1:]
        near = np.hypot(rest[:, 0] - b[a, 0], rest[:, 1] - b[a, 1]) < radius_m
        keep[a + 1:] &= ~(near & (rest[:, 7] == b[a, 7]))
    return b[keep]


class NetworkDetector(Detector3D):
    """Runs a ``MonoDetector3D`` checkpoint over every (camera, frame) image of a window."""

    requires_clip = False

    def __init__(self, checkpoint: str, score_threshold: float = 0.3, nms_radius_m: float = 1.0,
                 device: str | None = None, max_images_per_forward: int | None = None):
        """max_images_per_forward: None runs all N_cams * T images of a call in one forward;
        a number bounds the activation memory on large windows."""
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold: must be in [0, 1], got {score_threshold}")
        if max_images_per_forward is not None and max_images_per_forward < 1:
            raise ValueError(f"max_images_per_forward: must be >= 1 or None, got {max_images_per_forward}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = MonoDetector3D.from_pretrained(checkpoint, self.device)
        self.score_threshold = score_threshold
        self.nms_radius_m = nms_radius_m
        self.max_images_per_forward = max_images_per_forward

    def detect(self, frames: np.ndarray, cameras: list[CameraModel], timestamps: np.ndarray,
               clip: "Clip | None" = None) -> list[Boxes3D]:
        n_cams, t = check_inputs(frames, cameras, timestamps)
        images = frames.reshape(n_cams * t, *frames.shape[2:])    # "n t h w c -> (n t) h w c"
        image_cams = [cameras[k // t] for k in range(n_cams * t)]
        chunk = self.max_images_per_forward or len(images)
        dets: list[np.ndarray] = []
        with torch.no_grad():
            for s in range(0, len(images), chunk):
                # uint8 goes to the device (4x less to copy than float); normalised there.
                x = torch.from_numpy(np.ascontiguousarray(images[s:s + chunk])).to(self.device)
                x = self.model.preprocess(x)
                dets += self.model.decode(self.model(x), image_cams[s:s + chunk], self.score_threshold)
        out = []
        for f in range(t):
            merged = bev_nms(np.concatenate([dets[n * t + f] for n in range(n_cams)], axis=0), self.nms_radius_m)
            out.append(merged[:, :8])
        return out
