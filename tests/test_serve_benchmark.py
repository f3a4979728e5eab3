"""benchmarks/serve.py in a tiny, fast configuration, in-process against the session's Ray and Serve (the
``serve_http`` / ``serve_models`` fixtures): the result has every figure, and the overload phase loses and fails
nothing (every request is accepted or refused with 503 + Retry-After, and every accepted one finishes)."""

from __future__ import annotations

import json
import os
import sys

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.serve import APPS, Settings, run, table  # noqa: E402

FIGURES = ("requests", "done", "throughput", "p50_s", "p99_s", "mean_batch", "sampler_s_per_request", "decode_s",
           "server_s", "client_overhead_s", "sampler_busy", "decoder_busy", "wall_s")


def test_tiny_benchmark_run_reports_every_figure_and_loses_nothing_under_overload(serve_http, serve_models, tmp_path):
    wm, tok = serve_models
    s = Settings(concurrency=(1, 4), requests_per_client=1, min_requests=4, sampler_steps=8, latent_steps=1,
                 cameras=1, max_batch_size=4, overload_queued=2, overload_factor=10, warmup=1, deadline_s=90.0)
    lines: list[str] = []
    result = run(serve_http, wm, tok, str(tmp_path), s, prefix="benchtest", log=lines.append)
    json.loads(json.dumps(result))                      # the last line of the script: one JSON object

    assert set(result["concurrency"]) == {"1", "4"}
    for c, row in result["concurrency"].items():
        for app in APPS:
            r = row[app]
            assert all(k in r for k in FIGURES), (c, app, sorted(r))
            assert r["done"] == r["requests"] == max(s.min_requests, int(c)), (c, app, r["statuses"], r["errors"])
            assert r["throughput"] > 0 and 0 < r["p50_s"] <= r["p99_s"]
        assert row["unbatched"]["mean_batch"] == 1.0 and row["speedup"] > 0
    assert result["batching_speedup"] == result["concurrency"]["4"]["speedup"]   # no C = 8 here: the middle one

    o = result["overload"]
    assert o["fired"] == 20 and o["max_queued"] == 2
    assert o["failed"] == 0 and o["lost"] == 0, o
    assert o["accepted"] >= 1 and o["rejected_503"] >= 1 and o["accepted"] + o["rejected_503"] == o["fired"], o
    assert o["done"] == o["accepted"]

    comp = result["components"]
    assert comp["sample_s_per_request_batch_1"] > 0 and comp["sampler_batching_bound"] > 0
    assert "batching speedup at C=4" in table(result) and any(line.startswith("deployed") for line in lines)
    # Everything it deployed is gone again.
    assert requests.get(f"http://127.0.0.1:{serve_http}/benchtest-batched/readyz", timeout=10).status_code == 404
