"""Shard pipeline throughput against the floor it cannot beat: end to end, steady state and start-up, in one run.

pipeline:  the whole build (ingest checks, selection, decode, detection, CLIP, encode, write) on
           local Ray, in clips/s.
transcode: the same windows that the build wrote, decoded with decord (same scaling and crop) and
           encoded with the same codec settings, in plain Python over all cores (a multiprocessing
           Pool, no Ray), in clips/s.

    python benchmarks/shards.py [--clips 60] [--scale 3] [--duration 4] [--repeats 3] [--workdir bench-work]

Two source sizes, ``--clips`` (N) and ``round(scale * N)`` clips, are built in one Ray session, each into a fresh
output, and each build is followed by the transcode of exactly the windows it wrote; a repeat measures both sizes
(small first in even repeats, large first in odd ones), ``--repeats`` times, alternately (this machine is noisy).

End to end (today's figures, the small size): ``ratio`` = median transcode time / median pipeline time.
``ratio_first`` is the first build of the session, which also pays Ray's one-off start-up (worker processes,
Ray Data's own actors), as a one-build ``gaia2 shards build`` does; every build starts its CLIP actor afresh.
The local Ray keeps idle workers for a minute (see ``ray.init`` below), so later builds reuse the task workers.

Steady state: the median times of each size give two points of time = fixed + windows / rate (the line through
them), for the pipeline and the transcode alike. ``steady_ratio`` = pipeline rate / transcode rate, what the
pipeline achieves once its fixed costs are amortised; ``startup_s`` = the pipeline's intercept, its fixed cost per
build (Ray Data's start, worker and actor start-up, the report); ``transcode_startup_s`` the transcode's (the
Pool). ``first_sample_s`` (median over the small builds) is measured directly: from the call of ``build_shards``
to the first sample staged on disk. The fit charges everything that grows with the source to the rate, ingest's
per-clip checks included (the same clips give the same windows, so windows or clips as the x axis agree).

The last line is one JSON object: {"pipeline_clips_per_s", "transcode_clips_per_s", "ratio", "steady_ratio",
"startup_s", ...}, with the load average at the start and end of the run (other work on the machine slows both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow.parquet as pq  # noqa: E402

from gaia2.config.shards import ShardBuildConfig, load_shard_config  # noqa: E402
from jobs.runtime import LOCAL_SYSTEM_CONFIG  # noqa: E402


def transcode_window(args: tuple[str, int, str]) -> int:
    """Decode one window of every camera exactly as the pipeline does, and encode it the same way."""
    clip_json, index, config_json = args
    from gaia2.curation.windows import cut_windows
    from gaia2.schema.clip import Clip
    from gaia2.video.camera_io import decode_camera
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
        frames = decode_camera(cam, idx, scaled, crop, out_wh, cfg.ingest.tolerance.resolution_px)
        size += len(encode_video(frames, fps, codec))
    return size


def line_fit(x: tuple[float, float], y: tuple[float, float]) -> tuple[float, float]:
    """The line through (x0, y0) and (x1, y1): (intercept, slope)."""
    slope = (y[1] - y[0]) / (x[1] - x[0])
    return y[0] - slope * x[0], slope


class FirstStaged:
    """Seconds from ``start()`` to the first sample staged under ``<out>/_staging`` (a poll every 20 ms)."""

    def __init__(self, out_dir: str):
        self.staging = os.path.join(out_dir, "_staging")
        self.seconds: float | None = None
        self._stop = threading.Event()

    def _poll(self, t0: float) -> None:
        while not self._stop.wait(0.02):
            try:
                shards = [e.path for e in os.scandir(self.staging) if e.is_dir()]
                if any(f.endswith((".tarpart", ".failed.json")) for s in shards for f in os.listdir(s)):
                    self.seconds = time.perf_counter() - t0
                    return
            except FileNotFoundError:   # not created yet, or removed after assembly
                pass

    def start(self) -> "FirstStaged":
        self._thread = threading.Thread(target=self._poll, args=(time.perf_counter(),), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return self.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=60, help="clips of the small build (today's end-to-end figure)")
    p.add_argument("--scale", type=float, default=3.0, help="the large build has round(scale * clips) clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per synthetic clip")
    p.add_argument("--repeats", type=int, default=3, help="alternating pipeline/transcode measurements")
    p.add_argument("--workdir", default="bench-work")
    args = p.parse_args()
    sizes = (args.clips, round(args.scale * args.clips))
    if not args.clips > 0 or sizes[1] <= sizes[0]:
        p.error(f"--clips must be positive and --scale > 1 (sizes {sizes})")
    load_start = os.getloadavg()

    import ray

    from gaia2.embedding.clip import save_random_clip
    from gaia2.schema.clip import dumps
    from gaia2.synth.generate import generate_clips
    from pipelines.shards.build import build_shards
    from pipelines.shards.sources import list_clips, read_record

    work = os.path.abspath(args.workdir)
    sources: dict[int, str] = {}
    records: dict[int, dict[str, str]] = {n: {} for n in sizes}
    for n in sizes:
        sources[n] = os.path.join(work, f"clips-{n}-{args.seed}-{args.duration:g}s")
        if not os.path.isdir(sources[n]):
            generate_clips(sources[n], n, seed=args.seed, duration_s=args.duration, workers=os.cpu_count())
        for ref in list_clips(sources[n]):
            clip = read_record(ref)
            records[n][clip.clip_id] = dumps(clip.to_dict())
    clip_path = save_random_clip(os.path.join(work, "clip-random"))
    cfg = load_shard_config("tiny", overrides={"embedding": {"clip_path": clip_path}, "seed": args.seed})
    # Idle task workers kept for a minute, as the jobs' own local Ray does (jobs/runtime.py).
    ray.init(include_dashboard=False, logging_level="warning", _system_config=LOCAL_SYSTEM_CONFIG)
    ray.data.DataContext.get_current().enable_progress_bars = False

    pipeline_s: dict[int, list[float]] = {n: [] for n in sizes}
    transcode_s: dict[int, list[float]] = {n: [] for n in sizes}
    windows: dict[int, int] = {}
    first_sample_s: list[float] = []
    for r in range(args.repeats):
        for n in (sizes if r % 2 == 0 else sizes[::-1]):
            out = os.path.join(work, f"shards-{n}-{time.time_ns()}")
            watch = FirstStaged(out).start()
            t0 = time.perf_counter()
            result = build_shards(sources[n], out, cfg, log=lambda s: print(s, file=sys.stderr))
            pipeline_s[n].append(time.perf_counter() - t0)
            first = watch.stop()
            if n == sizes[0] and first is not None:
                first_sample_s.append(first)

            # The floor: exactly the windows the build wrote, transcoded with all cores and nothing else.
            manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
            windows[n] = len(manifest)
            jobs = [(records[n][m["clip_id"]], m["window"], cfg.model_dump_json()) for m in manifest]
            t0 = time.perf_counter()
            with Pool(os.cpu_count()) as pool:
                pool.map(transcode_window, jobs, chunksize=1)
            transcode_s[n].append(time.perf_counter() - t0)
            shutil.rmtree(out)
            print(f"run {r}, {n} clips ({windows[n]} windows): pipeline {pipeline_s[n][-1]:.1f} s "
                  f"(timings {result.report['timings']}, first sample {first or float('nan'):.1f} s), "
                  f"transcode {transcode_s[n][-1]:.1f} s", file=sys.stderr)
    ray.shutdown()

    small, large = sizes
    med_p = {n: statistics.median(pipeline_s[n]) for n in sizes}
    med_t = {n: statistics.median(transcode_s[n]) for n in sizes}
    x = (windows[small], windows[large])
    p_fixed, p_per_window = line_fit(x, (med_p[small], med_p[large]))
    t_fixed, t_per_window = line_fit(x, (med_t[small], med_t[large]))
    line = {
        "clips": small, "windows_written": windows[small], "clips_large": large, "windows_written_large": windows[large],
        "cores": os.cpu_count(), "repeats": args.repeats,
        "pipeline_s": [round(s, 2) for s in pipeline_s[small]], "transcode_s": [round(s, 2) for s in transcode_s[small]],
        "pipeline_s_large": [round(s, 2) for s in pipeline_s[large]],
        "transcode_s_large": [round(s, 2) for s in transcode_s[large]],
        "pipeline_clips_per_s": round(small / med_p[small], 3), "transcode_clips_per_s": round(small / med_t[small], 3),
        "ratio_first": round(transcode_s[small][0] / pipeline_s[small][0], 3),
        "ratio": round(med_t[small] / med_p[small], 3),
        "ratio_large": round(med_t[large] / med_p[large], 3),
        "pipeline_windows_per_s_steady": round(1 / p_per_window, 3),
        "transcode_windows_per_s_steady": round(1 / t_per_window, 3),
        "steady_ratio": round(t_per_window / p_per_window, 3),
        "startup_s": round(p_fixed, 2), "transcode_startup_s": round(t_fixed, 2),
        "first_sample_s": round(statistics.median(first_sample_s), 2) if first_sample_s else None,
        "load_avg_start": [round(v, 2) for v in load_start], "load_avg_end": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
