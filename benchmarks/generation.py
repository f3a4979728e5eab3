"""Generation cost (``gaia2.generation``) against the world model's own forward pass, in one run.

    python benchmarks/generation.py [--steps 50] [--batch 2] [--repeats 3] [--threads 1] [--device cpu|cuda]
        [--quick] [--world-model DIR --tokenizer DIR]

Models: by default a randomly initialised tiny world model and tiny tokenizer (seeded; the cost of sampling does
not depend on the weights' values), or trained exports (``Generator.from_dirs``). Requests: ``--batch`` scratch
specs on the ``sedan6_30hz`` rig (a start-from-stop speed profile, two agents, metadata), different seeds, one
``batch_key``, ``--steps`` Euler steps. Every figure below is measured in this run, ``--repeats`` rounds of one
measurement of each kind (A B C A B C ...), then a closing round of the references; torch's thread count is set
explicitly (``--threads``, reported). Each ratio is taken per round, a measurement against the reference
measurements just before and just after it (the next round's), averaged, so that a drift of the machine's load
cancels to first order, and reported as the median over rounds. On a CPU device every ratio is also given in CPU
time of this process (``*_cpu``): other jobs on a shared machine take the cores away, which inflates wall time,
but add little to our CPU time. The goals are judged on wall time.

sampler overhead   ``gen.sample`` of one window (the world model's W = 6 latent steps) against its floor:
                   ``steps`` x one forward pass of the world model on exactly the sampler's inputs (the first call
                   the sampler makes is recorded, arguments and autocast state, and replayed: same batch, same x
                   shape, same conditioning dicts). The floor is timed as a block of ``steps`` consecutive forward
                   passes (like for like with the sampler's loop, not a best case); overhead = sample /
                   (steps x forward) - 1, e.g. 0.07 = 7% (goal <= 10%). What it counts: everything ``sample``
                   does that is not the model: noise, stacking and moving the conditioning, the Euler update, the
                   imposed clean latents, host <-> device copies, denormalisation. Beside it, the sampler's own
                   work alone: the same ``sample`` with a model that returns v = 0 at no cost, over the same floor
                   (``sampler_own_overhead``; small absolute times, so what a busy machine blurs least); and on
                   a CPU device the same ratio within one run, whose model calls are timed in CPU time as they
                   happen: sample / (the model's CPU time inside it) - 1 (``sampler_overhead_in_run_cpu``).
guidance ratio     the same requests with ``guidance.scale`` 3 (conditional and unconditional branch in one
                   forward pass of a 2B batch) over without (goal <= 2.1x). The guided sampler's own overhead over
                   its 2B forward pass is reported beside it.
cost per step      scratch generation of W, 2W and 4W latent steps; cost per generated latent step = time / T;
                   ``cost_per_step_ratio_2x`` / ``_4x`` = cost per step at 2W / 4W over that at W. Past the window
                   the sampler rolls out (``gaia2.generation.sampler.windows``): windows of W steps, each later one
                   starting k = 3 steps before the end of what is produced, so it produces only W - k = 3 new
                   steps for a whole window's cost. Linear cost in the number of windows therefore gives the
                   expected ratio (windows(nW) / nW) / (windows(W) / W) = 1.5 at 2x (3 windows for 12 steps)
                   and 1.75 at 4x (7 windows for 24 steps), not 1; ``cost_ratio_vs_expected_4x`` = measured /
                   expected (1 = linear in the windows).
decode             the tokenizer's rolling-window decoding of one request's latents, in seconds per generated
                   second of video (an extra figure; sampling and decoding are measured apart).
step-invariant     the fraction of a forward pass spent in the conditioning encoder and the positional encoding,
                   which depend on neither x nor tau and so are the same at every Euler step of a window (timed
                   by forward hooks on a separate block of forward passes; an extra figure).
paper preset       CUDA only: ``gaia2.world_model.config.paper()`` (~8.4B parameters) built on the GPU in bf16
                   weights, sampled with precision bf16, one 5-camera scratch request of one window (6 latents x
                   8 frames = 1.6 s at 30 Hz) with ``--steps`` steps: seconds of compute per generated second of
                   video (goal <= 15 s/s on one H100 at 50 steps), and its sampler overhead. Null on a CPU.

Absolute times are not comparable between runs (the machine is noisy); the ratios are. The last line is one JSON
object: {"sampler_overhead", "guidance_cost_ratio", "cost_per_step_ratio_2x", "cost_per_step_ratio_4x",
"expected_cost_ratio_4x", "forward_ms", "sample_s", "decode_seconds_per_generated_second", "threads", "device",
"steps", "batch", "paper_seconds_per_second", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gaia2.generation.generator import Generator  # noqa: E402
from gaia2.generation.inputs import Request  # noqa: E402
from gaia2.generation.sampler import ROLLOUT_CONTEXT, Sampler, windows  # noqa: E402
from gaia2.generation.spec import parse_spec  # noqa: E402

RIG = "sedan6_30hz"
GUIDANCE_SCALE = 3.0
MULTIPLES = (1, 2, 4)   # output lengths in windows
GOALS = {"sampler_overhead": 0.10, "guidance_cost_ratio": 2.1, "paper_seconds_per_second": 15.0}


# ------------------------------------------------------------------------------------------------ measuring
class Timing(NamedTuple):
    wall: float   # seconds
    cpu: float    # seconds of this process's CPU time, all threads (what a busy machine inflates least)

    def __truediv__(self, n: float) -> "Timing":
        return Timing(self.wall / n, self.cpu / n)


CLOCKS = ("wall", "cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)   # CUDA kernels run asynchronously: time what has run, not what is queued


def timed(fn: Callable[[], object], device: torch.device) -> Timing:
    """Wall and CPU seconds of ``fn()``, synchronising the device before and after."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return Timing(time.perf_counter() - w0, time.process_time() - c0)


