"""CLIP image embeddings of shard frames, and the local-checkpoint plumbing both CLIP embedders share.

The model directory is what ``save_pretrained`` writes: ``config.json`` (a ``clip`` config, or a
one-tower ``clip_vision_model`` / ``clip_text_model`` config), the weights (``model.safetensors``,
possibly sharded), ``preprocessor_config.json`` (a ``CLIPImageProcessor``, for images) and the CLIP
tokenizer files (``vocab.json`` + ``merges.txt`` or ``tokenizer.json``, for text). A full CLIP
checkpoint such as ``openai/clip-vit-large-patch14`` downloaded elsewhere serves both embedders as is:
each loads its own tower and ignores the other. Nothing is ever fetched from the network
(``local_files_only=True``). Text embeddings: ``gaia2.embedding.clip_text``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPPreTrainedModel, CLIPTextConfig,
                          CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection)

# Each requirement is a tuple of alternatives; an alternative is met when all of its files exist.
CONFIG_FILES = (("config.json",),)
IMAGE_PROCESSOR_FILES = (("preprocessor_config.json",),)
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
WEIGHT_FILES = tuple((name,) for name in ("model.safetensors", "model.safetensors.index.json",
                                          "pytorch_model.bin", "pytorch_model.bin.index.json"))

_VISION_TYPES = ("clip", "clip_vision_model")
_EXPECTED = ("a directory written by save_pretrained with config.json (model_type clip or clip_vision_model), "
             "model weights (model.safetensors) and preprocessor_config.json (CLIPImageProcessor)")

Tower = TypeVar("Tower", bound=CLIPPreTrainedModel)


def check_clip_dir(path: Path, model_types: tuple[str, ...], requirements: tuple[tuple[tuple[str, ...], ...], ...],
                   expected: str) -> None:
    """Fail early, naming the path and what is missing, instead of transformers' hub-lookup errors.

    requirements: e.g. ``(CONFIG_FILES, TOKENIZER_FILES, WEIGHT_FILES)``; config.json's model_type must
    be one of ``model_types``. ``expected`` describes the whole directory for the error messages.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"CLIP model path {str(path)!r} is not a directory; expected {expected}")
    missing = [" or ".join(" + ".join(alt) for alt in alternatives) for alternatives in requirements
               if not any(all((path / name).is_file() for name in alt) for alt in alternatives)]
    if missing:
        raise FileNotFoundError(f"CLIP model path {str(path)!r} lacks {', '.join(missing)}; expected {expected}")
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"CLIP model path {str(path)!r}: config.json is not a JSON object ({err})") from err
    if model_type not in model_types:
        raise ValueError(f"CLIP model path {str(path)!r}: config.json has model_type {model_type!r}, "
                         f"expected one of {model_types}")


def load_clip_tower(model_class: type[Tower], path: str, what: str) -> Tower:
    """``model_class.from_pretrained(path)`` (local files only), failing on missing or mis-shaped weights.

    transformers fills absent or mis-shaped weights with random values and only logs it; random
    embeddings from a wrong checkpoint must not pass unnoticed. Mis-shaped weights are loaded with
    ``ignore_mismatched_sizes`` so that they are listed here, with the path, instead of transformers'
    bare RuntimeError. ``what`` names the expected model in the error ("a CLIP vision model with projection").
    """
    try:
        model, info = model_class.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                  ignore_mismatched_sizes=True)
    except RuntimeError as err:
        raise ValueError(f"CLIP model path {path!r}: weights do not load ({what} was expected): {err}") from err
    bad = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if bad:
        raise ValueError(f"CLIP model path {path!r}: checkpoint lacks or mis-shapes weights {bad[:8]} "
                         f"({what} was expected)")
    return model


def unit_rows(emb: torch.Tensor) -> torch.Tensor:
    """(M, D) -> (M, D) float32, each row scaled to unit L2 norm (CLIP's joint space compares by cosine)."""
    emb = emb.float()
    return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class _VisionTower(CLIPVisionModelWithProjection):
    """A full CLIP checkpoint's text tower is expected here: not reported as unexpected weights."""
    _keys_to_ignore_on_load_unexpected = {r"^text_model\.", r"^text_projection\.", r"^logit_scale$"}


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
        check_clip_dir(root, _VISION_TYPES, (CONFIG_FILES, IMAGE_PROCESSOR_FILES, WEIGHT_FILES), _EXPECTED)
        self.path = str(root)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.model = load_clip_tower(_VisionTower, self.path, "a CLIP vision model with projection")
        self.model = self.model.to(self.device).eval()
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
            emb = unit_rows(self.model(pixel_values=pixels.to(self.device)).image_embeds)          # (m, D)
            out[start:start + len(emb)] = emb.cpu().numpy()
        return out


def byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A minimal CLIP byte-level BPE vocabulary, in the real one's layout, and its merges.

    Ids 0-255: the 256 byte-to-unicode characters (GPT-2's map: printable bytes stand for themselves,
    the others for code points from 256 up), 256-511: the same with the ``</w>`` end-of-word suffix,
    then one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (the last id, as in CLIP).
    Any text tokenizes (every byte has a token); the few merges only show that merging runs.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "r</w>"), ("i", "n"), ("in", "g</w>")]
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def _save_tokenizer(path: Path, max_length: int) -> CLIPTokenizer:
    """Write ``byte_level_vocab`` as vocab.json + merges.txt (the original CLIP files) and, through
    ``CLIPTokenizer.save_pretrained``, tokenizer.json + tokenizer_config.json (model_max_length)."""
    vocab, merges = byte_level_vocab()
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    tokenizer.save_pretrained(path)
    return tokenizer


def save_random_clip(path: str, image_size: int = 32, hidden_size: int = 32, projection_dim: int = 16,
                     seed: int = 0, text_positions: int = 32) -> str:
    """Write a tiny randomly initialised full CLIP (both towers), image processor and tokenizer to
    ``path``; returns ``path``.

    Same classes and on-disk layout as a real checkpoint (``CLIPModel`` with model_type ``clip``,
    ``preprocessor_config.json``, ``vocab.json`` + ``merges.txt`` + ``tokenizer.json``), so that
    ``ClipImageEmbedder`` and ``ClipTextEmbedder`` both load it through exactly the code a real CLIP
    takes. Each tower: two transformer layers, two heads, width ``hidden_size``; both project to
    ``projection_dim``. Vision: 4x4 patches; the processor resizes the shortest edge to ``image_size``
    and centre-crops ``image_size`` square, as the real CLIP processors do for 224. Text: the
    hand-written byte-level vocabulary of ``byte_level_vocab`` (no network), ``text_positions`` tokens
    (CLIP: 77). The embeddings it produces carry no semantics.
    """
    if image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be a positive multiple of 4 (4x4 patches), got {image_size}")
    if hidden_size < 2 or hidden_size % 2:
        raise ValueError(f"hidden_size must be a positive multiple of 2 (two heads), got {hidden_size}")
    if projection_dim < 1:
        raise ValueError(f"projection_dim must be >= 1, got {projection_dim}")
    if text_positions < 3:
        raise ValueError(f"text_positions must be >= 3 (start, one token, end), got {text_positions}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = _save_tokenizer(root, text_positions)
    tower = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=projection_dim)
    vision = CLIPVisionConfig(image_size=image_size, patch_size=image_size // 4, **tower)
    # The text model pools at the first end-of-text token: its id must be the tokenizer's.
    text = CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=text_positions,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **tower)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection_dim)
    # A private RNG scope: the same seed gives the same weights without disturbing the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path
