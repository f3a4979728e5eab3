"""Transient vs permanent failures (pipelines/retry.py): the classifier, the retry loop, out of memory halving
the batch of each network stage, Ray's re-runs of a dead worker's task, and a shard build that loses a worker
mid-decode and still writes the same bytes as an undisturbed one."""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import os
import re
import select
import shutil
import signal
import struct
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from gaia2.config.shards import RetryConfig, load_shard_config
from gaia2.schema.errors import ClipError, Reason
from pipelines.rejects import Reject, batch_rejects, map_rows
from pipelines.shards.common import record_text
from pipelines.retry import (RetriesExhausted, actor_retry_args, is_out_of_memory, is_transient, retrying,
                             retrying_batched, task_retry_args)

OVERRIDES = {"window": {"frames": 16, "hop": 8}, "image": {"height": 32, "width": 64},
             "balance": {"min_stride_s": 0.5}, "shards": {"target_mb": 0.4}, "detection": {"max_agents": 8}}
NO_WAIT = RetryConfig(attempts=3, backoff_s=0)


def _config(clip_model: str | None = None, **retry):
    return load_shard_config("tiny", overrides={**OVERRIDES, "embedding": {"clip_path": clip_model},
                                                "retry": {"backoff_s": 0, **retry}})


class Flaky:
    """fn(*args) failing with ``errors`` in turn, then returning ``value``; ``calls`` records the arguments."""

    def __init__(self, *errors: BaseException, value=None):
        self.errors, self.value, self.calls = list(errors), value, []

    def __call__(self, *args):
        self.calls.append(args)
        if self.errors:
            raise self.errors.pop(0)
        return self.value


# ---------------------------------------------------------------------------------------------- classifier

def test_broken_inputs_and_bugs_are_permanent_and_machine_trouble_is_transient():
    import torch

    permanent = [ClipError(Reason.TRUNCATED_VIDEO, "front: frame 7"),
                 OSError(errno.ENOENT, "No such file or directory", "/clips/a/front.mp4"),   # FileNotFoundError
                 PermissionError(errno.EACCES, "Permission denied"), IsADirectoryError(errno.EISDIR, "a dir"),
                 ValueError("bad shape"), KeyError("boxes"), RuntimeError("CUDA error: device-side assert triggered")]
    transient = [OSError(errno.EIO, "Input/output error"), ConnectionResetError("connection reset by peer"),
                 TimeoutError("read timed out"), OSError("AWS Error NETWORK_CONNECTION during GetObject")]
    oom = [MemoryError(), torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
           RuntimeError("[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't allocate memory"),
           OSError(errno.ENOMEM, "Cannot allocate memory")]
    assert isinstance(permanent[1], FileNotFoundError)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)
    assert [is_transient(e) for e in transient + oom] == [True] * len(transient + oom)
    assert [is_out_of_memory(e) for e in permanent + transient + oom] == [False] * 11 + [True] * 4


# ---------------------------------------------------------------------------------------------- retry loop

def test_a_transient_error_is_retried_with_doubling_backoff_until_it_succeeds():
    fn, waits = Flaky(OSError(errno.EIO, "flaky read"), OSError(errno.EIO, "flaky read"), value="frames"), []
    assert retrying(fn, RetryConfig(attempts=3, backoff_s=0.5), sleep=waits.append) == "frames"
    assert len(fn.calls) == 3 and waits == [0.5, 1.0]


def test_retries_run_out_after_the_configured_attempts():
    fn, waits = Flaky(*[TimeoutError("read timed out")] * 5), []
    with pytest.raises(RetriesExhausted) as info:
        retrying(fn, RetryConfig(attempts=3, backoff_s=0.25), sleep=waits.append)
    assert len(fn.calls) == 3 and waits == [0.25, 0.5]
    assert str(info.value) == "transient error after 3 attempts: TimeoutError: read timed out"
    assert isinstance(info.value.__cause__, TimeoutError)


def test_a_permanent_error_is_not_retried():
    fn, waits = Flaky(ClipError(Reason.UNREADABLE_VIDEO, "front: decoder cannot open it")), []
    with pytest.raises(ClipError):
        retrying(fn, RetryConfig(attempts=5, backoff_s=1), sleep=waits.append)
    assert len(fn.calls) == 1 and waits == []