@dataclass
class ModelCall:
    """One recorded call of the world model: its arguments, the autocast state it ran under, its CPU time."""
    args: tuple
    kwargs: dict
    autocast: tuple[str, torch.dtype] | None   # (device type, dtype) when autocast was on
    cpu_s: float = 0.0                         # the call's CPU seconds (the model's time on a CPU device)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        ctx = nullcontext() if self.autocast is None else torch.autocast(self.autocast[0], self.autocast[1])
        with ctx:
            return model(*self.args, **self.kwargs)

    @property
    def batch(self) -> int:
        return len(self.args[0])


def _autocast_state(device_type: str) -> tuple[str, torch.dtype] | None:
    if torch.is_autocast_enabled(device_type):
        return device_type, torch.get_autocast_dtype(device_type)
    return None


@contextmanager
def recording(sampler: Sampler) -> Iterator[list[ModelCall]]:
    """Within the block, every world-model call the sampler makes is recorded (in order) and then run."""
    calls: list[ModelCall] = []
    model = sampler.model
    device_type = sampler.device.type

    def record(*args, **kwargs):
        call = ModelCall(args, kwargs, _autocast_state(device_type))
        c0 = time.process_time()
        out = model(*args, **kwargs)
        call.cpu_s = time.process_time() - c0
        calls.append(call)
        return out

    sampler.model = record   # the sampler hands self.model to GuidedVelocity at every window
    try:
        yield calls
    finally:
        sampler.model = model


@contextmanager
def null_model(sampler: Sampler) -> Iterator[None]:
    """Within the block the sampler's model costs (almost) nothing: v = 0. What is left is the sampler's own work."""
    model = sampler.model
    sampler.model = lambda x, *args, **kwargs: torch.zeros_like(x)
    try:
        yield
    finally:
        sampler.model = model


def forward_block(call: ModelCall, model: torch.nn.Module, n: int, device: torch.device) -> Timing:
    """Time per forward pass: ``n`` consecutive replays of ``call``, timed as one block."""
    return timed(lambda: [call(model) for _ in range(n)], device) / n


def step_invariant_fraction(call: ModelCall, model: torch.nn.Module, n: int, device: torch.device) -> float:
    """Fraction of ``n`` forward passes (wall) spent in ``model.conditioning`` and ``model.positions`` (hooks)."""
    spent, start = [0.0], [0.0]

    def pre(module, inputs) -> None:
        sync(device)
        start[0] = time.perf_counter()

    def post(module, inputs, output) -> None:
        sync(device)
        spent[0] += time.perf_counter() - start[0]

    handles = []
    for part in (model.conditioning, model.positions):
        handles += [part.register_forward_pre_hook(pre), part.register_forward_hook(post)]
    try:
        total = timed(lambda: [call(model) for _ in range(n)], device).wall
    finally:
        for h in handles:
            h.remove()
    return spent[0] / total


