"""Transient vs permanent failures, and the one retry loop of the window stages.

Permanent: the input is broken, or the code is; another try gives the same answer, so the window is
rejected at once. A ``ClipError`` (a broken record or file), a missing file (``FileNotFoundError`` and
the other ``OSError``s that name a path that is not there or not allowed, and ``gaia2.storage``'s
``StorageError``, a location that cannot be used: ingest opened every video, so a file gone at decode
was deleted or moved, and a second later it is still gone; S3 and GCS answer a 404 consistently, and
``gaia2.storage.read_bytes`` turns theirs into ``FileNotFoundError``), and any exception not listed below.

Transient: the machine, not the input. ``OSError`` (a flaky read, ``ConnectionError``, ``TimeoutError``),
``MemoryError``, and a ``RuntimeError`` that says it is out of memory (``torch.cuda.OutOfMemoryError``,
torch's CPU allocator). ``retrying`` tries ``RetryConfig.attempts`` times, waiting ``backoff_s`` before
the second try and twice as long before each later one, then raises ``RetriesExhausted``, whose message
is the reject detail: "transient error after 3 attempts: OSError: ...".

Out of memory in a batched network call (images per detector or CLIP forward, cameras per tokenizer
call) first halves the batch, down to 1, without spending an attempt (``retrying_batched``).

A worker process that dies (node lost, OOM-killed) raises nothing here: Ray re-runs its task. The
map_batches arguments that bound those re-runs by the same ``attempts`` are ``task_retry_args`` and
``actor_retry_args``; Ray Data 2.60 takes them only through map_batches' ``**ray_remote_args`` (deprecated,
to go in 2.64; there is no named parameter or DataContext setting for them). No Ray import here: the
decode tasks stay light.
"""

from __future__ import annotations

import errno
import gc
import sys
import time
from typing import TYPE_CHECKING, Callable, TypeVar

from gaia2.schema.errors import ClipError
from gaia2.storage import StorageError

if TYPE_CHECKING:
    from gaia2.config.shards import RetryConfig

R = TypeVar("R")

# An OSError naming a path that is missing or refused, or a location that cannot be used (a bad URI, no such
# bucket: StorageError): retrying cannot make it appear.
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError,
                        StorageError)
# How allocators say so: torch.cuda.OutOfMemoryError ("CUDA out of memory"), MPS, torch's CPU allocator
# ("DefaultCPUAllocator: can't allocate memory"), cuDNN/cuBLAS (CUDNN_STATUS_ALLOC_FAILED).
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "alloc_failed")


class RetriesExhausted(Exception):
    """A transient error that outlasted every attempt; ``error`` is the last one."""

    def __init__(self, error: BaseException, attempts: int, batch: int | None = None):
        self.error, self.attempts, self.batch = error, attempts, batch
        halved = f", batch halved to {batch}" if batch is not None else ""
        super().__init__(f"transient error after {attempts} attempt{'s' if attempts != 1 else ''}{halved}: "
                         f"{type(error).__name__}: {error}")


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    if isinstance(err, OSError) and err.errno == errno.ENOMEM:
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _OOM_MESSAGES)


def is_transient(err: BaseException) -> bool:
    """Whether another try of the same work may succeed (see the module docstring)."""
    if isinstance(err, ClipError):
        return False
    if isinstance(err, OSError):
        return not isinstance(err, _PERMANENT_OS_ERRORS)
    return is_out_of_memory(err)


def _release_memory() -> None:
    """After out of memory: collect what the failed call left, and hand cached CUDA blocks back."""
    gc.collect()
    torch = sys.modules.get("torch")   # only where the stage already loaded it
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def retrying(fn: Callable[[], R], retry: RetryConfig, sleep: Callable[[float], None] = time.sleep) -> R:
    """``fn()``, tried up to ``retry.attempts`` times while it fails transiently.

    A permanent error is raised at once, unchanged; the last transient one as ``RetriesExhausted``.
    """
    return retrying_batched(lambda _: fn(), 1, retry, sleep)


def retrying_batched(fn: Callable[[int], R], batch: int, retry: RetryConfig,
                     sleep: Callable[[float], None] = time.sleep) -> R:
    """``fn(batch)``, where ``batch`` is how much ``fn`` may run at once (images per forward, ...).

    Out of memory with ``batch`` > 1 calls again at once with half of it (an attempt is spent only at 1);
    other transient errors are tried ``retry.attempts`` times as in ``retrying``.
    """
    size, attempt = max(1, batch), 1
    while True:
        try:
            return fn(size)
        except Exception as err:
            if not is_transient(err):
                raise
            oom = is_out_of_memory(err)
            halve = oom and size > 1
            if not halve and attempt >= retry.attempts:
                raise RetriesExhausted(err, attempt, size if size < batch else None) from err
            if oom:   # the traceback holds the failed call's tensors: drop it before freeing
                err.__traceback__ = None
        # Outside the except block, so nothing of the failed call is still referenced here.
        if oom:
            _release_memory()
        if halve:
            size //= 2
            continue
        sleep(retry.backoff_s * 2 ** (attempt - 1))
        attempt += 1


def task_retry_args(retry: RetryConfig) -> dict:
    """map_batches arguments of a task stage: a task whose worker died is run again, ``attempts`` tries in all.

    Ray Data's own default is ``max_retries=-1`` (forever; ray/data/_internal/remote_fn.py), so a window
    that kills its worker every time (a real out-of-memory kill) would hold the build up for ever.
    ``retry_exceptions`` stays Ray Data's ([RaySystemError]): the stages turn per-window errors into
    rejects, so an exception that escapes one is a bug, which a retry would only repeat.
    """
    return {"max_retries": retry.attempts - 1}


def actor_retry_args(retry: RetryConfig) -> dict:
    """map_batches arguments of an actor-pool stage: a dead actor is restarted, and its task tried
    ``attempts`` times in all.

    Ray Data's defaults are ``max_restarts=-1`` and ``max_task_retries=-1`` (actor_pool_map_operator.py
    ``_apply_default_remote_args``). Restarts stay unbounded: the pool never replaces an actor that is dead
    for good (it expects restarts "indefinitely until execution finishes"), so a bounded count would leave a
    fixed-size pool short, and a pool of one stalled. The task count is what bounds a poison batch.
    """
    return {"max_restarts": -1, "max_task_retries": retry.attempts - 1}
