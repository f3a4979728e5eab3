"""The sample finished in the task that encoded it: CLIP on the CPU, packing and staging, no actor hop.

With ``embedding.placement`` ``task`` (``auto`` on a CPU-only build), the window task goes on past the
encoded videos: each camera's middle frame through CLIP, the sample packed and staged, so only keys and
reject columns leave it. An actor stage costs a copy of every batch into and out of the object store and
a conversion to and from Arrow on each side, while CLIP on a CPU gains nothing from being shared: with the
tiny model (~1.5 ms of CLIP per window in-process), moving it into the task took the build's marginal time per
window from 96.6 to 83.2 ms on 2 cores (two build sizes, alternated). The model is loaded once per worker
process (``embedder``) and reused by every task that process runs.

``placement: actor`` (``auto`` with ``embedding.num_gpus`` > 0) keeps CLIP in its actor pool: a GPU, or a
model too large to load in every worker.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gaia2.config.shards import RetryConfig
from pipelines.shards.encode import encode_batch, pack_batch
from pipelines.shards.window import window_batch
from pipelines.shards.write import stage_batch


@lru_cache(maxsize=1)
def embedder(path: str | None, retry_json: str):
    """The worker process's CLIP stage, loaded on its first task (torch is imported only then)."""
    from pipelines.shards.embed import EmbedClip

    return EmbedClip(path, retry=RetryConfig.model_validate_json(retry_json))


def finish_batch(batch: dict[str, np.ndarray], out_dir: str, clip_path: str | None,
                 retry_json: str) -> dict[str, np.ndarray]:
    """Encoded window rows -> embedded, packed and staged: the keys and reject columns (``stage_batch``)."""
    return stage_batch(pack_batch(embedder(clip_path, retry_json)(batch)), out_dir)


def window_sample_batch(batch: dict[str, np.ndarray], config_json: str, detect_args: dict, out_dir: str,
                        clip_path: str | None, retry_json: str) -> dict[str, np.ndarray]:
    """Ground truth: decode, annotate, encode (``window_batch``), then finish, in one task."""
    return finish_batch(window_batch(batch, config_json, detect_args), out_dir, clip_path, retry_json)


def encode_sample_batch(batch: dict[str, np.ndarray], config_json: str, out_dir: str, clip_path: str | None,
                        retry_json: str) -> dict[str, np.ndarray]:
    """After a detector network's actor stage: encode, then finish, in one task."""
    return finish_batch(encode_batch(batch, config_json), out_dir, clip_path, retry_json)
