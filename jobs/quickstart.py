"""``gaia2 quickstart``: synthetic clips -> shards, on this machine, printing where everything is.

No pretrained weights can be assumed on a fresh machine, so unless GAIA2_CLIP_PATH names a real CLIP
vision model the quickstart writes a tiny randomly initialised one and says so: the embeddings then
exercise the pipeline, not semantics.
"""

from __future__ import annotations

import argparse
import os


def main(args: argparse.Namespace) -> int:
    from gaia2.embedding.clip import save_random_clip
    from gaia2.synth.generate import generate_clips
    from jobs.build_shards import execute

    work = os.path.abspath(args.workdir)
    clips = os.path.join(work, "clips")
    if not os.path.isdir(clips) or len(os.listdir(clips)) < args.clips:
        print(f"[quickstart] generating {args.clips} synthetic clips in {clips}")
        generate_clips(clips, args.clips, seed=args.seed, workers=None)
    clip_path = os.environ.get("GAIA2_CLIP_PATH")
    if not clip_path:
        clip_path = os.path.join(work, "models", "clip-random")
        if not os.path.exists(os.path.join(clip_path, "config.json")):
            save_random_clip(clip_path)
        print(f"[quickstart] no GAIA2_CLIP_PATH: using a randomly initialised tiny CLIP at {clip_path}")
    build = argparse.Namespace(source=clips, out=os.path.join(work, "shards"), config=None, preset="tiny",
                               seed=args.seed, clip_path=clip_path, workdir=work)
    return execute(build)
