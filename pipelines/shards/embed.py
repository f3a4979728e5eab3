"""Stage: CLIP image embedding of each window's middle frame, one embedding per camera.

Used as an actor stage, the model loaded once per actor:
    ds.map_batches(EmbedClip, fn_constructor_kwargs={"path": cfg.embedding.clip_path},
                   batch_size=cfg.embedding.batch_size,
                   compute=ray.data.ActorPoolStrategy(size=cfg.embedding.concurrency),
                   num_gpus=cfg.embedding.num_gpus, num_cpus=cfg.embedding.num_cpus)
"""

from __future__ import annotations

import numpy as np

from gaia2.embedding.clip import ClipImageEmbedder
from gaia2.schema.errors import ClipError, Reason
from pipelines.shards.common import object_column


class EmbedClip:
    """Callable Ray Data stage: rows with ``frames`` (N, T, H, W, 3) uint8 -> ``clip`` (N, D) float32.

    Error rows (non-empty ``error``) pass through with a (0, D) embedding. All middle frames of a
    batch go through the model in one call, so the accelerator sees batch_size * N images at once.
    """

    def __init__(self, path: str, device: str | None = None):
        self.embedder = ClipImageEmbedder(path, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["frames"])
        errors = [str(e) for e in batch["error"]]
        dim = self.embedder.dim
        clips = [np.zeros((0, dim), np.float32) for _ in range(n)]
        middles, rows = [], []   # per ok row: its (N, H, W, 3) middle frames
        for i in range(n):
            if errors[i]:
                continue
            frames = batch["frames"][i]
            if not isinstance(frames, np.ndarray) or frames.ndim != 5 or 0 in frames.shape[:2]:
                shape = getattr(frames, "shape", type(frames).__name__)
                errors[i] = str(ClipError(Reason.DECODE_FAILED,
                                          f"clip embedding: frames must be (N, T, H, W, 3) with N, T > 0, got {shape}"))
                continue
            middles.append(frames[:, frames.shape[1] // 2])
            rows.append(i)
        if rows:
            try:
                emb = self.embedder.embed(np.concatenate(middles))   # (sum N, D)
                ends = np.cumsum([len(m) for m in middles])
                for i, part in zip(rows, np.split(emb, ends[:-1])):
                    clips[i] = part
            except Exception as err:   # the windows become reject rows; the build goes on
                for i in rows:
                    errors[i] = str(ClipError(Reason.DECODE_FAILED, f"clip embedding: {type(err).__name__}: {err}"))
        out = dict(batch)
        out["clip"] = object_column(clips)
        out["error"] = np.asarray(errors, dtype=object)
        return out
