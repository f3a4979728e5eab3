"""Scene metadata -> one cross-attention token per vocabulary variable (paper section 2.2.3).

Each variable of ``gaia2.schema.metadata.VOCABULARY`` has its own embedding table; id 0 is
``unknown``, the value of a missing label and of a dropped one (conditioning dropout sets every id
of a dropped sample to 0, so "unknown" is learned from both).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gaia2.conditioning.embeddings import init_weights
from gaia2.schema.metadata import METADATA_KEYS, vocabulary_sizes


class MetadataEncoder(nn.Module):
    """ids (B, V) long in VOCABULARY order (0 = unknown), keep (B,) bool or None -> (B, V, C).

    Ids must lie in 0..size-1 of their variable (the vocabulary checks them at ingest; an id out of
    range fails in the embedding lookup). A sample with keep False encodes as all ids 0.
    Init: N(0, 0.02^2) rows.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"MetadataEncoder: dim must be >= 1, got {dim}")
        self.names: tuple[str, ...] = METADATA_KEYS
        sizes = vocabulary_sizes()
        self.tables = nn.ModuleDict({name: nn.Embedding(sizes[name], dim) for name in self.names})
        init_weights(self)

    def forward(self, ids: Tensor, keep: Tensor | None = None) -> Tensor:
        v = len(self.names)
        if ids.ndim != 2 or ids.shape[1] != v:
            raise ValueError(f"MetadataEncoder: metadata must be (B, {v}) ids in the order {list(self.names)}, "
                             f"got {tuple(ids.shape)}")
        if ids.is_floating_point():
            raise ValueError(f"MetadataEncoder: metadata ids must be integers, got {ids.dtype}")
        ids = ids.long()
        if keep is not None:
            if keep.shape != ids.shape[:1]:
                raise ValueError(f"MetadataEncoder: keep must be (B,) = {tuple(ids.shape[:1])}, got {tuple(keep.shape)}")
            ids = torch.where(keep[:, None], ids, torch.zeros_like(ids))
        return torch.stack([self.tables[name](ids[:, i]) for i, name in enumerate(self.names)], dim=1)
