"""The world-model training job's light evaluation (``jobs/light_eval.py``): the FDD of a few from-scratch
generations of the EMA model against their real frames, every few steps and at the last one, logged beside the
losses; its interval over whole samples; its inputs refused before any work when missing or mismatched."""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pytest
import torch

from gaia2.config.base import ConfigError, deep_merge
from gaia2.world_model.train_config import train_config

STEPS, EVERY = 5, 2     # evaluations at steps 2, 4 and the last, 5


@pytest.fixture(scope="module")
def networks(tmp_path_factory) -> dict[str, str]:
    from gaia2.evaluation.features import write_tiny_networks

    return write_tiny_networks(str(tmp_path_factory.mktemp("networks")))


def _tokenizer(latent_shards) -> str:
    return os.path.join(os.path.dirname(latent_shards), "tokenizer")


def _register_tokenizer(latent_shards, workdir: str, scale_std: float = 1.0) -> str:
    """The fixture tokenizer registered in ``workdir``'s MLflow as the training job registers one, its version tagged
    with the latent statistics it measured (``scale_std`` != 1: other statistics) -> "models:/NAME@candidate"."""
    from gaia2.flow.stats import read_stats
    from jobs.registry import log_and_register, record_latent_stats
    from jobs.tracking import mlflow_run

    name = "gaia2-tokenizer-light-eval"
    with mlflow_run("tokenizer", workdir, run_name="register"):
        log_and_register(_tokenizer(latent_shards), name, "tokenizer")
    stats = read_stats(latent_shards)
    record_latent_stats(f"models:/{name}@candidate", stats.model_copy(update={"std": [
        s * scale_std for s in stats.std]}))
    return f"models:/{name}@candidate"


def _cfg(latent_shards, tokenizer_shards, networks, **extra):
    overrides = {
        "model": {"latent_steps": 3, "dim": 32, "heads": 2, "depth": 1, "conditioning": {"max_agents": 4}},
        "data": {"shards": latent_shards, "batch_size": 2, "shuffle_buffer": 8, "val_samples": 4},
        "schedule": {"steps": STEPS, "log_every": 1, "val_every": EVERY, "checkpoint_every": 100},
        "workers": {"max_failures": 0},
        "eval": {"every_steps": EVERY, "samples": 8, "tokenizer": _tokenizer(latent_shards),
                 "shards": tokenizer_shards, "fdd": networks["fdd"], "resolution": [56, 112], "sampler_steps": 4,
                 "frames_per_video": 3},
    }
    return train_config("tiny", overrides=deep_merge(overrides, extra))


# ------------------------------------------------------------------------------------------- the figure
def test_the_interval_resamples_whole_samples_and_needs_eight():
    from jobs.light_eval import describe, fdd_distance

    rng = np.random.default_rng(0)
    real = [rng.normal(size=(6, 4)) for _ in range(8)]
    fake = [rng.normal(0.5, 1.0, size=(6, 4)) for _ in range(8)]
    d = fdd_distance(real, fake, seed=0)
    assert d.n_real == d.n_fake == 48 and d.low is not None and d.low < d.value < d.high
    assert fdd_distance(real, fake, seed=0) == d                                    # seeded
    few = fdd_distance(real[:7], fake[:7], seed=0)                                  # 42 rows, but 7 samples
    assert few.low is None and few.high is None and math.isfinite(few.value)
    line = describe({"eval_fdd": 12.34, "eval_fdd_low": 10.1, "eval_fdd_high": 14.2, "eval_samples": 8.0,
                     "eval_seconds": 6.14}, (448, 952))
    assert line == "FDD 12.34 [10.1, 14.2] on 8 samples (DINOv2 448 x 952) in 6.1 s"
    assert "no interval" in describe({"eval_fdd": 1.0, "eval_samples": 4.0, "eval_seconds": 1.0}, (56, 112))


