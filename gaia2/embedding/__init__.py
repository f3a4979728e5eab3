"""CLIP embeddings: per-camera image embeddings stored with each shard sample (``<key>.clip.npy``), and
text embeddings of prompts that take their place at inference (``camera_slots`` spreads one over the cameras)."""

from gaia2.embedding.clip import ClipImageEmbedder, save_random_clip
from gaia2.embedding.clip_text import ClipTextEmbedder, camera_slots

__all__ = ["ClipImageEmbedder", "ClipTextEmbedder", "camera_slots", "save_random_clip"]
