"""The decoder deployment: the tokenizer's decoder, and the result files.

    files = await decoder.decode.remote({"id", "latents", "rig", "resolved", "models"})

It decodes a generation's latents with the tokenizer that pairs with the world model that produced them
(``models["tokenizer"]``, a registered version or a directory; the last few are kept loaded), writes
``video.mp4``, ``cameras/<name>.mp4``, ``latents.npy`` and ``spec.json`` (``gaia2.generation.video``) into a
staging directory and publishes it into the results store at once. It runs in a thread off the event loop, so
a replica decodes one request while the generator denoises the next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections import OrderedDict

from jobs.serve.models import cache_dir
from jobs.serve.store import ResultStore

log = logging.getLogger("ray.serve")
KEEP_TOKENIZERS = 2


class DecoderDeployment:
    def __init__(self, store_uri: str, workdir: str, device: str = "auto", replica_threads: int = 0) -> None:
        import torch

        if replica_threads > 0:
            torch.set_num_threads(replica_threads)
        self.store = ResultStore(store_uri)
        self.workdir = workdir
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._tokenizers: OrderedDict[str, object] = OrderedDict()
        self._lock = asyncio.Lock()

    async def _tokenizer(self, ref: str):
        async with self._lock:
            if ref in self._tokenizers:
                self._tokenizers.move_to_end(ref)
                return self._tokenizers[ref]
            tok = await asyncio.to_thread(self._load, ref)
            self._tokenizers[ref] = tok
            while len(self._tokenizers) > KEEP_TOKENIZERS:
                self._tokenizers.popitem(last=False)
            return tok

    def _load(self, ref: str):
        import hashlib

        from gaia2.tokenizer.export import load_tokenizer
        from jobs.registry import resolve_model

        where = os.path.join(cache_dir(), "tokenizer-" + hashlib.sha256(ref.encode()).hexdigest()[:16])
        path = resolve_model(ref, self.workdir, "tokenizer", where if ref.startswith(("models:/", "runs:/")) else None)
        log.info("decoder loaded tokenizer %s", ref)
        return load_tokenizer(path, self.device)

    async def decode(self, job: dict) -> dict:
        gid = job["id"]
        if self.store.cancelled(gid):
            return {"error": "cancelled"}
        tok = await self._tokenizer(job["models"]["tokenizer"])
        started = time.perf_counter()
        staged = self.store.staging(gid)
        try:
            files = await asyncio.to_thread(self._write, tok, job, staged)
            self.store.publish(gid, staged)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        log.info("decoded %s in %.2f s", gid, time.perf_counter() - started)
        return {"files": files, "decode_s": time.perf_counter() - started}

    def _write(self, tok, job: dict, staged: str) -> list[str]:
        from gaia2.generation.video import decode_latents, write_outputs

        frames = decode_latents(tok, job["latents"], self.device)
        paths = write_outputs(staged, frames, job["latents"], job["resolved"], job["rig"])
        return sorted(os.path.relpath(p, staged) for p in paths.values())