def test_the_loop_logs_the_figure_with_the_validation_loss_and_turns_a_failure_into_a_warning(capsys):
    from jobs.train_loop import light_evaluation

    class Log:
        def __init__(self):
            self.calls = []

        def metrics(self, values, step):
            self.calls.append((step, dict(values)))

    def works(step):
        return {"eval_fdd": 3.0, "eval_samples": 4.0, "eval_seconds": 0.5}, "FDD 3 on 4 samples"

    def fails(step):
        raise RuntimeError("decoder out of memory")

    log = Log()
    assert light_evaluation(works, 40, "world-model", 0, log, {"val_loss": 0.8123}, 40)["eval_fdd"] == 3.0
    assert light_evaluation(works, 50, "world-model", 0, log, {"val_loss": 0.8123}, 40) and \
        light_evaluation(works, 60, "world-model", 0, log, {}, 0)
    assert [step for step, _ in log.calls] == [40, 50, 60] and log.calls[0][1]["eval_samples"] == 4.0
    assert capsys.readouterr().out.splitlines() == [
        "[world-model] light evaluation at step 40: FDD 3 on 4 samples; validation loss 0.8123",
        "[world-model] light evaluation at step 50: FDD 3 on 4 samples; validation loss 0.8123 (at step 40)",
        "[world-model] light evaluation at step 60: FDD 3 on 4 samples"]
    assert light_evaluation(fails, 70, "world-model", 0, log, {}, 0) == {} and len(log.calls) == 3
    assert light_evaluation(fails, 70, "world-model", 1, None, {}, 0) == {}
    assert capsys.readouterr().out.splitlines() == [
        "[world-model] warning: light evaluation at step 70 failed: RuntimeError: decoder out of memory; training "
        "goes on without it",
        "[world-model] warning: light evaluation at step 70 failed (rank 1): RuntimeError: decoder out of memory; "
        "training goes on without it"]
    assert light_evaluation(lambda step: None, 80, "world-model", 1, None, {}, 0) == {}   # another rank's share


