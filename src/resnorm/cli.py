"""The ``resnorm`` command: compare, train, report, seeds, bench.

``main(argv)`` returns the exit status: 0 on success, 2 for bad input (argparse's own errors included),
130 when interrupted. Bad input (unknown model, design, dataset or key, a bad value, a missing file, an
existing output folder) prints one line ``resnorm: error: ...`` and no traceback. Heavy imports (torch,
matplotlib) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

TRAIN_MODELS = ("seed-resnet", "seed-mlp", "resnet-cifar", "residual-mlp", "gpt")
COMPARE_MODELS = ("mlp", "resnet-cifar", "gpt")


class UsageError(ValueError):
    """Bad command-line input found after parsing (reported like argparse's errors, exit status 2)."""


# ----------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnorm",
        description="Residual connections and normalization: a lab to train, probe and compare designs.",
        epilog="Run 'resnorm COMMAND --help' for a command's options. Documentation: docs/lab.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_compare(sub)
    _add_train(sub)
    _add_report(sub)
    _add_seeds(sub)
    _add_bench(sub)
    return parser


def _designs_help() -> str:
    from resnorm.lab.compare import DESIGNS

    rows = [f"  {d.name:<11} {d.placement:<10} {d.norm:<9} {d.block}" for d in DESIGNS.values()]
    return "\n".join([f"  {'design':<11} {'placement':<10} {'norm':<9} one block", *rows])


def _add_compare(sub) -> None:
    from resnorm.lab.compare import DEFAULT_DATA, DEFAULT_DEPTHS, DEFAULT_DESIGNS, DEFAULT_STEPS

    defaults = "\n".join(
        f"  --model {m:<13} designs {','.join(DEFAULT_DESIGNS[m])}; depths "
        f"{','.join(map(str, DEFAULT_DEPTHS[m]))}; data {DEFAULT_DATA[m]}; {DEFAULT_STEPS[m]} steps"
        for m in COMPARE_MODELS
    )
    p = sub.add_parser(
        "compare",
        help="train one network at several depths with several residual/norm designs; write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Train the same network at several depths, once per residual/norm design, then print a
            summary table (final validation accuracy, trained / did not train / diverged, ratio of the
            first block's gradient norm to the last block's) and write OUT/report.html with one
            sub-folder per run. With no arguments: the residual MLP on mnist5k, six designs x depths
            4, 16, 48, about 2 minutes on a 2-core CPU.
            """),
        epilog="defaults per model:\n" + defaults + "\n\nnamed designs (or give placement:norm pairs, "
        "e.g. post:rmsnorm):\n" + _designs_help() + "\n\nresnet-cifar only switches the residual on "
        "(any placement but none) or off (none) and\nuses the design's norm; its depths are 6n+2.\n"
        "Extra KEY=VALUE arguments override the training recipe (e.g. lr=1e-3 width=128).",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training-config overrides")
    p.add_argument("--model", choices=COMPARE_MODELS, default="mlp", help="network family (default mlp)")
    p.add_argument("--designs", help="comma-separated design names or placement:norm pairs")
    p.add_argument("--depths", help="comma-separated depths, e.g. 4,16,48 (resnet-cifar: 8,20,...)")
    p.add_argument("--data", help="dataset: mnist5k, digits, an IDX or CIFAR-10 folder; gpt: stdlib or a "
                   "UTF-8 text file")
    p.add_argument("--steps", type=_positive_int, help="optimizer steps per run")
    p.add_argument("--seed", type=int, default=0, help="seed for data order and initialisation (default 0)")
    p.add_argument("--out", help="study folder (default runs/compare-<time>)")
    p.add_argument("--workers", type=_positive_int, help="processes training runs side by side (default: "
                   "2 on a multi-core CPU, 1 on a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study folder's runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compare)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train one model from a YAML config and/or key=value settings",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Train one model and write its run folder: config.yaml, metrics.jsonl, checkpoint.pt,
            result.json, the plots (loss.png, grad_norm.png, act_rms.png) and report.html.
            Settings: an optional CONFIG.yaml, then KEY=VALUE overrides (keys of TrainConfig).
            Under torchrun (torchrun --nproc_per_node=2 -m resnorm train ...) only rank 0 prints and
            writes the report.
            """),
        epilog=textwrap.dedent("""\
            examples:
              resnorm train residual-mlp depth=16 placement=post norm=layernorm
              resnorm train gpt data=path/to/text.txt n_layer=6 norm=layernorm placement=post
              resnorm train resnet-cifar my.yaml data=path/to/cifar-10-batches-py --out runs/r20
              resnorm train gpt --out runs/g1 --resume
            """),
    )
    p.add_argument("model", metavar="MODEL", help=f"one of {', '.join(TRAIN_MODELS)}")
    p.add_argument("settings", nargs="*", metavar="[CONFIG.yaml] KEY=VALUE",
                   help="a YAML config file and/or key=value overrides")
    p.add_argument("--out", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild plots and report.html from saved run or study folders",
        description="Rebuild every run's plots and a report.html comparing the runs, from the folders "
        "only (config.yaml, metrics.jsonl, result.json). A study folder (from 'resnorm compare') "
        "expands into its runs.",
    )
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run folders and/or study folders")
    p.add_argument("--out", help="HTML file to write (default: report.html in the only folder given, "
                   "else in the current folder)")
    p.add_argument("--title", help="the report's title")
    p.set_defaults(func=cmd_report)