def overhead(sample_s: float, steps: int, forward_s: float) -> float:
    """Sampler time over its floor (``steps`` forward passes), minus 1: 0.07 = 7% more than the model alone."""
    return sample_s / (steps * forward_s) - 1.0


def expected_cost_ratio(latent_steps: int, window: int, context: int = ROLLOUT_CONTEXT) -> float:
    """Cost per generated latent step at ``latent_steps`` over that at one window, if cost ~ number of windows."""
    return (len(windows(latent_steps, window, context)) / latent_steps) / (len(windows(window, window, context))
                                                                          / window)


def median(values: list[float]) -> float:
    return statistics.median(values)


def bracketed_ratios(rounds: list[dict[str, Timing]], clock: str, steps: int, window: int) -> dict[str, float]:
    """The ratios of each repeat, every measurement of round i against the reference measurements taken just
    before it (round i) and just after it (round i + 1, the closing round after the last), averaged, so that a
    drift of the machine's load cancels to first order; -> the median over repeats."""
    per: dict[str, list[float]] = {}
    for now, after in zip(rounds, rounds[1:]):
        def t(key: str) -> float:
            return getattr(now[key], clock)

        def around(key: str) -> float:
            return (getattr(now[key], clock) + getattr(after[key], clock)) / 2

        ratios = {"sampler_overhead": overhead(t("sample"), steps, around("forward")),
                  "guided_sampler_overhead": overhead(t("guided_sample"), steps, around("guided_forward")),
                  "guidance_cost_ratio": t("guided_sample") / around("sample"),
                  "guided_forward_ratio": t("guided_forward") / t("forward"),
                  "sampler_own_overhead": t("null_sample") / (steps * around("forward")),
                  "guided_sampler_own_overhead": t("null_guided_sample") / (steps * around("guided_forward"))}
        for m in MULTIPLES[1:]:
            ratios[f"cost_per_step_ratio_{m}x"] = (t(f"sample_{m}x") / (m * window)) / (around("sample") / window)
        for k, v in ratios.items():
            per.setdefault(k, []).append(v)
    return {k: median(v) for k, v in per.items()}


# -------------------------------------------------------------------------------------------------- requests
def spec(latent_steps: int, sampler_steps: int, seed: int, guidance_scale: float = 1.0) -> dict:
    """A scratch scene on ``RIG``: pulling away behind a car in the rain, a pedestrian on the right."""
    return {
        "name": f"bench-{seed}", "mode": "scratch", "rig": {"name": RIG}, "duration": {"latent_steps": latent_steps},
        "action": {"speed": {"profile": "start_from_stop", "speed": 10.0, "accel": 2.5, "start_s": 0.5},
                   "curvature": {"profile": "straight"}},
        "agents": [{"category": "car", "size": [4.6, 1.9, 1.5], "start": {"center": [18.0, 0.0]},
                    "velocity": [1.0, 0.0]},
                   {"category": "pedestrian", "size": [0.6, 0.6, 1.8], "start": {"center": [9.0, -4.0], "yaw_deg": 90},
                    "velocity": [0.0, 1.2]}],
        "metadata": {"weather": "rain", "time_of_day": "day"},
        "sampler": {"steps": sampler_steps, "seed": seed},
        "guidance": {"scale": guidance_scale},
    }


def requests(gen: Generator, batch: int, latent_steps: int, sampler_steps: int,
             guidance_scale: float = 1.0) -> list[Request]:
    return [gen.prepare(parse_spec(spec(latent_steps, sampler_steps, seed, guidance_scale), f"bench spec {seed}"))
            for seed in range(batch)]


def generated_seconds(r: Request) -> float:
    return r.frames / r.rig.frame_rate


