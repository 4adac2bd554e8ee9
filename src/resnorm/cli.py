"""The ``resnorm`` command: compare, study, train, report, seeds, bench.

``main(argv)`` returns the exit status: 0 on success (a run that diverged included: it finished and
says so), 2 for bad input (argparse's own errors included), 130 when stopped by Ctrl-C (SIGINT) and 143
when stopped by SIGTERM (128 + the signal's number, as a shell reports a process killed by it). Bad
input (unknown model, design, dataset or key, a bad or conflicting value, a missing, unreadable or
corrupted file, an existing or unwritable output folder) prints one line ``resnorm: error: ...`` naming
what is wrong, changes nothing on disk, and shows no traceback. Only the lab's input errors
(``resnorm.lab.errors.LabError``), dataset errors (``resnorm.data.DataError``) and file-system errors
are reported that way: any other exception is a bug in resnorm and shows its traceback. Heavy imports
(torch, matplotlib) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_USAGE", "EXIT_SIGINT", "EXIT_SIGTERM"]

EXIT_OK, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 0, 2, 130, 143


def __getattr__(name: str):
    # the model lists come from the lab's registry (kept as names for older code)
    if name == "TRAIN_MODELS":
        from resnorm.lab import registry

        return registry.names()
    if name == "COMPARE_MODELS":
        from resnorm.lab import registry

        return tuple(registry.study_aliases())
    raise AttributeError(f"module 'resnorm.cli' has no attribute {name!r}")


def _usage_error(message: str) -> Exception:
    from resnorm.lab.errors import LabError

    return LabError(message)


# ----------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    from resnorm import __version__
    from resnorm.lab.errors import CommandLineParser

    parser = CommandLineParser(
        prog="resnorm",
        description="Residual connections and normalization: a lab to train, probe and compare designs.",
        epilog="Run 'resnorm COMMAND --help' for a command's options. Exit status: 0 done, 2 bad input, "
        "130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM. Documentation: docs/lab.md.",
    )
    parser.add_argument("--version", action="version", version=f"resnorm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_compare(sub)
    _add_study(sub)
    _add_train(sub)
    _add_report(sub)
    _add_seeds(sub)
    _add_bench(sub)
    return parser


def _designs_help() -> str:
    from resnorm.lab.designs import DESIGNS

    rows = [f"  {d.name:<11} {d.placement:<10} {d.norm:<9} {d.block}" for d in DESIGNS.values()]
    return "\n".join([f"  {'design':<11} {'placement':<10} {'norm':<9} one block", *rows])


class _StudyModels:
    """``--model``'s choices: the compare aliases, and ``ALIAS:TYPE`` for a family with model types
    (argparse lists them in --help and in its "invalid choice" error; the type is checked later, with a
    message listing the supported ones)."""

    def __init__(self) -> None:
        from resnorm.lab import registry

        self.aliases = registry.study_aliases()
        self.typed = {f.study.alias for f in registry.families()
                      if f.study is not None and f.model_types is not None}
        self.shown = registry.study_models()

    def __contains__(self, value: object) -> bool:
        alias, sep, _ = str(value).partition(":")
        return alias in self.aliases and (alias in self.typed or not sep)

    def __iter__(self):
        return iter(self.shown)


def _add_compare(sub) -> None:
    from resnorm.lab import registry

    studies = {alias: registry.get(name) for alias, name in registry.study_aliases().items()}
    defaults = "\n".join(
        f"  --model {m + (':TYPE' if f.model_types is not None else ''):<13} designs "
        f"{','.join(f.study.designs)}; depths {','.join(map(str, f.study.depths))} ({f.depth_label}); "
        f"data {f.study.data}; {f.study.steps} steps"
        for m, f in studies.items()
    )
    typed = [f for f in studies.values() if f.model_types is not None]
    typed_help = "".join(
        "\n\n" + textwrap.fill(
            f"--model {f.study.alias}:TYPE trains the {f.name} family: {f.summary}. TYPE is one of "
            f"{', '.join(f.model_types)}. Its designs: "
            + "; ".join(f"{d.name} = {d.summary}" for d in f.designs or ())
            + ". The summary shows step time and peak memory, and how far the designs' losses are apart.",
            width=100)
        for f in typed)
    p = sub.add_parser(
        "compare",
        help="train one network at several depths with several residual/norm designs; write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Train the same network at several depths, once per residual/norm design, then print a
            summary table (trained / did not train / diverged against the task's baseline, final
            training loss, validation accuracy and loss, the ratio of the first block's gradient norm
            to the last block's) and write OUT/report.html with one sub-folder per run. The recipe is
            printed before the first run. With no arguments: the residual MLP on mnist5k, six designs x
            depths 4, 16, 48, about 1-2 minutes on a 2-core CPU.
            """),
        epilog="defaults per model:\n" + defaults + "\n\nnamed designs (or give placement:norm pairs, "
        "e.g. post:rmsnorm):\n" + _designs_help() + "\n\nresnet-cifar only switches the residual on "
        "(any placement but none) or off (none) and\nuses the design's norm; its depths are 6n+2.\n"
        "Extra KEY=VALUE arguments override the training recipe (e.g. lr=1e-3 width=128); the settings\n"
        "compare sets itself (model, data, steps, seed, depth, the design's placement/norm/residual)\n"
        "come from its options and are an error as KEY=VALUE." + typed_help,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training-config overrides")
    example = {f.name: f.defaults.get("model_type") or (f.model_types or ("TYPE",))[0] for f in typed}
    typed_models = "".join(f"; {f.study.alias}:TYPE, e.g. {f.study.alias}:{example[f.name]}" for f in typed)
    typed_designs = "".join(f"; {f.study.alias}:TYPE: {', '.join(d.name for d in f.designs or ())}"
                            for f in typed)
    p.add_argument("--model", choices=_StudyModels(), default="mlp",
                   help=f"network family (default mlp{typed_models})")
    p.add_argument("--designs", help=f"comma-separated design names or placement:norm pairs{typed_designs}")
    p.add_argument("--depths", help="comma-separated depths, e.g. 4,16,48 (resnet-cifar: 8,20,...)")
    p.add_argument("--data", help="dataset: mnist5k, digits, an IDX or CIFAR-10 folder; gpt, hf:TYPE: stdlib "
                   "or a UTF-8 text file")
    p.add_argument("--steps", type=_positive_int, help="optimizer steps per run")
    p.add_argument("--seed", type=int, default=0, help="seed for data order and initialisation (default 0)")
    p.add_argument("--out", help="study folder (default runs/compare-<time>)")
    p.add_argument("--workers", type=_positive_int, help="processes training runs side by side (default: "
                   "2 on a multi-core CPU, 1 on a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study folder's runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compare)


def _add_study(sub) -> None:
    from resnorm.lab import studies

    rows = []
    for name in studies.names():
        study = studies.get(name)
        rows.append(f"  {name:<16} {study.title}")
        pad = " " * 19
        rows += textwrap.wrap(f"claim: {study.claim}", 90, initial_indent=pad, subsequent_indent=pad)
        rows.append(pad + "settings: " + ", ".join(p.name for p in study.params))
    p = sub.add_parser(
        "study",
        help="reproduce a paper's claim (he2016, xiong2020, deepnet2022, mhc2026, default-compare)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Run a named reproduction: print the paper's claim and published numbers and the recipe,
            train the study's runs, make its measurements, then print its table and a one-line
            verdict (reproduced / partly reproduced / not reproduced, measured beside published) and
            write OUT/report.html, OUT/verdict.json and OUT/summary.txt. --quick (the default) runs in
            at most 5 minutes on a 2-core CPU; --full is the budget the claim needs (docs/studies.md
            says which budget produced which number).
            """),
        epilog="studies:\n" + "\n".join(rows) + "\n\nKEY=VALUE: a study setting above (data=PATH points "
        "at CIFAR-10 or a text file;\nseeds=0,1,2) or a training-config key that changes every run's "
        "recipe; the keys a\nstudy sets per run (e.g. placement, lr, seed) are an error.",
    )
    p.add_argument("name", metavar="NAME", help="the study: " + ", ".join(studies.names()))
    p.add_argument("settings", nargs="*", default=[], metavar="KEY=VALUE",  # default: not "required"
                   help="study settings or training-config overrides")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--quick", dest="budget", action="store_const", const="quick",
                        help="at most 5 minutes on a 2-core CPU (default)")
    budget.add_argument("--full", dest="budget", action="store_const", const="full",
                        help="the budget the claim needs (long on a CPU)")
    p.add_argument("--out", help="study folder (default runs/study-NAME-<time>)")
    p.add_argument("--workers", type=_positive_int, help="processes training runs side by side (default: "
                   "2 on a multi-core CPU, 1 on a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study folder's runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_study, budget="quick")


def _add_train(sub) -> None:
    from resnorm.lab import registry
    from resnorm.lab.config import MUTABLE_ON_RESUME

    p = sub.add_parser(
        "train",
        help="train one model from a YAML config and/or key=value settings",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Train one model and write its run folder: config.yaml, metrics.jsonl, checkpoint.pt,
            result.json, the plots (loss.png, grad_norm.png, act_rms.png) and report.html.
            Settings: the model's default recipe, then an optional CONFIG.yaml, then KEY=VALUE
            overrides (keys of TrainConfig). Probes every 10 steps by default (probe_every=0: off).
            --resume continues the run in --out from its checkpoint with the run's own config.yaml;
            KEY=VALUE may then change only how long it trains and how it logs and runs.
            Under torchrun (torchrun --nproc_per_node=2 -m resnorm train ...) only rank 0 prints and
            writes the report. Exit status 130 after Ctrl-C, 143 after SIGTERM (the run is saved;
            --resume continues it).
            """),
        epilog="examples:\n"
        "  resnorm train residual-mlp depth=16 placement=post norm=layernorm\n"
        "  resnorm train gpt data=path/to/text.txt n_layer=6 norm=layernorm placement=post\n"
        "  resnorm train resnet-cifar my.yaml data=path/to/cifar-10-batches-py --out runs/r20\n"
        "  resnorm train gpt --out runs/g1 --resume steps=4000\n"
        "  resnorm train hf llama data=path/to/text.txt n_layer=4 d_model=128 n_head=4\n"
        "  resnorm train hf gemma2 resnorm=false      # the model's own transformers code\n\n"
        "models:\n" + "\n".join(f"  {f.name:<13} {f.summary}" for f in registry.families())
        + "".join(f"\n\n{f.name} takes its MODEL_TYPE first (resnorm train {f.name} MODEL_TYPE ...), "
                  f"one of:\n  {', '.join(f.model_types)}" for f in registry.families() if f.model_types)
        + "\n\nmay change on --resume: " + ", ".join(MUTABLE_ON_RESUME),
    )
    p.add_argument("model", metavar="MODEL", help=f"one of {', '.join(registry.names())}")
    p.add_argument("settings", nargs="*", default=[], metavar="[MODEL_TYPE] [CONFIG.yaml] KEY=VALUE",
                   help="a model with types (hf) takes its MODEL_TYPE first; then a YAML config file and/or "
                   "key=value overrides")
    p.add_argument("--out", help="run folder (default runs/<model>[-<type>]-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint and "
                   "its own config.yaml")
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
        help="benchmark the fused add+norm kernels on a CUDA GPU (arguments go to resnorm.lab.bench)",
        description="Benchmark the add+norm kernels against PyTorch; every argument after 'bench' "
        "(--help included) is passed to resnorm.lab.bench: 'resnorm bench --help' lists its options.",
        add_help=True,
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for resnorm.lab.bench")
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
    from resnorm.lab import compare, registry, summary

    family = registry.by_study_alias(args.model)
    if family.available is not None:
        family.available()
    designs = compare.parse_study_designs(args.designs, args.model) if args.designs is not None else None
    depths = compare.parse_depths(args.depths, args.model) if args.depths is not None else None
    overrides = _parse_key_values(args.overrides)
    data = args.data or family.study.data
    compare.check_data(args.model, data)
    result = compare.run_compare(args.model, designs, depths, data=data, steps=args.steps, seed=args.seed,
                                 out_dir=args.out, overwrite=args.overwrite, progress=not args.no_progress,
                                 overrides=overrides, workers=args.workers, echo=print)
    print(result.summary or summary.format_summary_table(result.rows, notes=True))
    print(f"\nreport: {_shown(result.report)}")
    return EXIT_OK


