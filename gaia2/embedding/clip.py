"""CLIP image embeddings of shard frames, from a transformers CLIP vision model on a local path.

The model directory is what ``save_pretrained`` writes: ``config.json`` (a ``clip`` or
``clip_vision_model`` config), the weights (``model.safetensors``, possibly sharded) and
``preprocessor_config.json`` (a ``CLIPImageProcessor``). A full CLIP checkpoint such as
``openai/clip-vit-large-patch14`` downloaded elsewhere works as is: its text tower is ignored.
Nothing is ever fetched from the network (``local_files_only=True``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

_MODEL_TYPES = ("clip", "clip_vision_model")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_EXPECTED = ("a directory written by save_pretrained with config.json (model_type clip or clip_vision_model), "
             "model weights (model.safetensors) and preprocessor_config.json (CLIPImageProcessor)")


def _check_model_dir(path: Path) -> None:
    """Fail early, naming the path and what is missing, instead of transformers' hub-lookup errors."""
    if not path.is_dir():
        raise FileNotFoundError(f"CLIP model path {str(path)!r} is not a directory; expected {_EXPECTED}")
    missing = [name for name in ("config.json", "preprocessor_config.json") if not (path / name).is_file()]
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    if missing:
        raise FileNotFoundError(f"CLIP model path {str(path)!r} lacks {', '.join(missing)}; expected {_EXPECTED}")
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"CLIP model path {str(path)!r}: config.json is not a JSON object ({err})") from err
    if model_type not in _MODEL_TYPES:
        raise ValueError(f"CLIP model path {str(path)!r}: config.json has model_type {model_type!r}, "
                         f"expected one of {_MODEL_TYPES}")


def _output_size(processor: CLIPImageProcessor) -> tuple[int, int] | None:
    """(height, width) of the processor's output images; None when it depends on the input's aspect."""
    if processor.do_center_crop:
        return processor.crop_size.height, processor.crop_size.width
    if processor.do_resize and processor.size.height and processor.size.width:
        return processor.size.height, processor.size.width
    return None


class ClipImageEmbedder:
    """CLIP vision tower + projection: RGB images -> L2-normalised image embeddings (D = projection_dim).

    Preprocessing is the checkpoint's own ``CLIPImageProcessor`` (bicubic resize of the shortest
    edge, centre crop to the model's image size, rescale to [0, 1], CLIP mean/std normalisation),
    run on the model's device.
    """

    def __init__(self, path: str, device: str | None = None, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        root = Path(path)
        _check_model_dir(root)
        self.path = str(root)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        model, info = CLIPVisionModelWithProjection.from_pretrained(
            self.path, local_files_only=True, output_loading_info=True)
        # transformers fills absent or mis-shaped weights with random values and only logs it;
        # random embeddings from a wrong checkpoint must not reach the shards unnoticed.
        bad = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
        if bad:
            raise ValueError(f"CLIP model path {self.path!r}: checkpoint lacks or mis-shapes weights {bad[:8]} "
                             f"(a CLIP vision model with projection was expected)")
        self.model = model.to(self.device).eval()
        self.processor = CLIPImageProcessor.from_pretrained(self.path, local_files_only=True)
        size = self.model.config.image_size
        if _output_size(self.processor) != (size, size):
            raise ValueError(f"CLIP model path {self.path!r}: preprocessor_config.json gives images of size "
                             f"{_output_size(self.processor)} (height, width; None = not square) but the model "
                             f"expects {size}x{size}")

    @property
    def dim(self) -> int:
        """D: the projection dimension, the length of each embedding."""
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        """images: (M, H, W, 3) uint8 RGB -> (M, D) float32, each row of unit L2 norm.

        Runs in chunks of ``batch_size`` images to bound activation memory; M = 0 gives (0, D).
        """
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            desc = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"images must be a (M, H, W, 3) uint8 RGB array, got {desc}")
        if images.shape[1] == 0 or images.shape[2] == 0:
            raise ValueError(f"images must have a non-empty H and W, got shape {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
            pixels = self.processor(images=chunk.permute(0, 3, 1, 2), input_data_format="channels_first",
                                    device=self.device, return_tensors="pt")["pixel_values"]   # (m, 3, S, S)
            emb = self.model(pixel_values=pixels.to(self.device)).image_embeds.float()            # (m, D)
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out[start:start + len(emb)] = emb.cpu().numpy()
        return out


def save_random_clip(path: str, image_size: int = 32, hidden_size: int = 32, projection_dim: int = 16,
                     seed: int = 0) -> str:
    """Write a tiny randomly initialised CLIP vision model + image processor to ``path``; returns ``path``.

    Same classes and on-disk layout as a real checkpoint (``save_pretrained``), so loading it goes
    through exactly the code a real CLIP takes. Two transformer layers, two heads, 4x4 patches.
    The processor resizes the shortest edge to ``image_size`` and centre-crops ``image_size`` square,
    as the real CLIP processors do for 224. The embeddings it produces carry no semantics.
    """
    if image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be a positive multiple of 4 (4x4 patches), got {image_size}")
    if hidden_size < 2 or hidden_size % 2:
        raise ValueError(f"hidden_size must be a positive multiple of 2 (two heads), got {hidden_size}")
    if projection_dim < 1:
        raise ValueError(f"projection_dim must be >= 1, got {projection_dim}")
    config = CLIPVisionConfig(image_size=image_size, patch_size=image_size // 4, hidden_size=hidden_size,
                              intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=2,
                              projection_dim=projection_dim)
    # A private RNG scope: the same seed gives the same weights without disturbing the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(config)
    model.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path
