"""The jobs' one checkpoint path (DCP + per-rank JSON) in one process: round trip, validation, falling back
from a corrupt or partial latest checkpoint, and loading that never unpickles what a checkpoint chose."""

from __future__ import annotations

import contextlib
import json
import os
import pickle

import pytest
import torch
from torch import nn

from jobs import checkpoint

CONFIG = {"model": {"width": 3}}


class TinyTrainer:
    """The trainer protocol around a linear layer: step, stateful parts, generator state."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = nn.Linear(3, 2)
        self.ema = nn.Linear(3, 2).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2, betas=(0.9, 0.95))
        self.rng = torch.Generator().manual_seed(seed)
        self.step = 0

    def train_step(self) -> float:
        x = torch.randn(4, 3, generator=self.rng)
        loss = self.model(x).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.lerp_(p, 0.5)
        self.step += 1
        return loss.item()

    def stateful(self) -> dict:
        return {"model": self.model, "ema": self.ema, "optimizer": (self.model, self.optimizer)}

    def rng_state(self) -> dict:
        return {"data": self.rng.get_state()}

    def restore(self, step: int, rng: dict) -> None:
        self.step = step
        self.rng.set_state(rng["data"])


def _save(directory, trainer, step_data=None):
    checkpoint.save(str(directory), trainer, rank=0, world=1, data=step_data or {"epoch": 0, "batch": trainer.step},
                    config=CONFIG)
    return str(directory)


def _trained(steps: int) -> TinyTrainer:
    trainer = TinyTrainer()
    for _ in range(steps):
        trainer.train_step()
    return trainer


@contextlib.contextmanager
def _local(path):
    yield path


def test_round_trip_continues_exactly(tmp_path):
    straight = _trained(5)
    reference = [straight.train_step() for _ in range(3)]
    directory = _save(tmp_path / "ckpt", _trained(5))
    assert sorted(os.listdir(directory)) == [".metadata", "__0_0.distcp", "extra-0.json"]
    resumed = TinyTrainer(seed=1)   # other initial weights: everything must come from the checkpoint
    extra = checkpoint.validate(directory, 0, 1, CONFIG)
    checkpoint.load(directory, resumed, extra)
    assert resumed.step == 5 and extra["data"] == {"epoch": 0, "batch": 5}
    assert [resumed.train_step() for _ in range(3)] == reference
    assert torch.equal(resumed.ema.weight, straight.ema.weight)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    trainer = TinyTrainer()
    trainer.train_step()
    older = _save(tmp_path / "checkpoint-00000001", trainer)
    trainer.train_step()
    latest = _save(tmp_path / "checkpoint-00000002", trainer)
    with open(os.path.join(latest, "__0_0.distcp"), "r+b") as f:   # flip bytes inside the tensors
        f.seek(100)
        f.write(b"\xff" * 8)
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        checkpoint.validate(latest, 0, 1, CONFIG)
    resumed = TinyTrainer(seed=1)
    with pytest.warns(UserWarning, match="skipping checkpoint .*checkpoint-00000002.*corrupt"):
        used, extra, skipped = checkpoint.restore([latest, older], resumed, 0, 1, CONFIG, _local)
    assert used == older and resumed.step == 1 and len(skipped) == 1 and "checkpoint-00000002" in skipped[0]


@pytest.mark.parametrize("damage, message", [
    (lambda d: os.remove(os.path.join(d, "extra-0.json")), "missing"),
    (lambda d: os.remove(os.path.join(d, "__0_0.distcp")), "missing"),
    (lambda d: open(os.path.join(d, "extra-0.json"), "w").write("{"), "unreadable"),
])
def test_a_partial_checkpoint_is_refused_naming_the_file(tmp_path, damage, message):
    directory = _save(tmp_path / "ckpt", _trained(2))
    damage(directory)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.validate(directory, 0, 1, CONFIG)


def test_a_checkpoint_of_another_model_or_world_size_is_refused(tmp_path):
    directory = _save(tmp_path / "ckpt", _trained(2))
    with pytest.raises(checkpoint.CheckpointError, match="another model configuration"):
        checkpoint.validate(directory, 0, 1, {"model": {"width": 4}})
    with pytest.raises(checkpoint.CheckpointError, match="written by 1 workers"):
        checkpoint.validate(directory, 0, 2, CONFIG)


class Payload:
    """Unpickling this runs code (writes a marker file): what an attacker would put in a checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _rehash(directory: str) -> None:
    """Make the damaged file's hash match, as an attacker who can write the storage would."""
    path = os.path.join(directory, "extra-0.json")
    extra = json.load(open(path))
    extra["files"] = {name: checkpoint._sha256(os.path.join(directory, name)) for name in extra["files"]}
    json.dump(extra, open(path, "w"))


def test_a_pickled_object_in_the_metadata_is_refused_and_never_run(tmp_path):
    directory = _save(tmp_path / "ckpt", _trained(2))
    marker = str(tmp_path / "pwned")
    with open(os.path.join(directory, ".metadata"), "wb") as f:
        pickle.dump(Payload(marker), f)
    _rehash(directory)
    with pytest.raises(checkpoint.CheckpointError, match="refusing to unpickle"):
        checkpoint.validate(directory, 0, 1, CONFIG)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load_module(nn.Linear(3, 2), directory, "ema")
    assert not os.path.exists(marker)


def test_a_pickled_object_in_a_byte_entry_is_refused_and_never_run(tmp_path):
    """DCP stores non-tensor values (optimizer hyper-parameters) as torch.save bytes: a checkpoint written
    with an object there is refused when loaded, and the object's code never runs."""
    trainer = _trained(2)
    marker = str(tmp_path / "pwned")
    original = trainer.optimizer.param_groups[0]["betas"]
    trainer.optimizer.param_groups[0]["betas"] = Payload(marker)   # saved as a pickled byte entry
    directory = _save(tmp_path / "ckpt", trainer)
    trainer.optimizer.param_groups[0]["betas"] = original
    assert not os.path.exists(marker)
    with pytest.raises(checkpoint.CheckpointError, match="not plain data"):
        checkpoint.load(directory, TinyTrainer(seed=1), checkpoint.validate(directory, 0, 1, CONFIG))
    assert not os.path.exists(marker)


def test_load_module_reads_one_part_without_a_process_group(tmp_path):
    trainer = _trained(3)
    directory = _save(tmp_path / "ckpt", trainer)
    module = checkpoint.load_module(nn.Linear(3, 2), directory, "ema")
    assert torch.equal(module.weight, trainer.ema.weight)


def test_random_generator_states_round_trip_through_json():
    g = torch.Generator().manual_seed(3)
    torch.randn(5, generator=g)
    state = checkpoint._decode_rng(json.loads(json.dumps(checkpoint._encode_rng({"g": g.get_state()}))))["g"]
    h = torch.Generator()
    h.set_state(state)
    assert torch.equal(torch.randn(4, generator=h), torch.randn(4, generator=g))
