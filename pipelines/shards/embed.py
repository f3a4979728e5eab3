"""Stage: CLIP image embedding of each window's middle frame, one embedding per camera.

Used as an actor stage, the model loaded once per actor:
    ds.map_batches(EmbedClip, fn_constructor_kwargs={"path": cfg.embedding.clip_path, "retry": cfg.retry},
                   batch_size=cfg.embedding.batch_size,
                   compute=ray.data.ActorPoolStrategy(size=cfg.embedding.concurrency),
                   num_gpus=cfg.embedding.num_gpus, num_cpus=cfg.embedding.num_cpus)
"""

from __future__ import annotations

import numpy as np

from gaia2.config.shards import RetryConfig
from gaia2.embedding.clip import ClipImageEmbedder
from gaia2.schema.errors import ClipError, Reason
from pipelines.rejects import Reject, batch_rejects, map_rows, reject_columns
from pipelines.retry import retrying_batched
from pipelines.shards.common import object_column


class EmbedClip:
    """Callable Ray Data stage: rows with ``frames`` (N, T, H, W, 3) uint8 -> ``clip`` (N, D) float32.

    Rejected rows pass through with a (0, D) embedding. All middle frames of a batch go through the
    model in one call, so the accelerator sees batch_size * N images at once (up to the embedder's
    images per forward). Out of memory halves the images per forward (down to 1); a transient error is
    tried ``retry.attempts`` times (``pipelines/retry.py``; None: RetryConfig's defaults); if the call
    still fails, every row in it is rejected (stage "embed").
    """

    def __init__(self, path: str, device: str | None = None, retry: RetryConfig | None = None):
        self.embedder = ClipImageEmbedder(path, device=device)
        self.retry = retry or RetryConfig()

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(M, H, W, 3) uint8 -> (M, D) float32, retried; the batch is the embedder's images per forward."""
        configured = self.embedder.batch_size

        def run(images_per_forward: int) -> np.ndarray:
            self.embedder.batch_size = images_per_forward
            return self.embedder.embed(images)

        try:
            return retrying_batched(run, min(configured, len(images)), self.retry)
        finally:   # the next batch starts from the configured size again
            self.embedder.batch_size = configured

    @staticmethod
    def middle_frames(frames: np.ndarray) -> np.ndarray:
        """(N, T, H, W, 3) -> each camera's middle frame, (N, H, W, 3)."""
        if not isinstance(frames, np.ndarray) or frames.ndim != 5 or 0 in frames.shape[:2]:
            shape = getattr(frames, "shape", type(frames).__name__)
            raise ClipError(Reason.DECODE_FAILED, f"frames must be (N, T, H, W, 3) with N, T > 0, got {shape}")
        return frames[:, frames.shape[1] // 2]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["frames"])
        dim = self.embedder.dim
        clips = [np.zeros((0, dim), np.float32) for _ in range(n)]
        middles, rejects = map_rows(lambda i: self.middle_frames(batch["frames"][i]), n, "embed",
                                    Reason.DECODE_FAILED, None, batch_rejects(batch, n))
        rows = [i for i in range(n) if rejects[i] is None]
        if rows:
            try:
                emb = self.embed(np.concatenate([middles[i] for i in rows]))   # (sum N, D)
                ends = np.cumsum([len(middles[i]) for i in rows])
                for i, part in zip(rows, np.split(emb, ends[:-1])):
                    clips[i] = part
            except Exception as err:   # the windows become reject rows; the build goes on
                for i in rows:
                    rejects[i] = Reject.of("embed", err, Reason.DECODE_FAILED)
        out = dict(batch)
        out["clip"] = object_column(clips)
        return out | reject_columns(rejects)
