"""Balancing on the joint distribution of metadata labels (paper §3).

A *cell* is one combination of the configured metadata values, e.g.
``country=GB|weather=rain|time_of_day=day``. Balancing flattens the distribution over cells, not
over each variable alone, so realistic co-occurrences (rain in GB at night) are kept as units.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gaia2.schema.metadata import UNKNOWN

# d_c within this relative distance of n_c counts as exactly n_c: at T = 1, q_c * N equals n_c
# only up to float rounding, and keep-all with weight exactly 1 is the documented behaviour there.
_EXACT_RTOL = 1e-9


def cell_of(metadata: Mapping[str, str | None], keys: Sequence[str]) -> str:
    """{name: value or None} -> 'k1=v1|k2=v2|...' in the order of ``keys``; missing or None -> 'unknown'."""
    if not keys:
        raise ValueError("cell_of: keys must name at least one metadata variable")
    parts = []
    for k in keys:
        v = metadata.get(k)
        if v is None:
            v = UNKNOWN
        if not isinstance(v, str) or "|" in v or "=" in v:
            raise ValueError(f"cell_of: metadata.{k} must be a string without '|' or '=', got {v!r}")
        parts.append(f"{k}={v}")
    return "|".join(parts)


def normalised_entropy(masses: Iterable[float]) -> float:
    """Shannon entropy of the distribution p_c = m_c / sum(m) over cells present, divided by log(K).

    masses: non-negative per-cell masses (counts or summed weights); zero-mass cells are not present.
    Result in [0, 1]: 1 = uniform over the K cells present, -> 0 as one cell takes all the mass.
    With K <= 1 cell (including no cells at all) there is nothing to flatten; the value is defined
    as 1.0, so balancing can never appear to make such a distribution less flat.
    """
    m = np.asarray(list(masses), dtype=np.float64)
    if m.ndim != 1 or not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("normalised_entropy: masses must be a flat sequence of finite, non-negative numbers")
    m = m[m > 0]
    if m.size <= 1:
        return 1.0
    p = m / m.sum()
    h = float(-(p * np.log(p)).sum() / math.log(m.size))
    return min(max(h, 0.0), 1.0)   # clip rounding just past the ends


@dataclass
class BalanceResult:
    selected: np.ndarray             # (n,) bool: window kept
    weight: np.ndarray               # (n,) float64 sampling weight, 0 where not selected
    counts_before: dict[str, int]    # cell -> windows in, sorted by cell
    mass_after: dict[str, float]     # cell -> sum of weights kept, sorted by cell
    entropy_before: float            # normalised entropy of counts_before, [0, 1]
    entropy_after: float             # normalised entropy of mass_after, [0, 1]


def _rank(seed: int, key: str) -> bytes:
    # A keyed hash, not Python's hash(): salted per process, which would break reproducibility.
    return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()


def balance(cells: Sequence[str], keys: Sequence[str], temperature: float, repeat_cap: float,
            seed: int) -> BalanceResult:
    """Temperature sampling over joint cells -> which windows to keep and with what weight.

    cells: (n,) cell of each window (``cell_of``); keys: (n,) unique window keys.
    With n_c windows in cell c and N = sum n_c:
      1. target share q_c = n_c^(1/T) / sum_c' n_c'^(1/T)  (T = 1: natural shares; T -> inf: uniform);
      2. desired mass d_c = q_c * N (the total mass stays N);
      3. common cell (d_c < n_c): keep k_c = max(1, round_half_up(d_c)) windows, weight 1 each. The k_c
         are the windows with the smallest blake2b(seed, key) digest (ties by key), a seeded draw
         that depends only on the set of keys, never on the input order;
      4. rare cell (d_c >= n_c): keep every window, weight min(d_c / n_c, repeat_cap). The cap bounds
         how often one rare window may be repeated, at the price of the cell staying below q_c.
    Every cell keeps at least one window, so the cells present before and after are the same.
    T = 1 keeps every window with weight exactly 1. Same inputs and seed -> same result.
    """
    n = len(cells)
    if len(keys) != n:
        raise ValueError(f"balance: cells ({n}) and keys ({len(keys)}) must have the same length")
    if not (math.isfinite(temperature) and temperature >= 1.0):
        raise ValueError(f"balance: temperature must be finite and >= 1, got {temperature}")
    if not (math.isfinite(repeat_cap) and repeat_cap >= 1.0):
        raise ValueError(f"balance: repeat_cap must be finite and >= 1, got {repeat_cap}")
    if len(set(keys)) != n:
        raise ValueError("balance: window keys must be unique (they seed the down-sampling draw)")

    members: dict[str, list[int]] = {}
    for i, c in enumerate(cells):
        members.setdefault(str(c), []).append(i)
    counts = {c: len(members[c]) for c in sorted(members)}
    selected = np.zeros(n, dtype=bool)
    weight = np.zeros(n, dtype=np.float64)
    if n:
        powered = {c: float(k) ** (1.0 / temperature) for c, k in counts.items()}
        total = math.fsum(powered.values())
        for c, n_c in counts.items():
            d_c = powered[c] / total * n
            if abs(d_c - n_c) <= _EXACT_RTOL * n_c:
                d_c = float(n_c)
            idx = members[c]
            if d_c < n_c:
                k_c = max(1, math.floor(d_c + 0.5))
                chosen = sorted(idx, key=lambda i: (_rank(seed, str(keys[i])), str(keys[i])))[:k_c]
                selected[chosen] = True
                weight[chosen] = 1.0
            else:
                selected[idx] = True
                weight[idx] = min(d_c / n_c, repeat_cap)

    mass_after = {c: math.fsum(weight[members[c]]) for c in counts}
    return BalanceResult(selected, weight, counts, mass_after,
                         normalised_entropy(counts.values()), normalised_entropy(mass_after.values()))
