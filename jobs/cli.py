"""The ``gaia2`` command line.

    gaia2 synth --out DIR --clips N --seed S       synthetic multi-rig clips (clip-directory layout)
    gaia2 shards build --source PATH --out DIR     balanced, geofenced WebDataset shards
    gaia2 shards manifest --source DIR --out FILE  a clip directory as a Parquet manifest
    gaia2 shards verify --out DIR [--source PATH]  check a build's invariants from its files
    gaia2 train tokenizer --shards DIR [--preset tiny]             train the video tokenizer (Ray Train)
    gaia2 encode-latents --shards DIR --tokenizer DIR --out DIR   latent shards for world-model training
    gaia2 latents stats DIR [--split train] [--tokenizer URI]     measure existing latent shards' statistics
    gaia2 train world-model --shards LATENTS [--preset tiny]      train the latent world model (Ray Train)
    gaia2 generate --spec FILE --out DIR [--world-model URI]      videos from a spec (--specs DIR: many, a Ray job)
    gaia2 generate --server URL --spec FILE --out DIR   the same, from a running service
    gaia2 evaluate --world-model URI --tokenizer URI --shards S --latents L   the paper's metrics (a Ray job)
    gaia2 serve [--workdir DIR] [--world-model URI]     the generation service (Ray Serve) and its page
    gaia2 quickstart [--workdir DIR] [--serve]     the whole local pipeline on synthetic data:
                                                   shards -> tokenizer -> latent shards -> world model
                                                   -> generations (-> the service, with --serve)
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


def _describe(args: argparse.Namespace) -> int:
    import json

    from gaia2.config.base import ConfigError

    if args.model == "tokenizer":
        from gaia2.tokenizer.model import describe
    else:
        from gaia2.world_model.describe import describe
    try:
        print(json.dumps(describe(args.preset), indent=1))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_command(sub, name: str, help: str, command) -> None:
    p = sub.add_parser(name, help=help, description=command.description)
    command.add_arguments(p)
    p.set_defaults(fn=command.execute)


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

    from jobs import build_shards, encode_latents
    from jobs.specs import SPECS
    from jobs.train_driver import command

    sh = sub.add_parser("shards", help="shard pipeline").add_subparsers(dest="shards_command", required=True)
    _add_command(sh, "build", "build WebDataset shards from clips (a Ray Data job)", build_shards.COMMAND)
    m = sh.add_parser("manifest", help="write a Parquet manifest for a clip directory")
    m.add_argument("--source", required=True)
    m.add_argument("--out", required=True)
    m.set_defaults(fn=_shards_manifest)
    v = sh.add_parser("verify", help="check a finished build: accounting, geofences, stride, balance, contract")
    v.add_argument("--out", required=True, help="the build's output directory")
    v.add_argument("--source", help="the build's source, to check every input clip is accounted for")
    v.set_defaults(fn=_shards_verify)

    tr = sub.add_parser("train", help="training jobs (Ray Train)").add_subparsers(dest="model", required=True)
    for name, spec in SPECS.items():
        _add_command(tr, name, f"train the {name}, export and register its EMA weights", command(spec))

    _add_command(sub, "encode-latents", "encode a shard build's videos into latent shards with a tokenizer",
                 encode_latents.COMMAND)

    from jobs import latents_stats

    la = sub.add_parser("latents", help="latent shards").add_subparsers(dest="latents_command", required=True)
    st = la.add_parser("stats", help="measure the per-channel latent mean and std of existing latent shards",
                       description=latents_stats.__doc__.splitlines()[0])
    latents_stats.add_arguments(st)
    st.set_defaults(fn=latents_stats.execute)

    d = sub.add_parser("describe", help="describe a model preset").add_subparsers(dest="model", required=True)
    for name, what in (("tokenizer", "video tokenizer: parameter counts, input/latent shapes, compression"),
                       ("world-model", "world model: parameter counts, tokens per sample, FLOPs per step")):
        t = d.add_parser(name, help=what)
        t.add_argument("--preset", default="paper")
        t.set_defaults(fn=_describe)

    from jobs import generate

    _add_command(sub, "generate", "generate driving videos from specs (one here, or many as a Ray job)",
                 generate.COMMAND)

    from jobs import evaluate

    _add_command(sub, "evaluate", "evaluate world models: FDD, FID, FVD, FVMD, agent IoU, action adherence, "
                                  "validation loss (a Ray job, tracked in MLflow)", evaluate.COMMAND)

    from jobs.serve import cli as serve_cli

    _add_command(sub, "serve", "the generation service on Ray Serve (HTTP API and page), until Ctrl-C",
                 serve_cli.COMMAND)

    from jobs import quickstart

    _add_command(sub, "quickstart", "run the local pipeline end to end on synthetic data", quickstart.COMMAND)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
