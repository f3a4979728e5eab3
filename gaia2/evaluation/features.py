"""The pretrained feature networks of FDD, FID and FVD, loaded from local paths only (nothing is downloaded).

    ex = load_extractor("fdd", "/models/dinov2-large", device="cuda")   # DINOv2 ViT-L/14 at 448 x 952
    feats = ex.extract(frames)                  # (B, H, W, 3) uint8 of any size -> (B, 1024) float64
    ex.fingerprint                              # the cache key of real features

    metric  network                        input, preprocessing                   feature          resolution
    fdd     DINOv2 ViT-L/14                frames, bilinear, ImageNet mean/std    final-norm CLS   448 x 952 (§6.2)
    fid     Inception-v3 (torch-fidelity)  frames, resized inside, [-1, 1]        2048-d pool      299 x 299 (fixed)
    fvd     I3D Kinetics-400 (cd-fvd)      16-frame clips, bilinear, [-1, 1]      400 logits       224 x 224

FDD follows Stein et al. 2023 (dgm-eval): the CLS token of DINOv2's final layer-normed hidden state
(``pooler_output``). FID is torchmetrics' ``NoTrainInceptionV3`` with ``antialias=False``, the very module
``FrechetInceptionDistance(feature=2048, antialias=False)`` calls, so the features are the same numbers. FVD is
cd-fvd's I3D with its preprocessing (StyleGAN-V's): bilinear resize, [-1, 1], logits averaged over time; its fixed
``AvgPool3d([2, 7, 7])`` is replaced by a global average, identical at 16 x 224 x 224 (the final map is 2 x 7 x 7)
and defined at any smaller test resolution.

Expected on disk: fdd, a directory written by transformers' ``save_pretrained`` (config.json + model.safetensors),
e.g. facebook/dinov2-large; fid, torch-fidelity's weights file (weights-inception-2015-12-05-6726825d.pth); fvd,
StyleGAN-V's / cd-fvd's ``i3d_pretrained_400.pt``. ``write_tiny_networks`` writes random networks of the same
classes in the same layout, for tests and the quickstart (their features carry no meaning).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

STANDARD_RESOLUTIONS: dict[str, tuple[int, int]] = {"fdd": (448, 952), "fid": (299, 299), "fvd": (224, 224)}
TINY_RESOLUTIONS: dict[str, tuple[int, int]] = {"fdd": (56, 112), "fid": (299, 299), "fvd": (64, 64)}
CLIP_FRAMES = 16
MIN_CLIP_FRAMES = 8      # the shortest FVD clip in the driving literature (Panacea, DriveDreamer-2)
EXPECTED = {
    "fdd": "a DINOv2 ViT-L/14 checkpoint directory saved with transformers' save_pretrained (config.json, "
           "model.safetensors), e.g. facebook/dinov2-large",
    "fid": "torch-fidelity's Inception-v3 weights file (weights-inception-2015-12-05-6726825d.pth, a state dict "
           "saved with torch.save)",
    "fvd": "the I3D Kinetics-400 weights file of StyleGAN-V / cd-fvd (i3d_pretrained_400.pt, a state dict saved "
           "with torch.save)",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_FILES = {"fdd": "fdd", "fid": "fid/weights-inception-2015-12-05.pth", "fvd": "fvd/i3d_pretrained_400.pt"}


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def fingerprint(name: str, resolution: tuple[int, int], preprocessing: str, files: list[Path]) -> str:
    """Hex sha256 over the network's name, input resolution, preprocessing description and the bytes of
    ``files`` (in the order given; their names and locations do not count)."""
    h = hashlib.sha256(json.dumps([name, list(resolution), preprocessing]).encode())
    for f in files:
        h.update(_file_digest(f))
    return h.hexdigest()


def _missing(metric: str, path: Path, problem: str) -> FileNotFoundError:
    return FileNotFoundError(f"{metric}: {path}: {problem} (expected {EXPECTED[metric]}; nothing is downloaded)")


def _weights_file(metric: str, path: Path) -> Path:
    if not path.exists():
        raise _missing(metric, path, "no such file")
    if not path.is_file():
        raise _missing(metric, path, "not a file")
    return path


class FeatureExtractor(ABC):
    """A frozen feature network: uint8 frames or clips in, (B, dim) float64 features out, batched on ``device``."""
    metric: str                  # "fdd" | "fid" | "fvd"
    name: str                    # "dinov2" | "inception-v3" | "i3d"
    input: str                   # "frames" | "clips"
    clip_frames: int | None = None
    preprocessing: str           # what is done to the pixels; part of the fingerprint (change it when that changes)

    def __init__(self, model: nn.Module, files: list[Path], resolution: tuple[int, int], dim: int, device: str,
                 batch_size: int) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.resolution = resolution
        self.dim = dim
        self.batch_size = batch_size
        self.fingerprint = fingerprint(self.name, resolution, self.preprocessing, files)

    @classmethod
    @abstractmethod
    def load(cls, path: Path, device: str, resolution: tuple[int, int], batch_size: int) -> FeatureExtractor:
        """The network at ``path`` (checked to be there, see ``EXPECTED``) -> its extractor."""

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        frames = self.input == "frames"
        want = "(B, H, W, 3)" if frames else f"(B, {self.clip_frames}, H, W, 3)"
        ok = (x.ndim == (4 if frames else 5) and x.shape[-1] == 3 and min(x.shape[-3:-1]) > 0
              and (frames or x.shape[1] == self.clip_frames))
        if not ok:
            raise ValueError(f"{self.metric} ({self.name}): expected {self.input} of shape {want}, got {x.shape}")
        if x.dtype != np.uint8:
            raise ValueError(f"{self.metric} ({self.name}): expected uint8 {self.input} in 0..255, got {x.dtype}")
        return x

    def extract(self, x: np.ndarray) -> np.ndarray:
        """frames (B, H, W, 3) or clips (B, clip_frames, H, W, 3), uint8 of any H, W -> features (B, dim) float64."""
        x = self._check(x)
        out = np.empty((len(x), self.dim))
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[i:i + self.batch_size])).to(self.device)
                out[i:i + len(batch)] = self._features(batch).double().cpu().numpy()   # a sync per batch
        return out

    @abstractmethod
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """A uint8 batch on the device, laid out as ``extract`` takes it -> (b, dim)."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(metric={self.metric!r}, resolution={self.resolution}, dim={self.dim}, "
                f"fingerprint={self.fingerprint[:12]})")


