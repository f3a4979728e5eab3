"""One checkpoint path for every trainable model and every parallelism (torchtitan's checkpointer is the
model): ``torch.distributed.checkpoint`` (DCP) for the tensors, a JSON file per rank beside them.

A trainer (``jobs.trainable.Trainer``) names its stateful parts: modules (saved with
``get_model_state_dict``) and (module, optimizer) pairs (``get_optimizer_state_dict``, keyed by
parameter names). Under DDP the parts are plain replicated tensors and DCP writes each once; under FSDP2
they are DTensor shards and every rank writes its own. Every rank writes into its own directory
(``save``) and Ray Train merges them into one checkpoint:

    .metadata                 DCP's index of every tensor (written by rank 0)
    __<rank>_0.distcp         the tensors this rank wrote
    extra-<rank>.json         format, step, data position (epoch, batch), world size, the job's config,
                              this rank's random generator states (base64), SHA-256 of its .distcp files

Loading never unpickles anything a checkpoint chose: DCP's ``.metadata`` (a pickle) is read with an
unpickler that admits only DCP's own metadata classes, and its byte entries (optimizer hyper-parameters)
with ``torch.load(weights_only=True)``. A checkpoint is validated before it is loaded (every rank's JSON,
file hashes, the model config it was written for); ``restore`` walks back from the latest checkpoint to
the newest valid one, warning about each it skips, with all ranks agreeing on the choice.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import io
import json
import os
import pickle
import warnings
from typing import Any, Iterable, Iterator

import torch
from torch import nn

FORMAT, VERSION = "gaia2-checkpoint", 1
METADATA = ".metadata"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing or corrupt files, unsafe content, another model's config."""


def extra_file(rank: int) -> str:
    return f"extra-{rank}.json"


