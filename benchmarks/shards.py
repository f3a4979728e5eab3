"""Shard pipeline throughput against the floor it cannot beat, in one run.

pipeline:  the whole build (ingest checks, selection, decode, detection, CLIP, encode, write) on
           local Ray, in clips/s.
transcode: the same windows that the build wrote, decoded with decord (same scaling and crop) and
           encoded with the same codec settings, in plain Python over all cores, no Ray, in clips/s.

    python benchmarks/shards.py [--clips 60] [--duration 4] [--repeats 3] [--workdir bench-work]

The two are measured alternately ``--repeats`` times in one run (this machine is noisy); ``ratio``
is the median pipeline throughput over the median transcode throughput. The first pipeline run
pays Ray's one-off start-up in this process (worker processes, Ray Data's own actors) and the later
ones do not, so ``ratio_first`` is reported too. Every pipeline run starts its detector/CLIP actors
afresh. The last line is one JSON object: {"pipeline_clips_per_s", "transcode_clips_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow.parquet as pq  # noqa: E402

from gaia2.config.shards import ShardBuildConfig, load_shard_config  # noqa: E402


def transcode_window(args: tuple[str, int, str]) -> int:
    """Decode one window of every camera exactly as the pipeline does, and encode it the same way."""
    clip_json, index, config_json = args
    from gaia2.curation.windows import cut_windows
    from gaia2.schema.clip import Clip
    from gaia2.video.decode import decode_frames
    from gaia2.video.encode import VideoCodec, encode_video
    from pipelines.shards.decode import shard_calibration

    cfg = ShardBuildConfig.model_validate_json(config_json)
    clip = Clip.from_dict(json.loads(clip_json))
    window = cut_windows(clip, cfg.window.frames, cfg.window.hop, cfg.window.grid_hz)[index]
    out_wh = (cfg.image.width, cfg.image.height)
    _, geometry = shard_calibration(clip, out_wh)
    fps = 1.0 / float(window.timestamps[1] - window.timestamps[0])
    codec = VideoCodec.from_config(cfg.codec)
    size = 0
    for cam, (scaled, crop), idx in zip(clip.cameras, geometry, window.frame_indices):
        frames = decode_frames(cam.video, cam.name, idx, scaled, crop, out_wh)
        size += len(encode_video(frames, fps, codec))
    return size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per synthetic clip")
    p.add_argument("--repeats", type=int, default=3, help="alternating pipeline/transcode measurements")
    p.add_argument("--workdir", default="bench-work")
    args = p.parse_args()

    import ray

    from gaia2.embedding.clip import save_random_clip
    from gaia2.synth.generate import generate_clips
    from pipelines.shards.build import build_shards

    work = os.path.abspath(args.workdir)
    clips = os.path.join(work, f"clips-{args.clips}-{args.seed}-{args.duration:g}s")
    if not os.path.isdir(clips):
        generate_clips(clips, args.clips, seed=args.seed, duration_s=args.duration, workers=os.cpu_count())
    clip_path = save_random_clip(os.path.join(work, "clip-random"))
    cfg = load_shard_config("tiny", overrides={"embedding": {"clip_path": clip_path}, "seed": args.seed})
    ray.init(include_dashboard=False, logging_level="warning")
    ray.data.DataContext.get_current().enable_progress_bars = False
    from gaia2.schema.clip import dumps
    from pipelines.shards.sources import list_clips, read_record

    records = {}
    for ref in list_clips(clips):
        clip = read_record(ref)
        records[clip.clip_id] = dumps(clip.to_dict())

    pipeline_s, transcode_s = [], []
    for r in range(args.repeats):
        out = os.path.join(work, f"shards-{time.time_ns()}")
        t0 = time.perf_counter()
        result = build_shards(clips, out, cfg, log=lambda s: print(s, file=sys.stderr))
        pipeline_s.append(time.perf_counter() - t0)

        # The floor: exactly the windows the build wrote, transcoded with all cores and nothing else.
        manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
        jobs = [(records[m["clip_id"]], m["window"], cfg.model_dump_json()) for m in manifest]
        t0 = time.perf_counter()
        with Pool(os.cpu_count()) as pool:
            pool.map(transcode_window, jobs, chunksize=1)
        transcode_s.append(time.perf_counter() - t0)
        shutil.rmtree(out)
        print(f"run {r}: pipeline {pipeline_s[-1]:.1f} s, transcode {transcode_s[-1]:.1f} s", file=sys.stderr)
    ray.shutdown()

    n = result.report["accounting"]["clips_in"]
    p_s, t_s = statistics.median(pipeline_s), statistics.median(transcode_s)
    line = {"clips": n, "windows_written": len(manifest), "cores": os.cpu_count(), "repeats": args.repeats,
            "pipeline_s": [round(x, 2) for x in pipeline_s], "transcode_s": [round(x, 2) for x in transcode_s],
            "pipeline_clips_per_s": round(n / p_s, 3), "transcode_clips_per_s": round(n / t_s, 3),
            "ratio_first": round(transcode_s[0] / pipeline_s[0], 3), "ratio": round(t_s / p_s, 3)}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