# ------------------------------------------------------------------------------------------------- the runs
def tiny_generator(args, device: torch.device) -> tuple[Generator, str]:
    if args.world_model:
        gen = Generator.from_dirs(args.world_model, args.tokenizer, device)
        return gen, f"world model {args.world_model}, tokenizer {args.tokenizer}"
    from gaia2.tokenizer import Tokenizer
    from gaia2.tokenizer import tiny as tiny_tokenizer
    from gaia2.world_model.config import tiny
    from gaia2.world_model.model import WorldModel

    torch.manual_seed(args.seed)
    wm, tok = WorldModel(tiny()), Tokenizer(tiny_tokenizer())
    # Random non-zero output layers: adaLN-Zero starts at v = 0, which no trained model predicts.
    torch.nn.init.normal_(wm.latent_out.weight, std=0.02)
    return Generator(wm, tok, 0.0, 1.0, device), "tiny world model and tiny tokenizer, random initialisation"


def measure_tiny(gen: Generator, args, device: torch.device) -> dict:
    W, model = gen.geometry.window, gen.world_model
    steps, batch = args.steps, args.batch
    plain = requests(gen, batch, W, steps)
    guided = requests(gen, batch, W, steps, GUIDANCE_SCALE)
    longer = {m: requests(gen, batch, m * W, steps) for m in MULTIPLES[1:]}
    prepare = timed(lambda: requests(gen, batch, W, steps), device) / batch

    # Warm-up runs, which also record the sampler's first model call of each kind.
    with recording(gen.sampler) as calls:
        latents = gen.sample(plain)
    call = calls[0]
    with recording(gen.sampler) as calls:
        gen.sample(guided)
    guided_call = calls[0]
    assert call.batch == batch and guided_call.batch == 2 * batch, (call.batch, guided_call.batch)
    if gen.tokenizer is not None:
        gen.decode(latents[0])

    def one_round(full: bool) -> dict[str, Timing]:
        """One of each measurement, in this order; the closing round (``full`` False) only the references."""
        r = {"forward": forward_block(call, model, steps, device),
             "sample": timed(lambda: gen.sample(plain), device),
             "guided_forward": forward_block(guided_call, model, steps, device),
             "guided_sample": timed(lambda: gen.sample(guided), device)}
        if full:
            for m, reqs in longer.items():
                r[f"sample_{m}x"] = timed(lambda: gen.sample(reqs), device)
            if device.type == "cpu":   # the model's CPU time inside the sampler: its time on a CPU device
                with recording(gen.sampler) as inside:
                    whole = timed(lambda: gen.sample(plain), device).cpu
                in_run.append(whole / sum(c.cpu_s for c in inside) - 1.0)
            with null_model(gen.sampler):
                r["null_sample"] = timed(lambda: gen.sample(plain), device)
                r["null_guided_sample"] = timed(lambda: gen.sample(guided), device)
            if gen.tokenizer is not None:
                r["decode"] = timed(lambda: gen.decode(latents[0]), device)
            invariant.append(step_invariant_fraction(call, model, min(steps, 10), device))
        print(("repeat " if full else "closing round: ")
              + " ".join(f"{k} {v.wall:.4g}/{v.cpu:.4g}" for k, v in r.items()) + " (wall/cpu s)", flush=True)
        return r

    invariant: list[float] = []
    in_run: list[float] = []
    rounds = [one_round(True) for _ in range(args.repeats)] + [one_round(False)]
    runs = {k: [r[k] for r in rounds if k in r] for k in rounds[0]}
    med = {k: Timing(median([t.wall for t in v]), median([t.cpu for t in v])) for k, v in runs.items()}
    ratios = {clock: bracketed_ratios(rounds, clock, steps, W) for clock in CLOCKS}
    seconds = generated_seconds(plain[0])
    out = {**ratios["wall"]}
    if device.type == "cpu":   # CPU time means nothing for work done on a GPU
        out.update({f"{k}_cpu": v for k, v in ratios["cpu"].items()})
    out.update({
        "forward_ms": 1e3 * med["forward"].wall, "guided_forward_ms": 1e3 * med["guided_forward"].wall,
        "sample_s": med["sample"].wall, "guided_sample_s": med["guided_sample"].wall,
        "sample_seconds_per_generated_second": med["sample"].wall / (batch * seconds),
        "decode_seconds_per_generated_second": med["decode"].wall / seconds if "decode" in med else None,
        "decode_cpu_seconds_per_generated_second": (med["decode"].cpu / seconds
                                                    if "decode" in med and device.type == "cpu" else None),
        "sampler_overhead_in_run_cpu": median(in_run) if in_run else None,
        "step_invariant_fraction": median(invariant), "prepare_ms": 1e3 * prepare.wall,
        "generated_seconds_per_request": seconds, "window": W, "context": ROLLOUT_CONTEXT,
    })
    for m in MULTIPLES[1:]:
        expected = expected_cost_ratio(m * W, W)
        out.update({f"expected_cost_ratio_{m}x": expected,
                    f"cost_ratio_vs_expected_{m}x": out[f"cost_per_step_ratio_{m}x"] / expected,
                    f"windows_{m}x": len(windows(m * W, W, ROLLOUT_CONTEXT))})
    out["runs"] = {k: {c: [round(getattr(t, c), 5) for t in v] for c in CLOCKS} for k, v in runs.items()}
    return out