# ---------------------------------------------------------------------------------------- safe reading
_DCP_METADATA = "torch.distributed.checkpoint.metadata"


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's .metadata may reference DCP's metadata classes, torch.Size, dtypes, layouts and paths; any
    other global (a function to call, a class to build) means the file was not written by DCP."""

    def find_class(self, module: str, name: str) -> Any:
        import pathlib

        import torch.distributed.checkpoint.filesystem as dcp_fs
        import torch.distributed.checkpoint.metadata as dcp_md

        if module == _DCP_METADATA and isinstance(getattr(dcp_md, name, None), type):
            return getattr(dcp_md, name)
        if module == dcp_fs.__name__ and name == "_StorageInfo":
            return dcp_fs._StorageInfo
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        if module == "torch.serialization" and name == "_get_layout":
            return torch.serialization._get_layout
        if module == "pathlib" and name in ("PosixPath", "PurePosixPath", "Path"):
            return getattr(pathlib, name)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise CheckpointError(f"{METADATA}: refers to {module}.{name}, which a DCP checkpoint never holds "
                              f"(refusing to unpickle it)")


def read_metadata(directory: str):
    path = os.path.join(directory, METADATA)
    try:
        with open(path, "rb") as f:
            return _MetadataUnpickler(f).load()
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def _reader(directory: str):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any):
            metadata = read_metadata(directory)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(directory)


def _planner():
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element   # what DefaultLoadPlanner itself uses

    class SafePlanner(DefaultLoadPlanner):
        """Byte entries (non-tensor state such as learning rates and betas) are read as weights-only data."""

        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            try:
                obj = torch.load(value, weights_only=True)
            except Exception as err:
                # torch's message goes on to advise a full unpickling load; keep only what the entry held.
                why = next((line.split("error:", 1)[1].strip() for line in str(err).splitlines()
                            if "WeightsUnpickler error:" in line), str(err).splitlines()[0])
                raise CheckpointError(f"entry {read_item.dest_index.fqn}: not plain data ({why})") from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    # Partial: a fresh optimizer lists (zero) state for every parameter, while a saved one has state only for
    # parameters that ever had a gradient (e.g. not for an input the data never has).
    return SafePlanner(allow_partial_load=True)


def _single_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized())


@contextlib.contextmanager
def _no_single_process_warning() -> Iterator[None]:
    """DCP warns that it assumes a single process whenever there is no process group; here that is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def load_tensors(state: dict, directory: str, no_dist: bool | None = None) -> None:
    """Fill ``state`` (nested dicts of tensors, in place) from a DCP checkpoint, safely. ``no_dist``: read
    in this process alone (default: when there is no process group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    no_dist = _single_process() if no_dist is None else no_dist
    try:
        with _no_single_process_warning():
            dcp.load(state, storage_reader=_reader(directory), planner=_planner(), no_dist=no_dist)
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as err:   # CheckpointException is a BaseException
        # DCP gathers the ranks' errors into one exception whose text holds their tracebacks: keep the cause.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        cause = next((line.split(": ", 1)[1] for line in reversed(lines) if "Error: " in line), lines[-1] if lines else "")
        raise CheckpointError(f"{directory}: cannot be loaded ({cause})") from None


# ---------------------------------------------------------------------------------------- trainer state
def _parts_state(trainer: Any) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    out = {}
    for name, part in trainer.stateful().items():
        if isinstance(part, nn.Module):
            out[name] = get_model_state_dict(part)
        else:
            module, optimizer = part
            out[name] = get_optimizer_state_dict(module, optimizer)
    return out


def _set_parts_state(trainer: Any, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    for name, part in trainer.stateful().items():
        if isinstance(part, nn.Module):
            set_model_state_dict(part, state[name])
        else:
            set_optimizer_state_dict(part[0], part[1], state[name])


def _encode_rng(states: dict[str, torch.Tensor]) -> dict[str, str]:
    return {k: base64.b64encode(v.cpu().numpy().tobytes()).decode() for k, v in states.items()}


def _decode_rng(states: dict[str, str]) -> dict[str, torch.Tensor]:
    return {k: torch.frombuffer(bytearray(base64.b64decode(v)), dtype=torch.uint8) for k, v in states.items()}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(directory: str, trainer: Any, rank: int, world: int, data: dict, config: dict) -> None:
    """Every rank, collectively: the trainer's tensors with DCP into ``directory`` (this rank's own), and
    this rank's JSON. ``data``: the data position {"epoch", "batch"}; ``config``: the job's config."""
    import torch.distributed.checkpoint as dcp

    os.makedirs(directory, exist_ok=True)
    with _no_single_process_warning():
        dcp.save(_parts_state(trainer), checkpoint_id=directory, no_dist=_single_process())
    files = {os.path.basename(p): _sha256(p) for p in sorted(glob.glob(os.path.join(directory, "*.distcp")))}
    if os.path.exists(os.path.join(directory, METADATA)):
        files[METADATA] = _sha256(os.path.join(directory, METADATA))
    extra = {"format": FORMAT, "version": VERSION, "rank": rank, "world": world, "step": trainer.step,
             "data": data, "config": config, "rng": _encode_rng(trainer.rng_state()), "files": files}
    with open(os.path.join(directory, extra_file(rank)), "w") as f:
        json.dump(extra, f, sort_keys=True)


def read_extra(directory: str, rank: int) -> dict:
    path = os.path.join(directory, extra_file(rank))
    try:
        with open(path) as f:
            extra = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (a partial checkpoint)") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(extra, dict) or extra.get("format") != FORMAT or extra.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{VERSION} file")
    return extra


def validate(directory: str, rank: int, world: int, config: dict | None) -> dict:
    """This rank's view of a checkpoint -> its extra state; ``CheckpointError`` says what is wrong.

    Checks this rank's JSON and the hashes of the files it lists, the world size, that every rank's JSON
    is there, DCP's metadata (read safely) and that every file it points into exists and is long
    enough, and that the checkpoint was written for the same ``model`` configuration."""
    extra = read_extra(directory, rank)
    if extra["world"] != world:
        raise CheckpointError(f"{directory}: written by {extra['world']} workers, this run has {world} "
                              f"(resume with workers.num_workers={extra['world']} or use a new job name)")
    missing = [extra_file(r) for r in range(world) if not os.path.exists(os.path.join(directory, extra_file(r)))]
    if missing:
        raise CheckpointError(f"{directory}: partial checkpoint, {missing} missing")
    for name, digest in extra["files"].items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: missing (a partial checkpoint)")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path}: corrupt (its SHA-256 differs from the one written with it)")
    metadata = read_metadata(directory)
    sizes: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = info.offset + info.length
        sizes[str(info.relative_path)] = max(sizes.get(str(info.relative_path), 0), end)
    for name, end in sizes.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path) or os.path.getsize(path) < end:
            raise CheckpointError(f"{path}: missing or truncated (a partial checkpoint)")
    if config is not None and extra.get("config", {}).get("model") != config.get("model"):
        raise CheckpointError(f"{directory}: written for another model configuration; resume with the same "
                              f"model config or use a new job name")
    return extra


def load(directory: str, trainer: Any, extra: dict) -> None:
    """Restore ``trainer`` from a validated checkpoint: step and random generators first (they decide which
    parts exist, e.g. the tokenizer's GAN stage), then every part's tensors."""
    trainer.restore(int(extra["step"]), _decode_rng(extra["rng"]))
    state = _parts_state(trainer)
    load_tensors(state, directory)
    _set_parts_state(trainer, state)


def _all_agree(ok: bool) -> bool:
    """True when every rank says ok (one rank alone, or no process group: its own answer)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def restore(candidates: Iterable[Any], trainer: Any, rank: int, world: int, config: dict,
            local_dir) -> tuple[Any, dict, list[str]] | None:
    """Load the newest valid checkpoint of ``candidates`` (newest first; each opened as a local directory by
    ``local_dir(candidate)``, a context manager) -> (the candidate, its extra state, the reasons the newer ones
    were skipped), or None when none is valid. Each one skipped is warned about, naming it and why."""
    skipped: list[str] = []
    for candidate in candidates:
        with local_dir(candidate) as directory:
            try:
                extra, reason = validate(directory, rank, world, config), ""
            except CheckpointError as err:
                extra, reason = None, str(err)
            if not _all_agree(extra is not None):
                skipped.append(f"{getattr(candidate, 'path', candidate)}: {reason or 'invalid on another worker'}")
                warnings.warn(f"skipping checkpoint {skipped[-1]}; trying the one before", stacklevel=2)
                continue
            load(directory, trainer, extra)
            return candidate, extra, skipped
    return None


def load_module(module: nn.Module, directory: str, part: str) -> nn.Module:
    """One part of a checkpoint (e.g. "ema") into a plain module on this process, without a process group
    (the driver's export: FSDP shards are gathered into full tensors)."""
    read_metadata(directory)   # refuse an unsafe .metadata before DCP touches it
    state = {part: module.state_dict()}
    load_tensors(state, directory, no_dist=True)
    module.load_state_dict(state[part])
    return module