# ------------------------------------------------------------------------------- on a trainer, no Ray Train
def test_an_evaluation_of_the_ema_weights_is_reproducible_and_leaves_training_untouched(
        ray_session, latent_shards, tokenizer_shards, networks):
    """The evaluator on a trainer's EMA copy: finite FDD over the val samples there are; again on the same weights,
    the same figure (seeded generations, real features kept); the training's random generators untouched."""
    from gaia2.world_model.trainer import WorldModelTrainer
    from jobs.light_eval import LightEvaluation, val_keys
    from jobs.specs import SPECS

    spec = SPECS["world-model"]
    cfg = spec.resolve(_cfg(latent_shards, tokenizer_shards, networks))
    trainer = WorldModelTrainer(cfg)
    evaluation = spec.light_eval(trainer, cfg, torch.device("cpu"), 0, False)
    assert isinstance(evaluation, LightEvaluation)
    assert [s for s in range(1, STEPS + 1) if evaluation.due(s)] == [2, 4, 5]
    rng = torch.get_rng_state()
    metrics, text = evaluation(2)
    assert torch.equal(torch.get_rng_state(), rng)
    n = len(val_keys(latent_shards, 8))
    assert 2 <= n < 8 and metrics["eval_samples"] == n
    assert math.isfinite(metrics["eval_fdd"]) and metrics["eval_fdd"] > 0 and metrics["eval_seconds"] > 0
    assert "eval_fdd_low" not in metrics and f"on {n} samples (DINOv2 56 x 112)" in text
    real = dict(evaluation._real)
    again, _ = evaluation(4)
    assert again["eval_fdd"] == pytest.approx(metrics["eval_fdd"], rel=1e-9)
    assert all(evaluation._real[k] is v for k, v in real.items())
    # The evaluated copy holds the EMA weights, and leaves them where they were.
    copy = evaluation._loaded["world_model"]
    for (name, a), b in zip(copy.state_dict().items(), trainer.ema.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def _gather(rank: int, world: int, init_file: str) -> None:
    """One rank of ``test_fsdp_sharded_ema_weights_are_gathered_whole_on_rank_0``."""
    import torch.distributed as dist

    from gaia2.world_model.model import WorldModel
    from jobs.light_eval import LightEvaluation
    from jobs.parallelize import fsdp_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = train_config("tiny", overrides={"model": {"latent_steps": 3, "dim": 32, "heads": 2, "depth": 2}})
        torch.manual_seed(0)
        ema = WorldModel(cfg.model).eval().requires_grad_(False)
        reference = {k: v.clone() for k, v in ema.state_dict().items()}
        fsdp_shard(ema, "fp32", torch.device("cpu"))
        state = LightEvaluation(cfg, ema, torch.device("cpu"), rank, sharded=True).ema_state()
        if rank:
            assert state == {}
            return
        assert list(state) == list(reference)
        for name, value in reference.items():
            assert not hasattr(state[name], "device_mesh") and state[name].device.type == "cpu", name
            torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
        WorldModel(cfg.model).load_state_dict(state)          # strict: what the evaluated copy loads
    finally:
        dist.destroy_process_group()


def test_fsdp_sharded_ema_weights_are_gathered_whole_on_rank_0(tmp_path):
    """Under FSDP every rank takes part in gathering the EMA weights; rank 0 gets them whole, on the CPU, under the
    plain model's names; the others get nothing."""
    import torch.multiprocessing as mp

    mp.spawn(_gather, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


# --------------------------------------------------------------------------------------------- the job
def _history(workdir, run_id, key):
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri

    return {m.step: m.value for m in MlflowClient(tracking_uri(workdir)).get_metric_history(run_id, key)}


def _worker_lines(marker: str) -> list[str]:
    """Lines of the Ray workers' stdout containing ``marker`` (their log files: what Ray forwards to the driver)."""
    import ray

    logs = ray._private.worker.global_worker.node.get_logs_dir_path()
    lines = []
    for path in glob.glob(os.path.join(logs, "worker-*.out")):
        with open(path, errors="replace") as f:
            lines += [line.rstrip("\n") for line in f if marker in line]
    return lines


def test_the_training_job_logs_the_light_evaluation_beside_its_losses(
        ray_session, latent_shards, tokenizer_shards, networks, tmp_path):
    import time

    from jobs.specs import SPECS
    from jobs.train_driver import run, summary

    work = str(tmp_path)
    uri = _register_tokenizer(latent_shards, work)      # fetched by the driver into the job's local directory
    cfg = _cfg(latent_shards, tokenizer_shards, networks, eval={"tokenizer": uri})
    name = "wm-light-eval"
    outcome = run(SPECS["world-model"], cfg.model_copy(update={"job": cfg.job.model_copy(update={
        "name": name, "workdir": work})}))
    from mlflow.tracking import MlflowClient

    from jobs.tracking import tracking_uri

    params = MlflowClient(tracking_uri(work)).get_run(outcome.run_id).data.params
    assert params["eval.tokenizer"].startswith(os.path.join(work, "world-model-jobs", name, "eval-tokenizer"))
    fdd = _history(work, outcome.run_id, "eval_fdd")
    assert sorted(fdd) == [2, 4, 5] and all(math.isfinite(v) and v > 0 for v in fdd.values())
    samples = _history(work, outcome.run_id, "eval_samples")
    n = samples[5]
    assert set(samples.values()) == {n} and 2 <= n < 8      # the ~6 val samples there are, of the 8 asked
    # Fewer than 8 samples: no interval is logged rather than a meaningless one.
    assert _history(work, outcome.run_id, "eval_fdd_low") == {} and _history(work, outcome.run_id, "eval_fdd_high") == {}
    assert sorted(_history(work, outcome.run_id, "eval_seconds")) == [2, 4, 5]
    assert sorted(_history(work, outcome.run_id, "val_loss")) == [2, 4, 5]          # beside validation
    assert outcome.metrics["eval_fdd"] == pytest.approx(fdd[5])
    assert f"light evaluation: FDD {fdd[5]:.4g} on {int(n)} samples" in summary(SPECS["world-model"], outcome, work)
    # The progress line, with the validation loss of the same step (Ray forwards worker output asynchronously).
    val = _history(work, outcome.run_id, "val_loss")
    want = (f"light evaluation at step 4: FDD {fdd[4]:.4g} (no interval: fewer than 8 samples) on {int(n)} samples "
            f"(DINOv2 56 x 112) in ")
    deadline = time.monotonic() + 30
    while not (lines := [x for x in _worker_lines(want) if f"; validation loss {val[4]:.4g}" in x]):
        assert time.monotonic() < deadline, _worker_lines("light evaluation")
        time.sleep(1)
    assert "[world-model] " in lines[0]


# ------------------------------------------------------------------------------------------ edge checks
def test_an_evaluation_without_its_dinov2_names_eval_fdd():
    with pytest.raises(ConfigError, match=r"eval\.fdd: required when eval\.every_steps > 0"):
        train_config("tiny", overrides={"eval": {"every_steps": 2, "tokenizer": "t", "shards": "s"}})
    assert train_config("tiny").eval.every_steps == 0                               # off by default


@pytest.mark.parametrize("flags, field", [
    (["--eval-every", "2", "--eval-tokenizer", "TOKENIZER", "--eval-shards", "PIXELS"],
     "eval.fdd: required when eval.every_steps > 0"),
    (["--eval-every", "2", "--eval-tokenizer", "TOKENIZER", "--eval-shards", "PIXELS", "--eval-fdd-net", "NOWHERE"],
     "eval.fdd: "),
    (["--eval-every", "2", "--eval-tokenizer", "SMALL", "--eval-shards", "PIXELS", "--eval-fdd-net", "FDD"],
     "eval.tokenizer: "),
    (["--eval-every", "2", "--eval-tokenizer", "TOKENIZER", "--eval-shards", "LATENTS", "--eval-fdd-net", "FDD"],
     "eval.shards: "),
    (["--eval-every", "2", "--eval-tokenizer", "TOKENIZER", "--eval-shards", "PIXELS", "--eval-fdd-net", "FDD",
      "--set", "eval.resolution=[50,100]"], "eval.resolution: [50, 100] must be multiples of DINOv2's patch size 14"),
    (["--eval-every", "2", "--eval-tokenizer", "OTHER_STATS", "--eval-shards", "PIXELS", "--eval-fdd-net", "FDD"],
     "eval.tokenizer: the training (flow.latent_mean / flow.latent_std) normalises latents with"),
])
def test_light_evaluation_inputs_are_refused_before_any_work(latent_shards, tokenizer_shards, networks, tmp_path,
                                                             capsys, flags, field):
    """A missing DINOv2, a tokenizer of other latent channels, latent shards given as the real frames, a resolution
    DINOv2 cannot take, a registered tokenizer whose latent statistics are not the shards': each is a config error
    naming the field, before Ray, the MLflow run or any download."""
    from gaia2.tokenizer import Tokenizer, tiny
    from gaia2.tokenizer.export import save_tokenizer
    from jobs.cli import main

    paths = {"TOKENIZER": _tokenizer(latent_shards), "PIXELS": tokenizer_shards, "LATENTS": latent_shards,
             "FDD": networks["fdd"], "NOWHERE": str(tmp_path / "no-dinov2")}
    if "SMALL" in flags:
        paths["SMALL"] = save_tokenizer(str(tmp_path / "small"), Tokenizer(tiny().model_copy(update={"latent_dim": 8})))
    if "OTHER_STATS" in flags:
        paths["OTHER_STATS"] = _register_tokenizer(latent_shards, str(tmp_path / "work"), scale_std=2.0)
    code = main(["train", "world-model", "--shards", latent_shards, "--set", "model.latent_steps=3",
                 "--set", "model.conditioning.max_agents=4", "--workdir", str(tmp_path / "work"),
                 *[paths.get(f, f) for f in flags]])
    err = capsys.readouterr().err
    assert code == 2 and field in err and "Traceback" not in err, err
    assert not glob.glob(str(tmp_path / "work" / "world-model-jobs" / "*" / "eval-tokenizer" / "*"))
    if "OTHER_STATS" not in flags:   # that one's registry lives in the work directory
        assert not os.path.exists(tmp_path / "work")
