"""Per-camera image embeddings stored with each shard sample (``<key>.clip.npy``)."""

from gaia2.embedding.clip import ClipImageEmbedder, save_random_clip

__all__ = ["ClipImageEmbedder", "save_random_clip"]