class DinoV2Features(FeatureExtractor):
    """FDD: the final layer-normed CLS token of DINOv2 (``pooler_output``) on bilinearly resized frames."""
    metric, name, input = "fdd", "dinov2", "frames"
    preprocessing = "fdd/1: bilinear antialiased resize, /255, ImageNet mean/std; pooler_output (final-norm CLS)"

    @classmethod
    def load(cls, path: Path, device: str, resolution: tuple[int, int], batch_size: int) -> DinoV2Features:
        from transformers import Dinov2Model

        if not path.exists():
            raise _missing("fdd", path, "no such directory")
        if not path.is_dir():
            raise _missing("fdd", path, "not a directory")
        files = [path / "config.json"] + sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")
                                                or p.name.endswith(".index.json"))
        if not files[0].is_file():
            raise _missing("fdd", path, "no config.json")
        if len(files) == 1:
            raise _missing("fdd", path, "no weights (model.safetensors)")
        model_type = json.loads(files[0].read_text()).get("model_type")
        if model_type != "dinov2":
            raise ValueError(f"fdd: {path}: config.json has model_type {model_type!r}, expected 'dinov2'")
        model, info = Dinov2Model.from_pretrained(path, local_files_only=True, dtype=torch.float32,
                                                  output_loading_info=True)
        # transformers fills absent weights with random values and only logs it
        if info["missing_keys"] or info["mismatched_keys"]:
            bad = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
            raise ValueError(f"fdd: {path}: checkpoint lacks or mis-shapes weights {bad[:8]}")
        patch = model.config.patch_size
        if resolution[0] % patch or resolution[1] % patch:
            raise ValueError(f"fdd: resolution {resolution} must be multiples of the patch size {patch}")
        return cls(model, files, resolution, model.config.hidden_size, device, batch_size)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b h w c -> b c h w").float() / 255
        x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False, antialias=True)
        x = (x - x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return self.model(pixel_values=x).pooler_output        # (b, hidden): the final layer-normed CLS token


class InceptionFeatures(FeatureExtractor):
    """FID: the 2048-d pool features of torchmetrics' ``NoTrainInceptionV3`` (antialias off), which resizes to
    299 x 299 itself (TensorFlow-1 compatible bilinear) and scales to [-1, 1]."""
    metric, name, input = "fid", "inception-v3", "frames"
    preprocessing = "fid/1: torchmetrics NoTrainInceptionV3 inception-v3-compat, antialias=False; 2048 pool"

    @classmethod
    def load(cls, path: Path, device: str, resolution: tuple[int, int], batch_size: int) -> InceptionFeatures:
        from torchmetrics.image.fid import NoTrainInceptionV3

        if resolution != STANDARD_RESOLUTIONS["fid"]:
            raise ValueError(f"fid: the Inception network resizes every frame to 299 x 299 itself; "
                             f"resolution {resolution} cannot be chosen")
        path = _weights_file("fid", path)   # torch-fidelity downloads when given no path: always give it one
        model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                   feature_extractor_weights_path=str(path), antialias=False)
        return cls(model, [path], resolution, 2048, device, batch_size)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous as torchmetrics' callers pass it: a channels-last view may take other kernels
        return self.model(rearrange(x, "b h w c -> b c h w").contiguous())


