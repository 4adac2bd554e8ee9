"""Probe overhead: training time with probes every k steps vs probes off, same run otherwise.

The cost of the lab's default (``probe_every=10``) for the ``resnorm train`` models it matters most for:

- ``residual-mlp``: depth 16, width 256, on mnist5k, batch 64 (the run the budget was first set on);
- ``gpt``: ``resnorm train gpt``'s defaults (4 layers, d_model 128, block 64, batch 12) on the bundled
  ``stdlib`` text; its probes also record the attention entropy of every layer.

Time per step comes from the ``time_s`` of consecutive training records (``log_every=1``), so data
loading, model construction, evaluation and checkpoint writing are excluded. Runs alternate (off, on,
off, on, ...) to spread machine noise over both. The headline number compares probe steps with plain
steps of the same runs, which a shared machine's noise affects alike. Budget: under +10%.

    .venv/bin/python benchmarks/probes.py [--models residual-mlp,gpt] [--steps 300] [--repeats 5]
                                          [--threads 1] [--markdown out.md] [--note "busy machine"]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import tempfile
from pathlib import Path

import torch

from resnorm.lab.config import config_for
from resnorm.lab.runfolder import read_metrics
from resnorm.lab.trainer import train

MODELS = {
    "residual-mlp": dict(data="mnist5k", depth=16, width=256),
    "gpt": dict(data="stdlib"),
}


def step_times(config, workdir: Path, name: str) -> tuple[float, list[tuple[int, float]]]:
    """(seconds per step over the run, [(step, duration of that step)]) from the train records."""
    result = train(config, workdir / name, progress=False)
    records = read_metrics(result.out_dir, "train")
    first, last = records[0], records[-1]
    per_step = [(b["step"], b["time_s"] - a["time_s"]) for a, b in zip(records, records[1:], strict=False)
                if b["step"] == a["step"] + 1]
    return (last["time_s"] - first["time_s"]) / (last["step"] - first["step"]), per_step


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op thread(s), Python {platform.python_version()}")


def measure(model: str, steps: int, k: int, repeats: int, tmp: Path) -> tuple[list[str], str]:
    """The table rows and the summary sentence of one model."""
    base = config_for(model, **MODELS[model], steps=steps, eval_every=0, log_every=1, checkpoint_every=0,
                      tensorboard=False, device="cpu", warmup_steps=0, schedule="constant")
    configs = {"off": base.replace(probe_every=0), "on": base.replace(probe_every=k)}
    times: dict[str, list[float]] = {key: [] for key in configs}
    probe_steps: list[float] = []
    plain_steps: list[float] = []
    step_times(configs["off"], tmp, f"{model}-warmup")
    for i in range(repeats):
        for key in configs:
            mean_step, per_step = step_times(configs[key], tmp, f"{model}-{key}{i}")
            times[key].append(mean_step)
            if key == "on":
                probe_steps += [t for step, t in per_step if step % k == 0]
                plain_steps += [t for step, t in per_step if step % k != 0]
    labels = {"off": "off", "on": f"every {k} steps"}
    rows = ["| probes | min ms/step | median ms/step | runs (ms/step) |", "|---|---|---|---|"]
    for key in configs:
        runs = ", ".join(f"{t * 1e3:.2f}" for t in times[key])
        best, middle = min(times[key]) * 1e3, statistics.median(times[key]) * 1e3
        rows.append(f"| {labels[key]} | {best:.2f} | {middle:.2f} | {runs} |")
    end_to_end = statistics.median(times["on"]) / statistics.median(times["off"]) - 1
    probe_ms, plain_ms = statistics.median(probe_steps) * 1e3, statistics.median(plain_steps) * 1e3
    paired = (probe_ms - plain_ms) / (k * plain_ms)
    setup = {"residual-mlp": f"residual-mlp depth 16, width 256, layernorm, pre placement, on mnist5k, batch "
                             f"{base.batch_size}, Adam",
             "gpt": f"gpt, resnorm train's defaults ({base.n_layer} layers, d_model {base.d_model}, "
                    f"{base.n_head} heads, block {base.block_size}, batch {base.batch_size}, AdamW, clip "
                    f"{base.grad_clip:g}) on stdlib text; probes include the attention entropy"}[model]
    summary = (
        f"{setup}; {steps} steps per run, {repeats} runs each, alternating off/on. Within the probed runs "
        f"(same process, same moment, so shared-machine noise cancels): a probe step takes {probe_ms:.2f} ms "
        f"and a plain step {plain_ms:.2f} ms (medians over {len(probe_steps)} and {len(plain_steps)} steps), "
        f"so probes every {k} steps cost **{paired:+.1%}** of training time (budget: under +10%). End to "
        f"end, median run against median run: {end_to_end:+.1%} (the noisier number)."
    )
    return rows, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="residual-mlp,gpt",
                        help=f"comma list of {', '.join(MODELS)} (default: both)")
    parser.add_argument("--steps", type=int, default=300, help="steps per run (default 300)")
    parser.add_argument("--probe-every", type=int, default=10, help="probe interval (default 10, the lab's)")
    parser.add_argument("--repeats", type=int, default=5, help="runs with and without probes (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the result tables here")
    parser.add_argument("--note", default="", help="a line about the conditions, put under the machine")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown[0]!r}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    parts = [f"Machine: {machine()}."]
    if args.note:
        parts += ["", args.note]
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            rows, summary = measure(model, args.steps, args.probe_every, args.repeats, Path(tmp))
            parts += ["", f"## {model}", "", *rows, "", summary]
            print("\n".join(parts[-(len(rows) + 4):]), flush=True)
    text = "\n".join(parts)
    if args.markdown is not None:
        command = "`.venv/bin/python benchmarks/probes.py " + shlex.join(argv or []) + "`"
        args.markdown.write_text("# Probe overhead (CPU)\n\n" + text + f"\n\nCommand: {command.strip()}\n")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
