"""The transformer MLP of both models (the tokenizer's exact GELU, the world model's tanh-approximated one)."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """(..., C) -> (..., C) through ``int(ratio * C)`` hidden units and GELU (``approximate`` as in
    ``F.gelu``: "none" = exact erf, "tanh" = DiT's approximation). Parameters ``fc1``, ``fc2``."""

    def __init__(self, dim: int, ratio: float, approximate: Literal["none", "tanh"]) -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"MLP: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))