def cmd_study(args: argparse.Namespace) -> int:
    from resnorm.lab import studies
    from resnorm.lab.studies.runner import run_study

    studies.get(args.name)  # an unknown name: one line listing the studies
    settings = _parse_key_values(args.settings)
    result = run_study(args.name, args.budget, args.out, settings, workers=args.workers,
                       overwrite=args.overwrite, progress=not args.no_progress, echo=print)
    print()
    print(result.table)
    print()
    print(result.line)
    for note in result.verdict.notes:
        print(f"  note: {note}")
    print(f"\nwall time {result.wall_s:.0f} s; report: {_shown(result.report)}")
    return EXIT_OK


def _train_config(args: argparse.Namespace, out: Path | None):
    """The TrainConfig of ``resnorm train``: the family's defaults + CONFIG.yaml + KEY=VALUE, or, with
    --resume, the run's own config.yaml with the changes a resumed run may make."""
    from resnorm.lab import registry, runfolder
    from resnorm.lab.config import load_config, parse_overrides, read_yaml_mapping, resume_config
    from resnorm.lab.errors import NothingToResumeError, RunFolderError

    family = registry.get(args.model)
    model_type, config_path, overrides = _split_settings(args.settings, family)
    if model_type is not None:
        given = _parse_key_values(overrides).get("model_type")
        if given is not None and given != model_type:
            raise _usage_error(f"MODEL_TYPE {model_type} and model_type={given} conflict; give the type once")
        overrides = [f"model_type={model_type}", *overrides]
    if not args.resume:
        if family.model_types is not None and model_type is None:  # the type is never implicit here
            given = parse_overrides(overrides)
            if config_path is not None:
                given = {**read_yaml_mapping(config_path), **given}
            if given.get("model_type") is None:
                choices = f", MODEL_TYPE one of {', '.join(family.model_types)}" if family.model_types else ""
                raise _usage_error(f"resnorm train {args.model} needs a MODEL_TYPE first: resnorm train "
                                   f"{args.model} MODEL_TYPE [CONFIG.yaml] [KEY=VALUE ...]{choices}")
        return load_config(config_path, overrides, model=args.model)
    if not runfolder.has_checkpoint(out):
        what = "does not exist" if not out.exists() else f"has no {runfolder.CHECKPOINT_FILE}"
        raise NothingToResumeError(f"nothing to resume: {out} {what}; --resume continues a run from its "
                                   "checkpoint (drop --resume to start a new run)")
    saved = runfolder.read_config(out)
    if saved.model != args.model:
        raise RunFolderError(f"{out} holds a {saved.model} run, not {args.model}; give MODEL "
                             f"{saved.model} to resume it")
    changes = read_yaml_mapping(config_path) if config_path is not None else {}
    changes.update(parse_overrides(overrides))
    if changes.get("model") == saved.model:
        del changes["model"]
    return resume_config(saved, changes)