class I3DFeatures(FeatureExtractor):
    """FVD: cd-fvd's I3D logits (400, averaged over time and space) of ``clip_frames``-frame clips (16 unless
    ``load_extractor`` says otherwise) resized bilinearly and scaled to [-1, 1], as
    ``cdfvd.third_party.i3d.utils.preprocess_i3d`` does."""
    metric, name, input, clip_frames = "fvd", "i3d", "clips", CLIP_FRAMES
    preprocessing = "fvd/1: bilinear resize (no antialias), 2x/255-1, (B,C,T,H,W); logits, global average pool"

    @classmethod
    def load(cls, path: Path, device: str, resolution: tuple[int, int], batch_size: int) -> I3DFeatures:
        path = _weights_file("fvd", path)
        model = build_i3d()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except RuntimeError as err:
            raise ValueError(f"fvd: {path}: not I3D (Kinetics-400) weights: {err}") from err
        return cls(model, [path], resolution, 400, device, batch_size)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = rearrange(x, "b t h w c -> (b t) c h w").float()
        x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False)
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b)
        return self.model(2.0 * x / 255.0 - 1)   # written as preprocess_i3d writes it, for the same floats


def build_i3d() -> nn.Module:
    """cd-fvd's ``InceptionI3d(400)`` with a global average pool in place of its fixed ``AvgPool3d([2, 7, 7])``
    (the same at 16 x 224 x 224, where the final map is 2 x 7 x 7); uninitialised weights."""
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

    model = InceptionI3d(400, in_channels=3)
    model.avg_pool = nn.AdaptiveAvgPool3d((1, 1, 1))
    return model


EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "fdd": DinoV2Features, "fid": InceptionFeatures, "fvd": I3DFeatures}


def load_extractor(metric: str, path: str, device: str = "cpu", resolution: tuple[int, int] | None = None,
                   batch_size: int = 16, clip_frames: int = CLIP_FRAMES) -> FeatureExtractor:
    """The feature network of ``metric`` ("fdd", "fid", "fvd") from the local ``path`` (see ``EXPECTED``), on
    ``device``, taking inputs to ``resolution`` (None: the metric's standard one) -> its ``FeatureExtractor``.
    ``clip_frames``: FVD's clip length (16, the FVD paper's; nuScenes papers also use 8 or 25: I3D pools over
    time, so any length of at least ``MIN_CLIP_FRAMES`` gives a 400-d feature)."""
    if metric not in EXTRACTORS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(EXTRACTORS)}")
    res = STANDARD_RESOLUTIONS[metric] if resolution is None else tuple(int(v) for v in resolution)
    if len(res) != 2 or min(res) < 1:
        raise ValueError(f"{metric}: resolution must be (H, W) of positive ints, got {resolution}")
    if batch_size < 1:
        raise ValueError(f"{metric}: batch_size must be >= 1, got {batch_size}")
    if clip_frames < MIN_CLIP_FRAMES:
        raise ValueError(f"{metric}: clip_frames must be >= {MIN_CLIP_FRAMES}, got {clip_frames}")
    extractor = EXTRACTORS[metric].load(Path(path), device, res, batch_size)
    if extractor.input == "clips":
        extractor.clip_frames = int(clip_frames)
    return extractor


def _scaled_init(model: nn.Module) -> None:
    """He-normal convolution weights, so that activations keep their scale through a deep random network
    (PyTorch's default shrinks them layer by layer: I3D's logits then differ by ~1e-7 between random inputs)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


def write_tiny_networks(directory: str, seed: int = 0) -> dict[str, str]:
    """Random networks of the real classes, laid out as the real ones are expected, under ``directory`` ->
    {"fdd": directory/fdd, "fid": .../fid/weights-inception-2015-12-05.pth, "fvd": .../fvd/i3d_pretrained_400.pt}.

    fdd: a 2-layer, 2-head, width-32 DINOv2 (patch 14, trained size 56); fid and fvd: the full-size Inception-v3
    (~24M parameters, ~95 MB) and I3D (~12M, ~50 MB), whose classes fix their size. The same bytes for a seed.
    """
    from torchmetrics.image.fid import NoTrainInceptionV3
    from transformers import Dinov2Config, Dinov2Model

    class FreshInception(NoTrainInceptionV3):
        """Keeps its fresh weights: torch-fidelity's constructor insists on loading a state dict."""

        def load_state_dict(self, *args, **kwargs) -> None:
            return None

    root = Path(directory)
    out = {metric: root / name for metric, name in TINY_FILES.items()}
    for p in out.values():
        (p if p.suffix == "" else p.parent).mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                              image_size=56, patch_size=14)
        Dinov2Model(config).save_pretrained(out["fdd"])

        torch.manual_seed(seed)
        torch.save({}, out["fid"])                    # read (and ignored) by FreshInception's constructor
        inception = FreshInception(name="inception-v3-compat", features_list=["2048"],
                                   feature_extractor_weights_path=str(out["fid"]))
        _scaled_init(inception)
        torch.save(inception.state_dict(), out["fid"])

        torch.manual_seed(seed)
        model = build_i3d()
        _scaled_init(model)
        torch.save(model.state_dict(), out["fvd"])
    return {metric: str(p) for metric, p in out.items()}