def paper_model(device: torch.device) -> torch.nn.Module:
    """The paper preset built directly on the GPU in bf16 (never materialised in float32 nor on the host)."""
    from gaia2.world_model.config import paper
    from gaia2.world_model.model import WorldModel

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            model = WorldModel(paper())
    finally:
        torch.set_default_dtype(default)
    return model.to(device, torch.bfloat16).eval()


def measure_paper(args, device: torch.device) -> dict:
    """Seconds of compute per generated second of 5-camera video, paper preset, bf16, one window, batch 1."""
    torch.manual_seed(args.seed)
    model = paper_model(device)
    params = sum(p.numel() for p in model.parameters())
    gen = Generator(model, None, 0.0, 0.32, device, precision="bf16")   # the paper's latent statistics
    reqs = requests(gen, 1, gen.geometry.window, args.steps)
    with recording(gen.sampler) as calls:
        gen.sample(requests(gen, 1, gen.geometry.window, 2))   # warm-up: kernels, allocator, the call to replay
    call = calls[0]
    assert call.autocast is not None, "paper preset: the sampler did not run under bf16 autocast"
    forward, sample = [forward_block(call, model, args.steps, device).wall], []
    for _ in range(args.paper_repeats):
        sample.append(timed(lambda: gen.sample(reqs), device).wall)
        forward.append(forward_block(call, model, args.steps, device).wall)
        print(f"paper: sample {sample[-1]:.2f} s, forward {1e3 * forward[-1]:.0f} ms", flush=True)
    seconds = generated_seconds(reqs[0])
    return {"paper_seconds_per_second": median(sample) / seconds, "paper_sample_s": median(sample),
            "paper_forward_ms": 1e3 * median(forward),
            "paper_sampler_overhead": median([overhead(s, args.steps, (f0 + f1) / 2)
                                              for s, f0, f1 in zip(sample, forward, forward[1:])]),
            "paper_generated_seconds": seconds, "paper_cameras": len(reqs[0].rig.names),
            "paper_params": params, "paper_peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "gpu": torch.cuda.get_device_name(device)}


# ------------------------------------------------------------------------------------------------- printing
def verdict(value: float | None, goal: float) -> str:
    return "" if value is None else ("ok" if value <= goal else "MISSED")


def table(r: dict) -> str:
    """measure | wall | CPU time (on a CPU device) | goal | verdict (on wall time)."""
    def both(key: str, fmt: Callable[[float], str]) -> tuple[str, str]:
        cpu = r.get(f"{key}_cpu")
        return fmt(r[key]), "" if cpu is None else fmt(cpu)

    def pct(v: float) -> str:
        return f"{100 * v:.1f} %"

    def times(v: float) -> str:
        return f"{v:.3f} x"

    rows = [("measure", "wall", "cpu time", "goal", ""),
            ("forward pass, B requests", f"{r['forward_ms']:.1f} ms", "", "", ""),
            ("sample, 1 window", f"{r['sample_s']:.3f} s", "", "", ""),
            ("sampler overhead", *both("sampler_overhead", pct), "<= 10 %",
             verdict(r["sampler_overhead"], GOALS["sampler_overhead"])),
            ("  of which the sampler's own work", *both("sampler_own_overhead", pct), "", ""),
            ("  in-run (model CPU time inside sample)", "", "-" if r.get("sampler_overhead_in_run_cpu") is None
             else pct(r["sampler_overhead_in_run_cpu"]), "", ""),
            ("guided forward pass, 2B", f"{r['guided_forward_ms']:.1f} ms", "", "", ""),
            ("guided forward / forward", *both("guided_forward_ratio", times), "", ""),
            ("guided sample, 1 window", f"{r['guided_sample_s']:.3f} s", "", "", ""),
            ("guided sampler overhead", *both("guided_sampler_overhead", pct), "", ""),
            ("  of which the sampler's own work", *both("guided_sampler_own_overhead", pct), "", ""),
            ("guidance cost ratio", *both("guidance_cost_ratio", times), "<= 2.1 x",
             verdict(r["guidance_cost_ratio"], GOALS["guidance_cost_ratio"]))]
    for m in MULTIPLES[1:]:
        key = f"cost_per_step_ratio_{m}x"
        rows.append((f"cost per latent step {m}x / 1x ({r[f'windows_{m}x']} windows)", *both(key, times),
                     f"{r[f'expected_cost_ratio_{m}x']:.3f} x", "linear in windows"))
        rows.append((f"  measured / expected {m}x", *both(key, lambda v: f"{v / r[f'expected_cost_ratio_{m}x']:.3f}"),
                     "1", ""))
    decode, decode_cpu = r["decode_seconds_per_generated_second"], r["decode_cpu_seconds_per_generated_second"]
    paper = r["paper_seconds_per_second"]
    rows += [("step-invariant share of a forward", pct(r["step_invariant_fraction"]), "", "", ""),
             ("sampling, s per generated s", f"{r['sample_seconds_per_generated_second']:.3f}", "", "", ""),
             ("decoding, s per generated s", "-" if decode is None else f"{decode:.3f}",
              "" if decode_cpu is None else f"{decode_cpu:.3f}", "", ""),
             ("prepare (spec -> request)", f"{r['prepare_ms']:.1f} ms", "", "", ""),
             ("paper preset bf16, s per generated s", "- (no CUDA)" if paper is None else f"{paper:.2f}", "",
              "<= 15", verdict(paper, GOALS["paper_seconds_per_second"]))]
    if paper is not None:
        rows.append(("paper sampler overhead", pct(r["paper_sampler_overhead"]), "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(f"  {a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d:<{widths[3]}}  {e}".rstrip()
                     for a, b, c, d, e in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50, help="Euler steps per window")
    p.add_argument("--batch", type=int, default=2, help="requests per batch (one batch_key, different seeds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--paper-repeats", type=int, default=2, help="CUDA: repeats of the paper-preset measurement")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared CPU more threads than free cores make every "
                        "op wait on the slowest thread)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device of the tiny-preset measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 steps, 1 repeat")
    p.add_argument("--skip-paper", action="store_true", help="leave out the paper preset on a CUDA machine")
    p.add_argument("--world-model", help="a world-model export directory instead of the random tiny model")
    p.add_argument("--tokenizer", help="with --world-model: a tokenizer export directory")
    args = p.parse_args()
    if args.quick:
        args.steps, args.repeats, args.paper_repeats = 4, 1, 1
    if args.tokenizer and not args.world_model:
        p.error("--tokenizer goes with --world-model")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    gen, models = tiny_generator(args, device)
    print(f"generation benchmark: {models}; device {device}, {torch.get_num_threads()} torch threads, batch "
          f"{args.batch}, {args.steps} Euler steps, {args.repeats} repeats; rig {RIG}, window "
          f"{gen.geometry.window} latent steps, rollout context {ROLLOUT_CONTEXT}", flush=True)
    result = measure_tiny(gen, args, device)
    del gen
    result["paper_seconds_per_second"] = None
    if torch.cuda.is_available() and not args.skip_paper:
        result.update(measure_paper(args, torch.device("cuda")))
    print(table(result))
    runs = result.pop("runs")
    summary = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in result.items()}
    summary.update({"threads": torch.get_num_threads(), "device": str(device), "steps": args.steps,
                    "batch": args.batch, "repeats": args.repeats, "models": models, "runs": runs})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
