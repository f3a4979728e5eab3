"""Synthetic multi-rig driving clips: procedural scenes rendered through real camera models.

    from gaia2.synth import generate_clips, generate_clip, RIGS
    ids = generate_clips("clips/", n_clips=12, seed=0)

Modules: ``rigs`` (camera platforms), ``conditions`` (metadata distribution), ``road`` (lanes and
centreline), ``motion`` (ego speed/curvature), ``agents``, ``look`` (time of day, weather),
``scene`` (a clip's plan), ``ground``/``boxes``/``render`` (ray casting), ``generate`` (records,
videos, files), ``regions`` (where drives happen).
"""

from gaia2.synth.rigs import RIGS, Rig

__all__ = ["RIGS", "Rig", "generate_clip", "generate_clips"]


def __getattr__(name: str):
    # The generator pulls in the video encoder; importing gaia2.synth.regions should not.
    if name in ("generate_clip", "generate_clips"):
        from gaia2.synth import generate
        return getattr(generate, name)
    raise AttributeError(f"module 'gaia2.synth' has no attribute {name!r}")
