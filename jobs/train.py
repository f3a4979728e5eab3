"""Ray Train job for any trainable model of the spine (``jobs/specs``):

    python -m jobs.train tokenizer --shards SHARDS [--preset tiny|paper] [--config FILE] [--set a.b=value ...]
    python -m jobs.train world-model --shards LATENTS ...
    ray job submit --working-dir . -- python -m jobs.train world-model --preset paper --shards /mnt/latents

``gaia2 train <model>`` is the same job; ``--help`` after the model name lists its flags.
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from jobs.specs import SPECS
    from jobs.train_driver import command

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SPECS:
        print(f"usage: python -m jobs.train {{{','.join(SPECS)}}} [options]", file=sys.stderr)
        return 2
    return command(SPECS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
