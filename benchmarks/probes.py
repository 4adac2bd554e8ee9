"""Probe overhead: training time with probes every k steps vs probes off, same run otherwise.

Default: residual-mlp depth 16, width 256, on mnist5k, batch 64, 300 steps, probes every 10 steps.
Time per step comes from the ``time_s`` of consecutive training records (``log_every=1``), so data loading,
model construction, evaluation and checkpoint writing are excluded. Runs alternate (off, on, off, on,
...) to spread machine noise over both. The headline number compares probe steps with plain steps of
the same runs, which a shared machine's noise affects alike.

    .venv/bin/python benchmarks/probes.py [--steps 300] [--repeats 5] [--threads 1] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from resnorm.lab.config import config_for
from resnorm.lab.trainer import read_metrics, train


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
    import os

    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op thread(s), Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--probe-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", type=Path, default=None, help="write the result table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = config_for("residual-mlp", data="mnist5k", depth=args.depth, width=args.width, steps=args.steps,
                      eval_every=0, log_every=1, checkpoint_every=0, tensorboard=False, device="cpu")
    k = args.probe_every
    configs = {"off": base.replace(probe_every=0), "on": base.replace(probe_every=k)}
    times: dict[str, list[float]] = {key: [] for key in configs}
    probe_steps: list[float] = []
    plain_steps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        step_times(configs["off"], Path(tmp), "warmup")
        for i in range(args.repeats):
            for key in configs:
                mean_step, per_step = step_times(configs[key], Path(tmp), f"{key}{i}")
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
    summary = (
        f"Within the probed runs (same process, same moment, so shared-machine noise cancels): a probe step "
        f"takes {probe_ms:.2f} ms and a plain step {plain_ms:.2f} ms (medians over {len(probe_steps)} and "
        f"{len(plain_steps)} steps), so probes every {k} steps cost **{paired:+.1%}** of training time "
        f"(budget: under +10%). End to end, median run against median run: {end_to_end:+.1%} (whole runs "
        f"vary by tens of percent on this shared 2-core machine, so that number is the noisier one)."
    )
    setup = (f"residual-mlp depth {args.depth}, width {args.width}, layernorm, pre placement, on mnist5k, "
             f"batch 64, Adam, {args.steps} steps per run, {args.repeats} runs each, alternating off/on. "
             "Per-step times come from the ``time_s`` of consecutive training records (log_every=1).")
    text = "\n".join([f"Machine: {machine()}.", "", setup, "", *rows, "", summary])
    print(text)
    if args.markdown is not None:
        command = "`.venv/bin/python benchmarks/probes.py " + " ".join(argv or []) + "`"
        args.markdown.write_text("# Probe overhead (CPU)\n\n" + text + f"\n\nCommand: {command.strip()}\n")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
