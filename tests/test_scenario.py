"""Scenario embeddings (paper §2.2.3): the external table of vectors keyed by sample key, checked before any
work, joined into training samples, and reaching the world model through a projection that trains."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.splits import DataError
from pipelines.world_model.scenario import check_table, lookup


def _write(path, keys, vectors, **columns) -> str:
    table = {"key": keys, "embedding": [np.asarray(v, np.float32) for v in vectors], **columns}
    pq.write_table(pa.table(table), str(path))
    return str(path)


def test_lookup_joins_vectors_by_key_and_marks_the_missing(tmp_path):
    path = _write(tmp_path / "s.parquet", ["a", "b"], [[1, 2, 3], [4, 5, 6]])
    vectors, valid = lookup(path, ["b", "zz", "a"], 3)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 3)
    np.testing.assert_array_equal(vectors, [[4, 5, 6], [0, 0, 0], [1, 2, 3]])
    np.testing.assert_array_equal(valid, [True, False, True])
    assert check_table(path, 3, {"train": ["a", "x", "y"], "val": ["b"]}) == {
        "scenario_coverage_train": pytest.approx(1 / 3, abs=1e-6), "scenario_coverage_val": 1.0}


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "absent.parquet"), "no such file"),
    (lambda p: (p / "x.parquet").write_text("not parquet") and str(p / "x.parquet"), "not a readable Parquet file"),
    (lambda p: pq.write_table(pa.table({"id": ["a"]}), str(p / "x.parquet")) or str(p / "x.parquet"),
     "lacks column(s) ['key', 'embedding']"),
    (lambda p: _write(p / "x.parquet", ["a", "a"], [[1, 2], [3, 4]]), "key 'a' appears 2 times"),
    (lambda p: _write(p / "x.parquet", ["a", "b"], [[1, 2], [3]]), "different lengths"),
    (lambda p: _write(p / "x.parquet", ["a", "b"], [[1, 2], [3, float("nan")]]), "key 'b' holds NaN"),
    (lambda p: pq.write_table(pa.table({"key": ["a"], "embedding": ["1,2"]}), str(p / "x.parquet"))
     or str(p / "x.parquet"), "must be lists of floats"),
    (lambda p: _write(p / "x.parquet", ["a"], [[1, 2, 3]]), "holds 3-dimensional embeddings"),
    (lambda p: _write(p / "x.parquet", ["q"], [[1, 2]]), "no training sample's key"),
])
def test_bad_tables_are_refused_naming_the_problem(tmp_path, make, message):
    with pytest.raises(DataError, match="data.scenario") as err:
        check_table(make(tmp_path), 2, {"train": ["a", "b"], "val": []})
    assert message in str(err.value)


def test_the_scenario_projection_trains_and_only_valid_vectors_reach_the_output():
    """Training steps on batches with scenario vectors move the projection; then the model's output depends on
    the vector, and a sample whose vector is marked invalid ignores it."""
    from gaia2.world_model.inputs import example_inputs
    from gaia2.world_model.train_config import train_config
    from gaia2.world_model.trainer import WorldModelTrainer

    model = {"dim": 32, "heads": 2, "depth": 1, "cameras": 2, "height": 2, "width": 3, "latent_steps": 3,
             "latent_dim": 4, "conditioning": {"max_cameras": 2, "max_agents": 2, "clip_dim": 4, "scenario_dim": 6,
                                               "p_each": 0.0, "p_all": 0.0}}
    cfg = train_config("tiny", overrides={"model": model, "optim": {"warmup_steps": 1},
                                          "flow": {"latent_mean": 0.0, "latent_std": 1.0}})
    trainer = WorldModelTrainer(cfg)
    g = torch.Generator().manual_seed(0)
    inp = example_inputs(cfg.model, batch=8, generator=g, scenario=True)
    scenario = inp["cond"]["scenario"]
    # latents that depend on the scenario vector, so that reading it lowers the loss
    latents = torch.einsum("bd,dl->bl", scenario, torch.randn(6, 4, generator=g))[:, None, None, :, None, None]
    batch = {"latents": latents.expand(-1, 3, 2, -1, 2, 3).clone(), "timestamps": inp["timestamps"],
             **inp["cond"], "scenario_valid": torch.ones(8, dtype=torch.bool), **inp["camera"]}
    before = trainer.model.conditioning.scenario.proj.weight.detach().clone()
    for _ in range(4):
        trainer.train_step(batch)
    assert not torch.equal(trainer.model.conditioning.scenario.proj.weight, before)   # it received gradient

    m = trainer.model.eval()
    x = inp["x"][:2]
    args = (x, inp["tau"][:2], None, inp["timestamps"][:2], {k: v[:2] for k, v in inp["camera"].items()})
    cond = {k: v[:2] for k, v in inp["cond"].items()}
    with torch.no_grad():
        v = m(args[0], args[1], cond, *args[3:])
        other = dict(cond, scenario=-cond["scenario"])
        assert (m(args[0], args[1], other, *args[3:]) - v).abs().amax() > 1e-4
        invalid = torch.tensor([False, True])
        a = m(args[0], args[1], dict(cond, scenario_valid=invalid), *args[3:])
        b = m(args[0], args[1], dict(other, scenario_valid=invalid), *args[3:])
        assert torch.equal(a[0], b[0]) and (a[1] - b[1]).abs().amax() > 1e-4
