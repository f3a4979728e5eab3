"""CLIP text embeddings of prompts, and their placement as the world model's per-camera CLIP input.

GAIA-2 (paper Fig. 4) trains on CLIP *image* embeddings of each camera's frame; at inference they can
be replaced by CLIP *text* embeddings of a prompt ("a rainy night on a motorway"), because both live in
CLIP's joint image-text space: same width D, both unit-normalised. The checkpoint directory is the
one ``ClipImageEmbedder`` takes (see ``gaia2.embedding.clip``); here its text tower is used and its
vision tower ignored. Nothing is ever fetched from the network (``local_files_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
import torch
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from gaia2.embedding.clip import (CONFIG_FILES, TOKENIZER_FILES, WEIGHT_FILES, check_clip_dir, load_clip_tower,
                                  unit_rows)

_TEXT_TYPES = ("clip", "clip_text_model")
_EXPECTED = ("a directory written by save_pretrained with config.json (model_type clip or clip_text_model), "
             "model weights (model.safetensors) and the CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json)")
# Configs saved before transformers PR #24773 carry eos_token_id 2; CLIP then pools at the largest
# token id, which is <|endoftext|> in CLIP's vocabulary.
_LEGACY_EOS = 2

Embedding = TypeVar("Embedding", np.ndarray, torch.Tensor)


class _TextTower(CLIPTextModelWithProjection):
    """A full CLIP checkpoint's vision tower is expected here: not reported as unexpected weights."""
    _keys_to_ignore_on_load_unexpected = {r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$"}


class ClipTextEmbedder:
    """CLIP tokenizer + text tower + projection: prompts -> L2-normalised text embeddings (D = projection_dim).

    D equals ``ClipImageEmbedder(path).dim`` for the same checkpoint: text and image embeddings share
    CLIP's joint space, so a text embedding can stand in for the image embeddings the world model saw.
    """

    def __init__(self, path: str, device: str | None = None, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        root = Path(path)
        check_clip_dir(root, _TEXT_TYPES, (CONFIG_FILES, TOKENIZER_FILES, WEIGHT_FILES), _EXPECTED)
        self.path = str(root)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.model = load_clip_tower(_TextTower, self.path, "a CLIP text model with projection")
        self.model = self.model.to(self.device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(self.path, local_files_only=True)
        cfg = self.model.config
        # Token ids beyond the embedding table would fail deep inside the model (or on GPU, asynchronously).
        if len(self.tokenizer) > cfg.vocab_size:
            raise ValueError(f"CLIP model path {self.path!r}: the tokenizer has {len(self.tokenizer)} tokens but "
                             f"the text model's vocab_size is {cfg.vocab_size}")
        eos = self.tokenizer.eos_token_id
        legacy = cfg.eos_token_id == _LEGACY_EOS and eos == len(self.tokenizer) - 1
        if eos != cfg.eos_token_id and not legacy:
            raise ValueError(f"CLIP model path {self.path!r}: the text model pools at eos_token_id "
                             f"{cfg.eos_token_id} but the tokenizer ends prompts with id {eos}")
        # Real CLIP: 77 positions, tokenizer model_max_length 77; a tokenizer without a config has no limit.
        self.max_length = min(int(cfg.max_position_embeddings), int(self.tokenizer.model_max_length))

    @property
    def dim(self) -> int:
        """D: the projection dimension, the length of each embedding."""
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """prompts: M non-empty strings -> (M, D) float32 ``text_embeds``, each row of unit L2 norm.

        A prompt longer than the model's ``max_length`` tokens (77 for CLIP, start and end tokens
        included) is truncated to it: its tail does not change the embedding. Prompts are batched in
        chunks of ``batch_size``, padded to the longest of the chunk (padding does not change a prompt's
        embedding: CLIP's text attention is causal and pools at the end token). M = 0 gives (0, D).
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise ValueError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompts[{i}] must be a non-empty string, got {prompt!r}")
        out = np.empty((len(prompts), self.dim), dtype=np.float32)
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(list(prompts[start:start + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")   # (m, S), S <= max_length
            emb = unit_rows(self.model(input_ids=tokens["input_ids"].to(self.device),
                                       attention_mask=tokens["attention_mask"].to(self.device)).text_embeds)  # (m, D)
            out[start:start + len(emb)] = emb.cpu().numpy()
        return out


def camera_slots(embedding: Embedding, cameras: int) -> Embedding:
    """One CLIP embedding per sample -> the world model's per-camera CLIP input.

    embedding: (D,) or (B, D), numpy or torch -> (B, N, D) of the same type, dtype and device, with
    N = ``cameras`` (a (D,) vector gives B = 1); a copy, every camera slot equal to its sample's vector.

    The world model's conditioning takes ``clip`` as (B, N, D), one embedding per camera slot: in
    training, the CLIP image embedding of each camera's frame. A text prompt describes the whole scene,
    not one view, so every camera slot gets the same vector; the model still tells the slots apart by
    the learned camera-slot embedding it adds to each. For per-camera prompts, embed N prompts in
    camera order instead and pass the (N, D) result as one sample, ``emb[None]`` (1, N, D); not through
    this function, which would read (N, D) as N samples.
    """
    if isinstance(cameras, bool) or not isinstance(cameras, int) or cameras < 1:
        raise ValueError(f"cameras must be an int >= 1, got {cameras!r}")
    if not isinstance(embedding, (np.ndarray, torch.Tensor)):
        raise TypeError(f"embedding must be a numpy array or torch tensor, got {type(embedding).__name__}")
    if embedding.ndim not in (1, 2) or embedding.shape[-1] == 0:
        raise ValueError(f"embedding must be (D,) or (B, D) with D >= 1, got shape {tuple(embedding.shape)}")
    rows = embedding.reshape(-1, embedding.shape[-1])[:, None, :]   # (B, 1, D)
    if isinstance(rows, torch.Tensor):
        return rows.repeat(1, cameras, 1)
    return np.repeat(rows, cameras, axis=1)