def test_out_of_memory_in_a_batched_call_halves_the_batch_without_spending_attempts():
    sizes, waits = [], []

    def forward(batch: int) -> str:
        sizes.append(batch)
        if batch > 2:
            raise MemoryError()
        return f"ran {batch} at a time"

    assert retrying_batched(forward, 8, RetryConfig(attempts=2, backoff_s=1), sleep=waits.append) == "ran 2 at a time"
    assert sizes == [8, 4, 2] and waits == []


def test_out_of_memory_at_a_batch_of_one_is_retried_then_exhausted():
    import torch

    fn, waits = Flaky(*[torch.cuda.OutOfMemoryError("CUDA out of memory")] * 9), []
    with pytest.raises(RetriesExhausted, match=r"^transient error after 2 attempts, batch halved to 1: "
                                               r"OutOfMemoryError: CUDA out of memory$"):
        retrying_batched(fn, 4, RetryConfig(attempts=2, backoff_s=0.5), sleep=waits.append)
    assert [args[0] for args in fn.calls] == [4, 2, 1, 1] and waits == [0.5]
    # A transient error other than memory keeps the batch and spends attempts.
    fn = Flaky(ConnectionResetError("reset"), value="ok")
    assert retrying_batched(fn, 4, NO_WAIT) == "ok" and [a[0] for a in fn.calls] == [4, 4]


def test_map_rows_retries_transient_rows_and_says_when_tries_ran_out():
    flaky = Flaky(OSError(errno.EIO, "flaky read"), OSError(errno.EIO, "flaky read"), value="ok")
    down = Flaky(*[ConnectionError("connection refused")] * 3)
    broken = Flaky(ClipError(Reason.TRUNCATED_VIDEO, "front: frame 7"))
    rows = [flaky, down, broken]
    results, rejects = map_rows(lambda i: rows[i](), 3, "decode", Reason.DECODE_FAILED, None, retry=NO_WAIT)
    assert results == ["ok", None, None]
    assert rejects == [None, Reject("decode", "decode_failed",
                                    "transient error after 3 attempts: ConnectionError: connection refused"),
                       Reject("decode", "truncated_video", "front: frame 7")]
    assert [len(r.calls) for r in rows] == [3, 3, 1]
    # Without ``retry`` (ingest, pack): the first failure rejects, as before.
    once = Flaky(OSError(errno.EIO, "flaky read"), value="ok")
    assert map_rows(lambda i: once(), 1, "pack", Reason.DECODE_FAILED, None)[1][0].detail == "OSError: [Errno 5] flaky read"


# ---------------------------------------------------------------------------------------------- the stages

@pytest.fixture(scope="module")
def window_rows(synth_clips) -> dict[str, np.ndarray]:
    """A batch of two planned windows of one synthetic clip."""
    from pipelines.shards.ingest import IngestClips
    from pipelines.shards.sources import list_clips

    rows = IngestClips(_config().model_dump_json()).ingest(list_clips(synth_clips)[:1])[:2]
    return {c: np.asarray([r[c] for r in rows], dtype=object) for c in ("key", "window", "clip_json")}


def test_decode_retries_a_flaky_read_and_rejects_a_vanished_file_at_once(window_rows, monkeypatch):
    import gaia2.video.decode as video
    from pipelines.shards.decode import DecodeWindows

    stage = DecodeWindows(_config().model_dump_json())
    calm = stage(window_rows)
    real, reads = video.read_bytes, []

    def flaky(uri: str) -> bytes:   # the first two reads of the batch fail, as a network disk might
        reads.append(uri)
        if len(reads) <= 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(uri)

    monkeypatch.setattr(video, "read_bytes", flaky)
    out = stage(window_rows)
    cameras = len(json.loads(record_text(window_rows["clip_json"][0]))["cameras"])
    assert batch_rejects(out, 2) == [None, None] and len(reads) == 2 + 2 * cameras   # window 0 read 3 times
    assert all(np.array_equal(a, b) for a, b in zip(out["frames"], calm["frames"]))

    reads.clear()
    monkeypatch.setattr(video, "read_bytes", lambda uri: reads.append(uri) or real(uri + ".gone"))
    gone = batch_rejects(stage(window_rows), 2)
    assert [(r.stage, r.reason) for r in gone] == [("decode", "missing_camera")] * 2 and len(reads) == 2
    assert "video file not found" in gone[0].detail


