"""Apparent ego motion (``gaia2.evaluation.ego_motion``) against the shards' true ego speed and curvature.

    python benchmarks/ego_motion.py [--shards /tmp/qs1/shards] [--tokenizer DIR] [--limit N] [--workers 2]

Every window of every shard (train and val) is decoded three ways: at the shard's size, at the tokenizer's size
(``decode_camera``), and as the tokenizer's reconstruction of the latter (posterior means; needs ``--tokenizer``,
the export directory of a trained tokenizer). On each, per window and per chunk of 8 frames (one latent):

- speed: Spearman correlation of the estimated and the true mean speed, median |relative error| (it is metric);
- turn: the fraction of windows (chunks) whose estimated yaw-rate sign matches the sign of the true mean
  curvature, among those with |curvature| > 0.002 1/m (and 0.001, 0.0005), and the Spearman correlation of
  the estimated and true yaw rates (speed x curvature).

Truth per chunk is the mean over its frames k*8 .. k*8 + 8 (a chunk spans 8 frame steps). Prints one line
per kind of video and, last, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

THRESHOLDS = (0.002, 0.001, 0.0005)   # 1/m, |mean curvature| above which the turn sign is scored


def _windows(shards: str):
    """(key, sample json, {camera: mp4 bytes}) of every window of the shards under ``shards``/{train,val}."""
    for path in sorted(glob.glob(os.path.join(shards, "*", "shard-*.tar"))):
        rows: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, field = member.name.split(".", 1)
                rows.setdefault(key, {})[field] = tar.extractfile(member).read()
        for key, row in rows.items():
            meta = json.loads(row["json"])
            yield key, meta, {c["name"]: row[f"{c['name']}.mp4"] for c in meta["cameras"]}


def _estimate(job: tuple) -> tuple:
    import cv2

    from gaia2.evaluation import CameraCalibration, estimate_ego_motion

    cv2.setNumThreads(1)   # one process per core
    kind, key, cameras, hw, videos, rate = job
    calibs = {c["name"]: CameraCalibration.from_record(c, hw) for c in cameras}
    t = time.perf_counter()
    est = estimate_ego_motion(videos, calibs, rate, chunk=8)
    return kind, key, est, time.perf_counter() - t


def _summary(rows: list[tuple]) -> dict:
    """rows: (true speed (T,), true curvature (T,), estimate) of one kind of video -> its figures."""
    from gaia2.evaluation import rank_correlation, sign_agreement

    speed, curv, est_speed, est_yaw = [], [], [], []
    c_speed, c_curv, c_est_speed, c_est_yaw = [], [], [], []
    for s, k, est in rows:
        speed.append(s.mean())
        curv.append(k.mean())
        est_speed.append(est.speed)
        est_yaw.append(est.yaw_rate)
        for i, (v, w) in enumerate(zip(est.chunk_speed, est.chunk_yaw_rate)):
            sl = slice(i * est.chunk, i * est.chunk + est.chunk + 1)
            c_speed.append(s[sl].mean())
            c_curv.append(k[sl].mean())
            c_est_speed.append(v)
            c_est_yaw.append(w)
    speed, curv, est_speed, est_yaw, c_speed, c_curv, c_est_speed, c_est_yaw = map(
        np.asarray, (speed, curv, est_speed, est_yaw, c_speed, c_curv, c_est_speed, c_est_yaw))
    out = {"windows": len(speed), "chunks": len(c_speed),
           "speed_spearman": rank_correlation(speed, est_speed),
           "chunk_speed_spearman": rank_correlation(c_speed, c_est_speed),
           "speed_median_rel_error": float(np.median(np.abs(est_speed / np.maximum(speed, 0.5) - 1))),
           "yaw_rate_spearman": rank_correlation(speed * curv, est_yaw),
           "chunk_yaw_rate_spearman": rank_correlation(c_speed * c_curv, c_est_yaw)}
    for th in THRESHOLDS:
        out[f"turn_sign_{th:g}"], out[f"turn_n_{th:g}"] = sign_agreement(curv, est_yaw, th)
        out[f"chunk_turn_sign_{th:g}"], out[f"chunk_turn_n_{th:g}"] = sign_agreement(c_curv, c_est_yaw, th)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", default="/tmp/qs1/shards", help="a shard build (its train/ and val/ shards)")
    p.add_argument("--tokenizer", help="a trained tokenizer's export directory, for its size and reconstructions")
    p.add_argument("--limit", type=int, default=0, help="at most this many windows (0: all)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()

    import torch

    from gaia2.tokenizer.clips import decode_camera, to_model_input, to_uint8

    tok = None
    if args.tokenizer:
        from gaia2.tokenizer.export import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
    t0 = time.perf_counter()
    truth, jobs = {}, []
    for n, (key, meta, mp4) in enumerate(_windows(args.shards)):
        if args.limit and n >= args.limit:
            break
        cams = meta["cameras"]
        truth[key] = (np.asarray(meta["ego"]["speed"]), np.asarray(meta["ego"]["curvature"]))
        rate = float(meta["frame_rate"])
        shard_hw = (int(cams[0]["height"]), int(cams[0]["width"]))
        sizes = {"shard": shard_hw}
        if tok is not None:
            sizes["tokenizer_size"] = (tok.cfg.height, tok.cfg.width)
        for kind, hw in sizes.items():
            videos = {c["name"]: decode_camera(mp4[c["name"]], f"{key}/{c['name']}", (c["height"], c["width"]), hw)
                      for c in cams}
            jobs.append((kind, key, cams, hw, videos, rate))
            if kind == "tokenizer_size":
                names = list(videos)
                t = len(videos[names[0]]) // 8 * 8   # whole latents
                with torch.no_grad():
                    mean, _ = tok.encode(to_model_input(np.stack([videos[c][:t] for c in names])))
                    rec = to_uint8(tok.decode_video(mean))
                jobs.append(("reconstruction", key, cams, hw, dict(zip(names, rec)), rate))
    decode_s = time.perf_counter() - t0

    results: dict[str, list] = {}
    seconds: dict[str, list] = {}
    # spawn, not fork: this process holds torch threads.
    with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=multiprocessing.get_context("spawn")) as pool:
        for kind, key, est, s in pool.map(_estimate, jobs):
            sp, cv = truth[key]
            n = 1 + est.chunk * len(est.chunk_speed)
            results.setdefault(kind, []).append((sp[:n], cv[:n], est))
            seconds.setdefault(kind, []).append(s)
    report = {"shards": os.path.abspath(args.shards), "tokenizer": args.tokenizer, "decode_seconds": round(decode_s, 1)}
    for kind, rows in results.items():
        fig = _summary(rows)
        fig["seconds_per_window"] = float(np.mean(seconds[kind]))
        report[kind] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fig.items()}
        print(f"{kind:>15}: {fig['windows']} windows, speed spearman {fig['speed_spearman']:.3f} "
              f"(chunks {fig['chunk_speed_spearman']:.3f}), median |rel err| {fig['speed_median_rel_error']:.2f}; "
              f"turn sign |k|>0.002: {fig['turn_sign_0.002']:.2f} of {fig['turn_n_0.002']} "
              f"(chunks {fig['chunk_turn_sign_0.002']:.2f} of {fig['chunk_turn_n_0.002']}), "
              f"|k|>0.001: {fig['turn_sign_0.001']:.2f} of {fig['turn_n_0.001']}; "
              f"yaw-rate spearman {fig['yaw_rate_spearman']:.3f}; {fig['seconds_per_window']:.1f} s/window", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
