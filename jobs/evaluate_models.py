"""The world models one evaluation compares: one model, the checkpoints of one training run (the paper's Fig. 13
curve), and, when promoting, the version an alias holds.

    candidates = checkpoint_candidates("work/world-model-runs/wm-tiny", out="eval/_models")   # one per checkpoint
    candidate = model_candidate("models:/gaia2-world-model-tiny@candidate", "work")

A checkpoint is exported (its EMA weights and the latent statistics its config trained with) into a model
directory under the evaluation's output, once; every candidate is then a model directory or URI that the
generation job's ``resolve_models`` loads.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass

from jobs.registry import ModelInputError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Candidate:
    tag: str                        # its folder under generations/ and its name in the report: model, step-00000300
    world_model: str                # export directory or MLflow model URI
    step: int | None = None         # training step (a checkpoint, or an export's recorded step)
    source: str | None = None       # the checkpoint directory it was exported from
    role: str = "evaluated"         # "evaluated" | "holder" (the version an alias held, for --promote)


def _checkpoint_dirs(spec: str) -> list[str]:
    """A checkpoint directory, a training run's directory of ``checkpoint-<step>`` folders, or a comma list of
    either -> checkpoint directories in step order."""
    dirs: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if not os.path.isdir(part):
            raise ModelInputError(f"checkpoints {part!r}: not a directory (expected a training run's folder of "
                                  f"checkpoint-<step> directories, or one of them)")
        if glob.glob(os.path.join(part, "extra-*.json")):
            dirs.append(part)
            continue
        found = [d for d in glob.glob(os.path.join(part, "checkpoint-*")) if CHECKPOINT.match(os.path.basename(d))]
        if not found:
            raise ModelInputError(f"checkpoints {part!r}: holds no checkpoint-<step> directories (Ray Train writes "
                                  f"them under <storage>/<job name>/)")
        dirs.extend(found)
    return sorted(set(dirs), key=lambda d: (_step_of(d), d))


def _step_of(directory: str) -> int:
    from jobs.checkpoint import read_extra

    return int(read_extra(directory, 0)["step"])


def export_checkpoint(directory: str, out_dir: str) -> tuple[str, int]:
    """A world-model training checkpoint -> a model directory of its EMA weights (exported once, reused after)
    and its step. ``ModelInputError`` for a checkpoint of another model or one that cannot be read."""
    from gaia2.export import save_pretrained
    from jobs import checkpoint as ckpt
    from jobs.specs import SPECS

    try:
        extra = ckpt.read_extra(directory, 0)
    except ckpt.CheckpointError as err:
        raise ModelInputError(f"checkpoint {directory}: {err}") from None
    step = int(extra["step"])
    target = os.path.join(out_dir, f"step-{step:08d}")
    marker = os.path.join(target, "source.json")
    try:
        with open(marker) as f:
            if json.load(f)["checkpoint"] == os.path.abspath(directory):
                return os.path.join(target, "world_model"), step
    except (OSError, ValueError, KeyError):
        pass
    spec = SPECS["world-model"]
    try:
        cfg = spec.config_type().model_validate(extra["config"])
    except Exception as err:   # pydantic's ValidationError: this is not a world model's training config
        raise ModelInputError(f"checkpoint {directory}: not a world-model training checkpoint "
                              f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    model = spec.build_model(cfg)
    try:
        ckpt.load_module(model, directory, "ema")
    except Exception as err:
        raise ModelInputError(f"checkpoint {directory}: cannot load its EMA weights ({err})") from None
    path = save_pretrained(os.path.join(target, "world_model"), model, spec.export_format,
                           extra={"step": step, "ema_decay": cfg.optim.ema_decay, **spec.export_extra(cfg),
                                  "checkpoint": os.path.abspath(directory)})
    with open(marker, "w") as f:
        json.dump({"checkpoint": os.path.abspath(directory), "step": step}, f)
    return path, step


def checkpoint_candidates(spec: str, out_dir: str) -> list[Candidate]:
    """One candidate per checkpoint of ``spec`` (``_checkpoint_dirs``), exported under ``out_dir``."""
    out = []
    for directory in _checkpoint_dirs(spec):
        path, step = export_checkpoint(directory, out_dir)
        out.append(Candidate(f"step-{step:08d}", path, step, os.path.abspath(directory)))
    steps = [c.step for c in out]
    if len(set(steps)) != len(steps):
        raise ModelInputError(f"checkpoints {spec!r}: several checkpoints at the same step {steps} (give the "
                              f"checkpoints of one training run)")
    return out


def recorded_step(model_dir: str) -> int | None:
    """The training step an export records (``config.json``'s ``step``), if any."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            step = json.load(f).get("step")
        return int(step) if step is not None else None
    except (OSError, ValueError, TypeError):
        return None


def tag_for(uri: str) -> str:
    """A folder-safe name for a model reference: ``models:/gaia2-world-model-tiny/3`` -> ``gaia2-world-model-tiny-v3``,
    a directory -> its name."""
    m = re.match(r"^models:/([^/@]+)/(\d+)$", uri)
    if m:
        return f"{m.group(1)}-v{m.group(2)}"
    base = os.path.basename(uri.rstrip("/")) or "model"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", base)[:100]
