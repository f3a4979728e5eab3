"""Scene metadata -> one cross-attention token per vocabulary variable (paper section 2.2.3).

Each variable of ``gaia2.schema.metadata.VOCABULARY`` has its own embedding table; id 0 is
``unknown``, the value of a missing label and of a dropped one (conditioning dropout drops each
variable on its own and sets its id to 0, so "unknown" is learned from both, and a request that gives
only some variables is one the model has been trained on).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gaia2.conditioning.embeddings import init_weights
from gaia2.schema.metadata import METADATA_KEYS, vocabulary_sizes


class MetadataEncoder(nn.Module):
    """ids (B, V) long in VOCABULARY order (0 = unknown), keep (B, V) bool or None -> (B, V, C).

    Ids must lie in 0..size-1 of their variable (the vocabulary checks them at ingest; an id out of
    range fails in the embedding lookup). A variable with keep False encodes as id 0.
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
        self._register_load_state_dict_pre_hook(self._grow_older_tables)

    def _grow_older_tables(self, state_dict: dict, prefix: str, *args) -> None:
        """A model saved under an older vocabulary has shorter tables (values are only ever appended, e.g. v2's
        country "SG"): its rows keep their ids, and the new values keep this model's fresh rows (never seen in
        training, like any rare value) instead of the load failing on the shape."""
        for name, table in self.tables.items():
            key = f"{prefix}tables.{name}.weight"
            old = state_dict.get(key)
            if old is not None and old.ndim == 2 and old.shape[1] == table.embedding_dim \
                    and old.shape[0] < table.num_embeddings:
                fresh = table.weight.detach()[old.shape[0]:].to(old.device, old.dtype)
                state_dict[key] = torch.cat([old, fresh])

    def forward(self, ids: Tensor, keep: Tensor | None = None) -> Tensor:
        v = len(self.names)
        if ids.ndim != 2 or ids.shape[1] != v:
            raise ValueError(f"MetadataEncoder: metadata must be (B, {v}) ids in the order {list(self.names)}, "
                             f"got {tuple(ids.shape)}")
        if ids.is_floating_point():
            raise ValueError(f"MetadataEncoder: metadata ids must be integers, got {ids.dtype}")
        ids = ids.long()
        if keep is not None:
            if keep.shape != ids.shape or keep.dtype != torch.bool:
                raise ValueError(f"MetadataEncoder: keep must be (B, V) = {tuple(ids.shape)} bool, "
                                 f"got {tuple(keep.shape)} {keep.dtype}")
            ids = torch.where(keep, ids, torch.zeros_like(ids))
        return torch.stack([self.tables[name](ids[:, i]) for i, name in enumerate(self.names)], dim=1)
