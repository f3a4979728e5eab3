"""The ``gaia2`` command line.

    gaia2 synth --out DIR --clips N --seed S       synthetic multi-rig clips (clip-directory layout)
    gaia2 shards build --source PATH --out DIR     balanced, geofenced WebDataset shards
    gaia2 shards manifest --source DIR --out FILE  a clip directory as a Parquet manifest
    gaia2 shards verify --out DIR [--source PATH]  check a build's invariants from its files
    gaia2 train tokenizer --shards DIR [--preset tiny]             train the video tokenizer (Ray Train)
    gaia2 encode-latents --shards DIR --tokenizer DIR --out DIR   latent shards for world-model training
    gaia2 train world-model --shards LATENTS [--preset tiny]      train the latent world model (Ray Train)
    gaia2 quickstart [--workdir DIR]               the whole local pipeline on synthetic data:
                                                   shards -> tokenizer -> latent shards -> world model
    gaia2 describe tokenizer --preset NAME         parameter counts and shapes (built on the meta device)
    gaia2 describe world-model --preset NAME       parameters, tokens per sample, FLOPs per training step
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _synth(args: argparse.Namespace) -> int:
    from gaia2.synth.generate import generate_clips

    ids = generate_clips(args.out, args.clips, seed=args.seed, duration_s=args.duration, workers=args.workers)
    print(f"wrote {len(ids)} clips to {args.out}")
    if args.faults:
        from gaia2.synth.faults import make_bad_clips
        from gaia2.synth.generate import generate_clip

        bad = make_bad_clips(args.out, args.out, generate_clip(args.clips, args.seed, duration_s=0.4))
        width = max(map(len, bad))
        print(f"wrote {len(bad)} broken clips beside them (clip id -> the reject reason expected):")
        for clip_id, reason in sorted(bad.items()):
            print(f"  {clip_id:<{width}}  {reason}")
    return 0


def _shards_build(args: argparse.Namespace) -> int:
    from jobs.build_shards import execute

    return execute(args)


def _shards_manifest(args: argparse.Namespace) -> int:
    from pipelines.shards.sources import write_manifest

    n = write_manifest(args.source, args.out)
    print(f"wrote {n} clip rows to {args.out}")
    return 0


def _shards_verify(args: argparse.Namespace) -> int:
    import json

    from pipelines.shards.verify import verify_build

    result = verify_build(args.out, args.source)
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


def _train_tokenizer(args: argparse.Namespace) -> int:
    from jobs.train_tokenizer import execute

    return execute(args)


def _train_world_model(args: argparse.Namespace) -> int:
    from jobs.train_world_model import execute

    return execute(args)


def _encode_latents(args: argparse.Namespace) -> int:
    from jobs.encode_latents import execute

    return execute(args)


def _describe_tokenizer(args: argparse.Namespace) -> int:
    import json

    from gaia2.config.base import ConfigError
    from gaia2.tokenizer.model import describe

    try:
        print(json.dumps(describe(args.preset), indent=1))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _describe_world_model(args: argparse.Namespace) -> int:
    import json

    from gaia2.config.base import ConfigError
    from gaia2.world_model.describe import describe

    try:
        print(json.dumps(describe(args.preset), indent=1))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from jobs.quickstart import main as quickstart

    return quickstart(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gaia2", description="GAIA-2 world model pipeline on Ray")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate synthetic multi-rig driving clips")
    s.add_argument("--out", required=True)
    s.add_argument("--clips", type=int, default=60)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--faults", action="store_true",
                   help="also write one broken clip per kind of bad input (unreadable, truncated, ...)")
    s.set_defaults(fn=_synth)

    sh = sub.add_parser("shards", help="shard pipeline").add_subparsers(dest="shards_command", required=True)
    b = sh.add_parser("build", help="build WebDataset shards from clips (a Ray Data job)")
    from jobs.build_shards import add_arguments
    add_arguments(b)
    b.set_defaults(fn=_shards_build)
    m = sh.add_parser("manifest", help="write a Parquet manifest for a clip directory")
    m.add_argument("--source", required=True)
    m.add_argument("--out", required=True)
    m.set_defaults(fn=_shards_manifest)
    v = sh.add_parser("verify", help="check a finished build: accounting, geofences, stride, balance, contract")
    v.add_argument("--out", required=True, help="the build's output directory")
    v.add_argument("--source", help="the build's source, to check every input clip is accounted for")
    v.set_defaults(fn=_shards_verify)

    tr = sub.add_parser("train", help="training jobs (Ray Train)").add_subparsers(dest="model", required=True)
    tt = tr.add_parser("tokenizer", help="train the video tokenizer on shards, export and register its EMA weights")
    from jobs.train_tokenizer import add_arguments as add_train_arguments
    add_train_arguments(tt)
    tt.set_defaults(fn=_train_tokenizer)
    tw = tr.add_parser("world-model", help="train the latent world model on latent shards (flow matching)")
    from jobs.train_world_model import add_arguments as add_world_model_arguments
    add_world_model_arguments(tw)
    tw.set_defaults(fn=_train_world_model)

    e = sub.add_parser("encode-latents", help="encode a shard build's videos into latent shards with a tokenizer")
    from jobs.encode_latents import add_arguments as add_latent_arguments
    add_latent_arguments(e)
    e.set_defaults(fn=_encode_latents)

    d = sub.add_parser("describe", help="describe a model preset").add_subparsers(dest="model", required=True)
    t = d.add_parser("tokenizer", help="video tokenizer: parameter counts, input/latent shapes, compression")
    t.add_argument("--preset", default="paper")
    t.set_defaults(fn=_describe_tokenizer)
    w = d.add_parser("world-model", help="world model: parameter counts, tokens per sample, FLOPs per step")
    w.add_argument("--preset", default="paper")
    w.set_defaults(fn=_describe_world_model)

    q = sub.add_parser("quickstart", help="run the local pipeline end to end on synthetic data")
    q.add_argument("--workdir", default="gaia2-quickstart")
    q.add_argument("--clips", type=int, default=24)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--tokenizer-steps", type=int, default=200,
                   help="tokenizer main-stage steps (default 200, about 4 minutes on 2 cores; the tiny preset "
                        "has 300)")
    q.add_argument("--world-model-steps", type=int, default=200,
                   help="world-model steps (default 200; the tiny preset has 300)")
    q.set_defaults(fn=_quickstart)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
