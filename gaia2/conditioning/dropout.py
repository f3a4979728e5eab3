"""Training-time dropout of conditioning variables and of input cameras (paper section 4).

Conditioning dropout regularises the model and trains the unconditional prediction that
classifier-free guidance needs: each variable is dropped on its own with ``p_each``, and all of
them together with ``p_all``, per sample. A variable's overall drop probability is therefore
``p_all + (1 - p_all) * p_each`` (0.82 at the paper's values).

Every draw goes through an optional ``torch.Generator`` (on the CPU or the device), so the same
generator state gives the same masks; results are moved to ``device``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def uniform(shape: Sequence[int], generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> Tensor:
    """U[0, 1) of ``shape`` drawn on the generator's device (the global RNG if None), moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=where).to(device)


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: a probability in [0, 1] is required, got {p}")
    return float(p)


class ConditioningDropout:
    """Per-sample keep masks of named conditioning variables: {name: (B,) bool}, True = kept.

    Draw order (fixes the masks given a generator): one U[0, 1) per sample for "all", then one per
    sample for each name in the order given.
    """

    def __init__(self, p_each: float = 0.8, p_all: float = 0.1) -> None:
        self.p_each = _check_p("p_each", p_each)
        self.p_all = _check_p("p_all", p_all)

    def sample(self, batch_size: int, names: Sequence[str], generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        if batch_size < 1:
            raise ValueError(f"ConditioningDropout.sample: batch_size must be >= 1, got {batch_size}")
        if len(set(names)) != len(names):
            raise ValueError(f"ConditioningDropout.sample: duplicate variable names in {list(names)}")
        drop_all = uniform((batch_size,), generator, device) < self.p_all
        return {name: ~(drop_all | (uniform((batch_size,), generator, device) < self.p_each)) for name in names}


def camera_dropout(batch_size: int, num_cameras: int, p: float = 0.1, generator: torch.Generator | None = None,
                   valid: Tensor | None = None, device: torch.device | str | None = None) -> Tensor:
    """(B, N) bool camera keep mask: each valid camera dropped with probability ``p``, at least one kept.

    valid: (B, N) bool, the cameras a sample really has (rigs with fewer cameras are padded to N);
    padding cameras are never kept, and every sample needs at least one valid camera. When every
    valid camera of a sample is dropped, one of them, chosen uniformly, is kept instead (so the
    effective drop rate is p minus p^n_valid / n_valid, negligible for p = 0.1 and 5 cameras).
    Draws: one U[0, 1) per (sample, camera) for the drop, then one per (sample, camera) for the rescue.
    """
    _check_p("camera_dropout p", p)
    if batch_size < 1 or num_cameras < 1:
        raise ValueError(f"camera_dropout: batch_size and num_cameras must be >= 1, got {batch_size}, {num_cameras}")
    if valid is None:
        valid = torch.ones(batch_size, num_cameras, dtype=torch.bool, device=device)
    else:
        if valid.shape != (batch_size, num_cameras) or valid.dtype != torch.bool:
            raise ValueError(f"camera_dropout: valid must be a ({batch_size}, {num_cameras}) bool tensor, "
                             f"got {tuple(valid.shape)} {valid.dtype}")
        valid = valid.to(device)
        # One host sync when valid lives on an accelerator; camera masks are tiny and built once per step.
        if not bool(valid.any(dim=1).all()):
            raise ValueError("camera_dropout: every sample needs at least one valid camera")
    keep = valid & (uniform((batch_size, num_cameras), generator, device) >= p)
    # Rescue: the valid camera with the largest random score, for samples left with none.
    score = uniform((batch_size, num_cameras), generator, device).masked_fill(~valid, -1.0)
    rescue = torch.nn.functional.one_hot(score.argmax(dim=1), num_cameras).bool()
    return torch.where(keep.any(dim=1, keepdim=True), keep, rescue)
