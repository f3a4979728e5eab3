"""Learning-rate schedules as pure functions of the step (paper §4).

Tokenizer: linear warm-up to the base rate, constant, then a linear cool-down to a final rate over
the last steps (1e-4, 2,500 warm-up, 5,000 cool-down to 1e-5). World model: linear warm-up, then a
cosine decay to the final rate (5e-5, 2,500 warm-up, cosine to 6.5e-6).
"""

from __future__ import annotations

import math


def _check(step: int, total: int, warmup: int) -> None:
    if total <= 0 or warmup < 0 or step < 0:
        raise ValueError(f"schedule: need total > 0, warmup >= 0, step >= 0 (got {total}, {warmup}, {step})")


def warmup_cooldown_lr(step: int, total: int, base: float, warmup: int, cooldown: int, final: float) -> float:
    """Linear 0 -> base over ``warmup`` steps, base until ``total - cooldown``, linear to ``final`` at ``total``."""
    _check(step, total, warmup)
    if step < warmup:
        return base * (step + 1) / warmup
    start = max(total - cooldown, warmup)
    if step < start:
        return base
    frac = min(1.0, (step - start) / max(total - start, 1))
    return base + (final - base) * frac


def warmup_cosine_lr(step: int, total: int, base: float, warmup: int, final: float) -> float:
    """Linear 0 -> base over ``warmup`` steps, then cosine from base to ``final`` at ``total``."""
    _check(step, total, warmup)
    if step < warmup:
        return base * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(total - warmup, 1))
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * frac))