def cmd_train(args: argparse.Namespace) -> int:
    from resnorm.lab import report, summary
    from resnorm.lab.config import recipe_summary
    from resnorm.lab.trainer import Trainer

    if args.resume and not args.out:
        raise _usage_error("--resume needs --out RUN_DIR (the run to continue)")
    if args.resume and args.overwrite:
        raise _usage_error("--resume and --overwrite exclude each other")
    out = Path(args.out) if args.out else None
    config = _train_config(args, out)
    if out is None:
        name = "-".join(str(v) for v in (args.model, config.model_type) if v is not None)
        out = Path("runs") / f"{name}-{_timestamp()}"
    rank0 = _is_rank_zero()
    trainer = Trainer(config, out, resume=args.resume, overwrite=args.overwrite,
                      progress=rank0 and not args.no_progress)
    result = trainer.fit()
    if trainer.already_finished is not None:
        if rank0:
            print(f"{_shown(out)}: the run is already complete ({result.steps} of {result.total_steps} "
                  "steps); nothing to do (give steps=N with a larger N to train on)")
        return EXIT_OK
    if result.status == "interrupted":
        code = EXIT_SIGTERM if result.stop_signal == "SIGTERM" else EXIT_SIGINT
        if rank0:
            print(f"resnorm: interrupted ({result.stop_signal or 'SIGINT'}) at step {result.steps} of "
                  f"{result.total_steps}; the run is saved in {out}; continue it with "
                  f"'resnorm train {args.model} --out {out} --resume'", file=sys.stderr)
        return code
    if not rank0:
        return EXIT_OK
    html = report.build_report([out])
    row = summary.summarize(report.load_run(out))
    study = config.family.study  # a family's own columns (hf: step time and peak memory)
    print(summary.format_summary_table([row], notes=True, columns=study.columns if study else None))
    print(f"\nrecipe: {recipe_summary(config)}")  # the defaults a run used are no secret
    print(f"status: {result.status} after {result.steps} steps; run folder: {_shown(out)}\n"
          f"report: {_shown(html)}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from resnorm.lab import report, summary

    runs = [report.load_run(p, d, depth) for p, d, depth in report.find_run_dirs(args.paths)]
    if len(args.paths) == 1 and _named_study(Path(args.paths[0])):  # keep the claim and the verdict
        from resnorm.lab.studies.runner import rebuild_report

        out = rebuild_report(args.paths[0], args.out, title=args.title)
    else:
        out = report.build_report(args.paths, args.out, title=args.title, progress=sys.stderr.isatty())
    families = {r.family.name if r.family else None for r in runs}  # one family: its study's columns
    study = runs[0].family.study if len(families) == 1 and None not in families else None
    print(summary.format_summary_table([summary.summarize(r) for r in runs], notes=True,
                                       columns=study.columns if study else None))
    print(f"\nreport: {_shown(out)}")
    return EXIT_OK


def _named_study(path: Path) -> bool:
    """A folder written by ``resnorm study`` (its study.json says so)."""
    from resnorm.lab.runfolder import METRICS_FILE, read_study

    if not path.is_dir() or (path / METRICS_FILE).is_file():
        return False
    meta = read_study(path)
    return meta is not None and meta.get("kind") == "study"


def cmd_seeds(args: argparse.Namespace) -> int:
    from resnorm.lab import seeds

    settings = _parse_key_values(args.settings)
    unknown = sorted(set(settings) - {"data"})
    if unknown:
        raise _usage_error(f"unknown setting {unknown[0]!r} for seeds; valid keys: data")
    out = Path(args.out) if args.out else Path("runs") / f"seeds-{_timestamp()}"
    which = (args.only,) if args.only else ("mlp", "resnet")
    results = seeds.run_seeds(out, epochs=args.epochs, resnet_epochs=args.resnet_epochs, which=which,
                              resnet_data=settings.get("data", "mnist5k"), overwrite=args.overwrite,
                              progress=not args.no_progress)
    print(seeds.format_results(results))
    print(f"\nruns: {_shown(out)}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    argv = list(args.bench_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    from resnorm.lab import bench

    return int(bench.main(argv) or 0)


# ----------------------------------------------------------------------------------------------
# helpers


def _split_settings(settings: Sequence[str], family=None) -> tuple[str | None, str | None, list[str]]:
    """``[TYPE] [CONFIG.yaml] KEY=VALUE...`` -> (model type or None, config path or None, overrides); a
    TYPE only for a family with model types (``registry.ModelFamily.model_types``)."""
    model_type = None
    config_path = None
    overrides = []
    takes_type = family is not None and family.model_types is not None
    for item in settings:
        if "=" in item:
            overrides.append(item)
        elif takes_type and model_type is None and config_path is None and (
                item in (family.model_types or ()) or not Path(item).is_file()):
            model_type = item
        elif config_path is None:
            if not Path(item).is_file():
                raise _usage_error(f"config file not found: {item} (expected CONFIG.yaml or KEY=VALUE)")
            config_path = item
        else:
            raise _usage_error(f"unexpected argument {item!r}: give at most one CONFIG.yaml, then KEY=VALUE")
    _parse_key_values(overrides)  # the same key twice with different values is a conflict
    return model_type, config_path, overrides


def _parse_key_values(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _usage_error(f"expected KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        if key in out and out[key] != value.strip():
            raise _usage_error(f"{key} is given twice ({key}={out[key]} and {key}={value.strip()})")
        out[key] = value.strip()
    return out


def _shown(path: object) -> str:
    """A path as text any terminal takes (bytes of a file name that are not UTF-8 as U+FFFD)."""
    from resnorm.lab.runfolder import printable

    return printable(str(path))


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _error(message: str) -> int:
    line = " ".join(str(message).split())
    print(f"resnorm: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def _raise_on_sigterm(signum, frame) -> None:
    from resnorm.lab.errors import StopRequested

    raise StopRequested("SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resnorm`` command line; returns the exit status (module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # everything after "bench" belongs to resnorm.lab.bench, options (and --help) included
        return _run(cmd_bench, argparse.Namespace(bench_args=argv[1:]))
    try:
        parser = build_parser()  # imports the lab's registry and studies: Ctrl-C may land here
        args, extra = parser.parse_known_args(argv)
        # KEY=VALUE settings may also follow the options (resnorm train gpt --out r --resume steps=900)
        positional = next((name for name in ("settings", "overrides") if hasattr(args, name)), None)
        if positional is not None and all(not item.startswith("-") for item in extra):
            setattr(args, positional, [*getattr(args, positional), *extra])
        elif extra:
            parser.parse_args(argv)  # argparse's own "unrecognized arguments" error
    except SystemExit as exc:  # --help / --version (0) and argparse's usage errors (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else _error(exc.code)
    except KeyboardInterrupt:
        print("resnorm: interrupted (SIGINT)", file=sys.stderr)
        return EXIT_SIGINT
    empty = [name for name in ("out", "data") if getattr(args, name, None) == ""]
    if empty:  # "--out $DIR" with DIR unset would otherwise write to the default folder
        what = "folder" if empty[0] == "out" else "dataset"
        return _error(f"--{empty[0]} is empty; give a {what} or leave the option out")
    return _run(args.func, args)


def _run(command, args: argparse.Namespace) -> int:
    """Run one command: bad input -> one ``resnorm: error:`` line and 2; Ctrl-C -> 130; SIGTERM -> 143."""
    from resnorm.data import DataError
    from resnorm.lab.errors import LabError, StopRequested

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return int(command(args) or 0)
    except SystemExit as exc:  # an argparse inside the command (resnorm bench's --help, its usage errors)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _error(exc.code))
    except StopRequested as exc:
        print(f"resnorm: interrupted ({exc.signal})", file=sys.stderr)
        return EXIT_SIGTERM if exc.signal == "SIGTERM" else EXIT_SIGINT
    except KeyboardInterrupt:
        print("resnorm: interrupted (SIGINT)", file=sys.stderr)
        return EXIT_SIGINT
    except LabError as exc:
        return _error(exc.cli_message)
    except DataError as exc:
        return _error(str(exc))
    except OSError as exc:  # a missing, unreadable or unwritable file or folder
        return _error(_os_error_message(exc))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _os_error_message(exc: OSError) -> str:
    """``PATH: what went wrong`` for a system error on a file or folder; the message itself otherwise."""
    if exc.filename is not None and exc.strerror:
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
        return f"{target}: {exc.strerror}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