def test_windows_of_one_clip_decode_shared_frames_once_and_fall_back_one_by_one(synth_clips, monkeypatch):
    """DecodeWindows.shared_frames: a batch's windows of one clip open each video once, and get the pixels each
    would decode alone; when the shared decode fails, each window decodes (and is retried or rejected) alone."""
    import gaia2.video.decode as video
    from pipelines.shards.decode import DecodeWindows
    from pipelines.shards.ingest import IngestClips
    from pipelines.shards.sources import list_clips

    rows = IngestClips(_config().model_dump_json()).ingest(list_clips(synth_clips)[:1])[:3]
    assert len(rows) == 3 and len({r["clip_json"] for r in rows}) == 1   # three windows, one record
    alone = {c: np.asarray([r[c] for r in rows], dtype=object) for c in ("key", "window", "clip_json")}
    together = {**alone, "clip_id": np.asarray([r["clip_id"] for r in rows], dtype=object)}
    stage = DecodeWindows(_config().model_dump_json())
    real, reads = video.read_bytes, []
    monkeypatch.setattr(video, "read_bytes", lambda uri: reads.append(uri) or real(uri))
    one_by_one = stage(alone)
    cameras = len(json.loads(record_text(rows[0]["clip_json"]))["cameras"])
    assert len(reads) == 3 * cameras
    reads.clear()
    shared = stage(together)
    assert len(reads) == cameras == len(set(reads))   # each video read and opened once for the three windows
    assert batch_rejects(shared, 3) == [None] * 3
    for a, b in zip(shared["frames"], one_by_one["frames"]):
        assert a.shape == b.shape and a.flags.c_contiguous and np.array_equal(a, b)
    assert list(shared["cameras_json"]) == list(one_by_one["cameras_json"])

    def first_read_fails(uri: str) -> bytes:
        reads.append(uri)
        if len(reads) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(uri)

    reads.clear()   # the shared decode's first read fails: it is given up, and the three windows decode alone
    monkeypatch.setattr(video, "read_bytes", first_read_fails)
    fallback = stage(together)
    assert batch_rejects(fallback, 3) == [None] * 3 and len(reads) == 1 + 3 * cameras
    assert all(np.array_equal(a, b) for a, b in zip(fallback["frames"], one_by_one["frames"]))


def test_detector_out_of_memory_halves_images_per_forward(window_rows):
    import torch

    from pipelines.shards.decode import DecodeWindows
    from pipelines.shards.detect import DetectAgents

    decoded = DecodeWindows(_config().model_dump_json())(window_rows)
    stage = DetectAgents("ground_truth", None, 8, 0.3, retry=NO_WAIT)
    calm = stage(decoded)
    truth, sizes = stage.detector, []

    class SmallGPU:   # a network detector whose device holds 24 images (a window is 6 cameras x 16 frames)
        requires_clip, max_images_per_forward = True, None

        def detect(self, frames, cameras, timestamps, clip):
            sizes.append(self.max_images_per_forward)
            if self.max_images_per_forward > 24:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
            return truth.detect(frames, cameras, timestamps, clip)

    stage.detector = SmallGPU()
    out = stage(decoded)
    assert sizes == [96, 48, 24] * 2 and stage.detector.max_images_per_forward is None   # each window from the top
    assert batch_rejects(out, 2) == [None, None]
    assert all(np.array_equal(a, b) for a, b in zip(out["boxes"], calm["boxes"]))