def _add_seeds(sub) -> None:
    p = sub.add_parser(
        "seeds",
        help="train the two seed systems (seed MLP, seed ResNet) as they were meant to work",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Train the systems of the founding documents and print their validation accuracy:
              - the seed MLP (784-256-256-10, BatchNorm, residual add) on mnist5k: Adam (lr 1e-3),
                sparse cross-entropy, batch 32, --epochs epochs (10 by default, under a minute on CPU);
              - the seed ResNet on 32x32 inputs: mnist5k padded to 32x32, or CIFAR-10 when
                data=PATH points to a CIFAR-10 python-batches folder; Adam, batch 32,
                --resnet-epochs epochs (3 by default to stay short on a CPU: about a minute on
                2 cores with mnist5k; CIFAR-10 epochs are 10x longer; use 10 on a GPU).
            Each run folder gets its plots and report.html; accuracy is measured on the held-out
            validation split (10% of the training data), evaluated once per epoch.
            """),
    )
    p.add_argument("settings", nargs="*", metavar="data=PATH", help="dataset for the seed ResNet")
    p.add_argument("--epochs", type=_positive_float, default=10.0, help="seed MLP epochs (default 10)")
    p.add_argument("--resnet-epochs", type=_positive_float, default=3.0,
                   help="seed ResNet epochs (default 3, CPU-friendly)")
    p.add_argument("--only", choices=("mlp", "resnet"), help="train only one of the two")
    p.add_argument("--out", help="folder for the two runs (default runs/seeds-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace existing runs in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_seeds)


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark the fused add+norm kernels (arguments go to resnorm.bench)",
        description="Benchmark the add+norm kernels against PyTorch; every argument after 'bench' "
        "(--help included) is passed to resnorm.bench.",
        add_help=True,
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for resnorm.bench")
    p.set_defaults(func=cmd_bench)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# ----------------------------------------------------------------------------------------------
# commands


def cmd_compare(args: argparse.Namespace) -> int:
    from resnorm.lab import compare, report

    designs = compare.parse_designs(args.designs) if args.designs is not None else None
    depths = compare.parse_depths(args.depths, args.model) if args.depths is not None else None
    overrides = _parse_key_values(args.overrides)
    data = args.data or compare.DEFAULT_DATA[args.model]
    compare.check_data(args.model, data)
    result = compare.run_compare(args.model, designs, depths, data=data, steps=args.steps, seed=args.seed,
                                 out_dir=args.out, overwrite=args.overwrite, progress=not args.no_progress,
                                 overrides=overrides, workers=args.workers)
    print(report.format_summary_table(result.rows))
    print(f"\nreport: {result.report}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from resnorm.lab import report
    from resnorm.lab.config import load_config

    if args.model not in TRAIN_MODELS:
        raise UsageError(f"unknown model {args.model!r}; valid models: {', '.join(TRAIN_MODELS)}")
    config_path, overrides = _split_settings(args.settings)
    config = load_config(config_path, [*overrides, f"model={args.model}"])
    if args.resume and not args.out:
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{_timestamp()}"
    rank0 = _is_rank_zero()
    from resnorm.lab import trainer

    result = trainer.train(config, out, resume=args.resume, overwrite=args.overwrite,
                           progress=rank0 and not args.no_progress)
    if not rank0:
        return 0
    html = report.build_report([out])
    row = report.summarize(report.load_run(out))
    print(report.format_summary_table([row]))
    print(f"\nstatus: {result.status} after {result.steps} steps; run folder: {out}\nreport: {html}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from resnorm.lab import report

    out = report.build_report(args.paths, args.out, title=args.title, progress=True)
    runs = [report.load_run(p, d, depth) for p, d, depth in report.find_run_dirs(args.paths)]
    print(report.format_summary_table([report.summarize(r) for r in runs]))
    print(f"\nreport: {out}")
    return 0


def cmd_seeds(args: argparse.Namespace) -> int:
    from resnorm.lab import seeds

    settings = _parse_key_values(args.settings)
    unknown = sorted(set(settings) - {"data"})
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r} for seeds; valid keys: data")
    out = Path(args.out) if args.out else Path("runs") / f"seeds-{_timestamp()}"
    which = (args.only,) if args.only else ("mlp", "resnet")
    results = seeds.run_seeds(out, epochs=args.epochs, resnet_epochs=args.resnet_epochs, which=which,
                              resnet_data=settings.get("data", "mnist5k"), overwrite=args.overwrite,
                              progress=not args.no_progress)
    print(seeds.format_results(results))
    print(f"\nruns: {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    argv = list(args.bench_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    import importlib

    try:
        bench = importlib.import_module("resnorm.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "resnorm.bench":
            raise
        if argv[:1] in (["-h"], ["--help"]):
            build_parser().parse_args(["bench", "--help"])  # prints this command's help, exits 0
        print("resnorm: error: 'resnorm bench' is not available: resnorm.bench is not installed yet",
              file=sys.stderr)
        return 2
    return int(bench.main(argv) or 0)


# ----------------------------------------------------------------------------------------------
# helpers


def _split_settings(settings: Sequence[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG.yaml] KEY=VALUE...`` -> (config path or None, overrides)."""
    config_path = None
    overrides = []
    for item in settings:
        if "=" in item:
            overrides.append(item)
        elif config_path is None:
            if not Path(item).is_file():
                raise FileNotFoundError(f"config file not found: {item} (expected CONFIG.yaml or KEY=VALUE)")
            config_path = item
        else:
            raise UsageError(f"unexpected argument {item!r}: give at most one CONFIG.yaml, then KEY=VALUE")
    return config_path, overrides


def _parse_key_values(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _error(message: str) -> int:
    line = " ".join(str(message).split())
    print(f"resnorm: error: {line}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resnorm`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # everything after "bench" belongs to resnorm.bench, options (and --help) included
        return _run(cmd_bench, argparse.Namespace(bench_args=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and argparse's usage errors (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else _error(exc.code)
    return _run(args.func, args)


def _run(command, args: argparse.Namespace) -> int:
    """Run one command, turning bad input into one ``resnorm: error:`` line and exit status 2."""
    try:
        return int(command(args) or 0)
    except SystemExit as exc:  # an argparse inside the command (resnorm.bench's --help, its usage errors)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _error(exc.code))
    except KeyboardInterrupt:
        print("resnorm: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError,
            IsADirectoryError) as exc:
        message = str(exc)
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in message:
            message = f"{message}: {exc.filename}"
        return _error(message or type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())