def test_clip_out_of_memory_halves_images_per_forward(clip_model):
    from pipelines.shards.embed import EmbedClip

    rng = np.random.default_rng(0)
    batch = {"frames": np.empty(3, dtype=object)}
    for i in range(3):
        batch["frames"][i] = rng.integers(0, 256, (6, 3, 32, 64, 3), dtype=np.uint8)
    stage = EmbedClip(clip_model, device="cpu", retry=NO_WAIT)
    calm = stage(batch)
    embed, sizes = stage.embedder.embed, []

    def small_memory(images):
        sizes.append(stage.embedder.batch_size)
        if stage.embedder.batch_size > 5:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't allocate memory")
        return embed(images)

    stage.embedder.embed = small_memory
    out = stage(batch)
    assert sizes == [18, 9, 4] and stage.embedder.batch_size == 256 and batch_rejects(out, 3) == [None] * 3
    for a, b in zip(out["clip"], calm["clip"]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_latent_encoder_out_of_memory_halves_cameras_per_call_then_rejects(tmp_path):
    import torch

    from gaia2.tokenizer import Tokenizer, tiny
    from gaia2.tokenizer.export import save_tokenizer
    from pipelines.tokenizer.latents_stages import EncodeLatents

    torch.manual_seed(0)
    path = save_tokenizer(str(tmp_path / "tok"), Tokenizer(tiny()))
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 32, 64, 3), dtype=np.uint8)   # (N, T, H, W, 3)
    batch = {"shard": np.asarray(["train/shard-000000"], dtype=object), "key": np.asarray(["k0"], dtype=object),
             "frames": np.empty(1, dtype=object), "head": np.asarray([b""], dtype=object),
             "tail": np.asarray([b""], dtype=object)}
    batch["frames"][0] = frames
    stage = EncodeLatents(path, mode="sample", retry=NO_WAIT)
    calm = stage(batch)["latents"][0]                                    # (T', N, L, H', W')
    encode, cameras = stage.model.encode, []

    def small_gpu(video, limit=1):
        cameras.append(len(video))
        if len(video) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return encode(video)

    stage.model.encode = small_gpu
    out = stage(batch)
    assert cameras == [4, 2] + [1] * 4 and batch_rejects(out, 1) == [None]
    np.testing.assert_allclose(out["latents"][0], calm, rtol=1e-5, atol=1e-5)   # same noise, any split

    stage.model.encode = lambda video: small_gpu(video, limit=0)
    cameras.clear()
    out = stage(batch)
    assert cameras == [4, 2, 1, 1, 1] and out["latents"][0].shape == (0,) * 5
    assert batch_rejects(out, 1) == [Reject("encode", "decode_failed", "transient error after 3 attempts, batch "
                                            "halved to 1: OutOfMemoryError: CUDA out of memory")]


# ---------------------------------------------------------------------------------------------- Ray re-runs

def die_once(batch: dict, marker: str) -> dict:
    """A map_batches task whose first run loses its worker (SIGKILL: nothing of Python's cleanup runs)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return batch


class DieOnce:
    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, batch: dict) -> dict:
        return die_once(batch, self.marker)


def test_the_ray_retry_arguments_rerun_a_dead_worker_task_and_bound_the_reruns(ray_session, tmp_path):
    ray = ray_session
    items = [{"i": i} for i in range(4)]
    three = RetryConfig(attempts=3)
    assert task_retry_args(three) == {"max_retries": 2}
    assert actor_retry_args(three) == {"max_restarts": -1, "max_task_retries": 2}

    task = ray.data.from_items(items).map_batches(die_once, fn_kwargs={"marker": str(tmp_path / "task")},
                                                  **task_retry_args(three))
    assert sorted(r["i"] for r in task.take_all()) == [0, 1, 2, 3]
    actor = ray.data.from_items(items).map_batches(
        DieOnce, fn_constructor_kwargs={"marker": str(tmp_path / "actor")}, num_cpus=0.25,
        compute=ray.data.ActorPoolStrategy(size=1), **actor_retry_args(three))
    assert sorted(r["i"] for r in actor.take_all()) == [0, 1, 2, 3]
    assert os.path.exists(tmp_path / "task") and os.path.exists(tmp_path / "actor")
    # One attempt: a lost worker fails the stage instead of running it again.
    once = ray.data.from_items(items).map_batches(die_once, fn_kwargs={"marker": str(tmp_path / "once")},
                                                  **task_retry_args(RetryConfig(attempts=1)))
    with pytest.raises(Exception, match="(?i)worker|crash|died"):
        once.take_all()


# ---------------------------------------------------------------------------------------------- a killed build

def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (this test's Ray: raylet, workers), from /proc."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


# The window stage's worker title: ray::MapBatches(window_sample_batch) with CLIP in the task (the tiny preset),
# ray::MapBatches(window_batch) with CLIP in an actor pool.
WINDOW_TASK = re.compile(r"MapBatches\(window_(sample_)?batch\)")


class KillMidDecode:
    """SIGKILLs the window-stage workers (``WINDOW_TASK``: decode -> detect -> encode ...) once, at
    the moment one of them opens a clip's first camera video to decode it.

    An inotify watch on those videos wakes this thread on every open. Ingest opens them too, before any window
    task exists; the first open while window workers run is a decode, with the clip's other cameras (and the
    task's other windows) still to decode, so the kill lands mid-decode. Every window worker running then is
    killed (the one that opened the file cannot be told apart from another: its read is over in microseconds).
    """

    IN_OPEN = 0x20

    def __init__(self, videos: list[str]):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        for video in videos:
            if self.libc.inotify_add_watch(self.fd, video.encode(), self.IN_OPEN) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {video}")
        self.opens_before = 0                    # opens while no window worker ran (ingest)
        self.killed: list[tuple[int, str]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _window_workers(self) -> list[tuple[int, str]]:
        found = []
        for pid in _descendants(os.getpid()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().replace(b"\0", b" ").decode().strip()
            except OSError:   # gone meanwhile
                continue
            if WINDOW_TASK.search(title):
                found.append((pid, title))
        return found

    def _watch(self) -> None:
        while not self.done.is_set():
            if not select.select([self.fd], [], [], 0.2)[0]:
                continue
            events = os.read(self.fd, 1 << 16)   # struct inotify_event: wd, mask, cookie, len, name[len]
            opens, at = 0, 0
            while at < len(events):
                opens += 1
                at += 16 + struct.unpack_from("iIII", events, at)[3]
            workers = self._window_workers()
            if not workers:
                self.opens_before += opens
                continue
            for pid, title in workers:
                os.kill(pid, signal.SIGKILL)
                self.killed.append((pid, title))
            self.done.set()

    def __enter__(self) -> "KillMidDecode":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(5)
        os.close(self.fd)


def _digests(out: str) -> dict[str, str]:
    paths = sorted(glob.glob(os.path.join(out, "train", "*.tar")) + glob.glob(os.path.join(out, "val", "*.tar")))
    return {os.path.relpath(p, out): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths}


def test_a_worker_killed_mid_decode_is_retried_and_the_output_is_unchanged(ray_session, synth_clips, clip_model,
                                                                          tmp_path):
    from pipelines.shards.build import build_shards

    source = str(tmp_path / "clips")   # four of the nine clips, over the three drives: enough windows for 2 tasks
    for name in ("drive0000-clip00", "drive0000-clip01", "drive0001-clip00", "drive0002-clip00"):
        shutil.copytree(os.path.join(synth_clips, name), os.path.join(source, name))
    cfg = _config(clip_model)
    calm = build_shards(source, str(tmp_path / "calm"), cfg, log=lambda s: None)
    manifest = pq.read_table(os.path.join(calm.out_dir, "manifest.parquet"))
    firsts = []   # each clip's first camera video
    for clip_json in sorted(glob.glob(os.path.join(source, "*", "clip.json"))):
        with open(clip_json) as f:
            firsts.append(os.path.join(os.path.dirname(clip_json), json.load(f)["cameras"][0]["video"]))

    started = time.perf_counter()
    with KillMidDecode(firsts) as trigger:
        disturbed = build_shards(source, str(tmp_path / "killed"), cfg, log=lambda s: None)
    seconds = time.perf_counter() - started
    assert trigger.killed and all(WINDOW_TASK.search(title) for _, title in trigger.killed)
    assert trigger.opens_before > 0   # ingest's opens, before any window task ran

    digests = _digests(calm.out_dir)
    assert digests and {p.split("/")[0] for p in digests} <= {"train", "val"}
    assert _digests(disturbed.out_dir) == digests
    assert pq.read_table(os.path.join(disturbed.out_dir, "manifest.parquet")).to_pylist() == manifest.to_pylist()
    rejects = [pq.read_table(os.path.join(r.out_dir, "rejects.parquet")).to_pylist() for r in (calm, disturbed)]
    assert rejects[0] == rejects[1]
    assert disturbed.report["accounting"] == calm.report["accounting"]
    print(f"killed {trigger.killed} mid-decode; rebuilt identically in {seconds:.1f} s "
          f"(undisturbed {calm.seconds:.1f} s); {len(digests)} shards")
