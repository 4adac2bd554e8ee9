"""``resnorm compare``: the same network at several depths, one run per residual/norm design.

Designs are ``(placement, norm)`` pairs named in ``resnorm.lab.designs`` (``plain``, ``pre-norm``, ...,
or ``placement:norm``). The models are the registry's families with a study recipe
(``resnorm.lab.registry``: ``ModelFamily.study``), by their compare alias:

- ``mlp`` (``residual-mlp``: depth = number of residual blocks);
- ``gpt`` (depth = ``n_layer``; placement and norm as the design says; text data);
- ``resnet-cifar`` (He et al.'s CIFAR ResNet, depth = 6n+2 layers: only ``residual`` on/off and the
  norm vary, so placement ``none`` = a plain net and ``post``/``pre`` = the ResNet's own block);
- ``hf:TYPE`` (a Hugging Face causal LM of that ``model_type``, depth = ``n_layer``; its designs are
  the family's own, ``hf`` and ``hf+resnorm``: the same numbers, so the study is about step time and
  memory; the summary says how far the designs' losses are apart).

Each study starts from the family's default recipe, then its quick study recipe, then the study's own
bookkeeping (steps, evaluations, probes) and the user's ``KEY=VALUE`` overrides; the result is printed
before the first run starts (``recipe_lines``) and saved in ``study.json``. Settings the study itself
varies or takes from its options (the model, the depth, the design's fields, data, steps, seed) cannot
be overridden that way: giving them is an error that names the option to use.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnorm.lab import registry
from resnorm.lab.config import (
    TrainConfig,
    canonical_keys,
    config_for,
    field_names,
    parse_overrides,
    recipe_summary,
)
from resnorm.lab.designs import DESIGNS, Design, in_order, name_for, parse_designs
from resnorm.lab.errors import ConfigError, RunFolderError, RunFolderExistsError, StopRequested, WorkerError
from resnorm.lab.files import atomic_write_text
from resnorm.lab.registry import design_name
from resnorm.lab.runfolder import STUDY_FILE, check_overwritable, is_nonempty_dir, read_study, write_study

__all__ = [
    "Design",
    "DESIGNS",
    "parse_designs",
    "parse_study_designs",
    "parse_depths",
    "design_name",
    "plan_study",
    "check_data",
    "validate_study_data",
    "recipe_lines",
    "summary_text",
    "default_workers",
    "train_plan",
    "run_compare",
    "StudyResult",
    "StudyPlanItem",
]


def _studies() -> dict[str, registry.ModelFamily]:
    return {alias: registry.get(name) for alias, name in registry.study_aliases().items()}


def __getattr__(name: str) -> Any:
    # per-model tables kept for code written before the registry (computed from it)
    tables = {
        "COMPARE_MODELS": lambda f: f.name,
        "DEFAULT_DESIGNS": lambda f: tuple(f.study.designs),
        "DEFAULT_DEPTHS": lambda f: tuple(f.study.depths),
        "DEFAULT_DATA": lambda f: f.study.data,
        "DEFAULT_STEPS": lambda f: f.study.steps,
        "RECIPES": lambda f: dict(f.study.recipe),
    }
    if name in tables:
        return {alias: tables[name](family) for alias, family in _studies().items()}
    raise AttributeError(f"module 'resnorm.lab.compare' has no attribute {name!r}")


SUMMARY_FILE = "summary.txt"  # written last: a study folder without it did not finish
N_PROBES = 12  # probes per run
N_EVALS = 6  # validation passes per run


def parse_study_designs(spec: str | Sequence[str], model: str = "mlp") -> list[Design]:
    """The designs of ``--designs`` for the study model ``model``: ``parse_designs`` (names and
    ``placement:norm`` pairs), or the family's own named designs (``ModelFamily.designs``)."""
    family = registry.by_study_alias(model)
    if family.designs is None:
        return parse_designs(spec)
    named = {d.name: d for d in family.designs}
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if not items:
        raise ConfigError(f"--designs is empty; --model {model} has the designs {', '.join(named)}")
    designs: list[Design] = []
    for item in items:
        if item not in named:
            raise ConfigError(f"unknown design {item!r} for --model {model}; "
                              f"valid designs: {', '.join(named)}")
        if item in {d.name for d in designs}:
            raise ConfigError(f"design {item!r} given twice in --designs")
        designs.append(Design(item, "", "", named[item].summary))
    return designs


def _design_fields(family: registry.ModelFamily, design: Design) -> dict[str, Any]:
    if family.designs is not None:
        return dict(next(d.fields for d in family.designs if d.name == design.name))
    return family.design_fields(design.placement, design.norm)


def parse_depths(spec: str | Sequence[int], model: str = "mlp") -> list[int]:
    """Depths from ``"4,16,48"``, each valid for the model family (resnet-cifar: 6n+2, i.e. 8, 14, 20, 32,
    44, 56, 110...)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    depths: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not re.fullmatch(r"\d+", text) or int(text) < 1:
            raise ConfigError(f"--depths must be positive integers separated by commas; got {item!r}")
        depths.append(int(text))
    if not depths:
        raise ConfigError("--depths is empty; give e.g. --depths 4,16,48")
    family, model_type = registry.parse_study_model(model)
    if family.depth_field is not None:
        typed = {"model_type": model_type} if model_type is not None else {}
        for depth in depths:  # the family's own rules (resnet-cifar: 6n+2)
            try:
                config_for(family.name, **typed, **{family.depth_field: depth})
            except ConfigError as err:
                raise ConfigError(f"--depths {depth}: {err}") from None
    if len(set(depths)) != len(depths):
        raise ConfigError(f"--depths has a repeated depth: {spec}")
    return depths


def check_data(model: str, data: str) -> None:
    """Fail fast on a dataset name or path that cannot be the model's data (embedded names are checked
    against ``resnorm.data``; a path must exist). ``validate_study_data`` then reads it."""
    from resnorm.data import EMBEDDED_IMAGE_DATASETS, EMBEDDED_TEXT_DATASETS

    family = registry.by_study_alias(model)
    text = family.task == "text"
    names = EMBEDDED_TEXT_DATASETS if text else EMBEDDED_IMAGE_DATASETS
    other = EMBEDDED_IMAGE_DATASETS if text else EMBEDDED_TEXT_DATASETS
    if data in names:
        return
    if data in other:
        kind = "text" if text else "image"
        raise ConfigError(f"--data {data} does not fit --model {model}, which needs {kind} data: "
                          f"{', '.join(names)} or a path")
    if not Path(data).expanduser().exists():
        what = "a UTF-8 text file" if text else "an MNIST/Fashion-MNIST IDX or CIFAR-10 folder"
        raise FileNotFoundError(f"unknown dataset {data!r}: not one of {', '.join(names)} and no such path "
                                f"(expected {what})")


# ----------------------------------------------------------------------------------------------
# the study


@dataclass
class StudyPlanItem:
    design: Design
    depth: int
    run_dir: Path
    config: TrainConfig


@dataclass
class StudyResult:
    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    report: Path | None = None
    summary: str = ""  # the text of summary.txt


def _study_keys(family: registry.ModelFamily) -> dict[str, str]:
    """Config keys the study sets itself -> the option that sets them."""
    keys = {"model": "--model", "data": "--data", "steps": "--steps", "epochs": "--steps", "seed": "--seed"}
    if family.model_types is not None:
        keys["model_type"] = "--model"
    if family.depth_field:
        keys[family.depth_field] = "--depths"
    if family.designs is not None:
        for design in family.designs:
            keys.update(dict.fromkeys(design.fields, "--designs"))
    elif family.design_fields is not None:
        for key in family.design_fields("pre", "layernorm"):
            keys[key] = "--designs"
    return keys


def plan_study(
    model: str = "mlp",
    designs: Sequence[Design] | None = None,
    depths: Sequence[int] | None = None,
    *,
    data: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    out_dir: str | Path = "runs/compare",
    overrides: dict | None = None,
) -> list[StudyPlanItem]:
    """One validated ``TrainConfig`` per (design, depth); nothing is trained or written.

    ``overrides`` (``{key: value}``, values typed or as strings) change the recipe; a key the study sets
    itself (model, data, steps, seed, the depth and the design's fields) is a ``ConfigError`` naming the
    option that sets it."""
    family, model_type = registry.parse_study_model(model)
    if family.available is not None:
        family.available()
    study = family.study
    designs = list(designs) if designs is not None else parse_study_designs(list(study.designs), model)
    depths = parse_depths(list(depths) if depths is not None else list(study.depths), model)
    steps = study.steps if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"--steps must be a positive integer; got {steps!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0; got {seed!r}")
    if family.designs is not None:
        unknown = [d.name for d in designs if d.name not in {n.name for n in family.designs}]
        if unknown:
            raise ConfigError(f"--model {model} has the designs {', '.join(n.name for n in family.designs)}; "
                              f"not {', '.join(unknown)}")
    elif family.placements is not None:
        unsupported = [d.name for d in designs if d.placement not in family.placements]
        if unsupported:
            raise ConfigError(f"{family.name} only switches the residual on or off (placement "
                              f"{', '.join(family.placements)}); these designs need another model: "
                              f"{', '.join(unsupported)}")
    given = _typed(overrides or {})
    taken = _study_keys(family)
    conflicts = [k for k in given if k in taken]
    if conflicts:
        k = conflicts[0]
        raise ConfigError(f"{k}={given[k]!r}: compare sets {k} itself; use {taken[k]} to choose it")
    fields = dict(study.recipe)
    if model_type is not None:
        fields["model_type"] = model_type
    fields.update(
        data=data or study.data,
        steps=steps,
        seed=seed,
        eval_every=max(1, steps // N_EVALS),
        log_every=1,
        probe_every=max(1, steps // N_PROBES),
        checkpoint_every=0,
        tensorboard=False,
    )
    fields.update(given)
    out_dir = Path(out_dir)
    plan = []
    for design in designs:
        for depth in depths:
            per_run = dict(fields, **_design_fields(family, design))
            if family.depth_field:
                per_run[family.depth_field] = depth
            config = config_for(family.name, **per_run)
            plan.append(StudyPlanItem(design, depth, out_dir / f"{_slug(design.name)}-d{depth}", config))
    return plan


def _typed(overrides: dict) -> dict[str, Any]:
    """Overrides with string values parsed by their field's type (others kept as given)."""
    strings = [f"{k}={v}" for k, v in overrides.items() if isinstance(v, str)]
    typed = parse_overrides(strings)
    given = {k.replace("-", "_"): v for k, v in overrides.items() if not isinstance(v, str)}
    typed.update(canonical_keys(given))
    unknown = [k for k in typed if k not in field_names()]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(field_names())}")
    return typed


def unfinished_study(out_dir: str | Path, kind: str = "compare", name: str | None = None) -> bool:
    """A study folder whose study failed or was interrupted (``study.json`` but no ``summary.txt``) and
    that the same command made (``kind``: ``compare`` or ``study``; ``name``: the study's name): the retry
    may reuse it without ``overwrite`` (its runs are trained again). A folder of another command or
    study, or with an unreadable ``study.json``, is not: redoing it would replace what it holds."""
    out_dir = Path(out_dir)
    if not (out_dir / STUDY_FILE).is_file() or (out_dir / SUMMARY_FILE).exists():
        return False
    try:
        meta = read_study(out_dir)
    except RunFolderError:
        return False
    if not isinstance(meta, dict) or meta.get("kind", "compare") != kind:
        return False
    return name is None or meta.get("study") == name


def validate_study_data(plan: Sequence[StudyPlanItem]) -> None:
    """Read each distinct dataset of the plan once (as its first run will), so that a file in the wrong
    format or a batch larger than the data fails before anything is created."""
    import torch

    from resnorm.lab.tasks import build_task

    seen = set()
    for item in plan:
        c = item.config
        key = (c.model, c.data, c.data_root, c.val_fraction, c.split_seed, c.batch_size, c.block_size,
               c.text_max_chars)
        if key not in seen:
            seen.add(key)
            build_task(c, torch.device("cpu"))


def recipe_lines(plan: Sequence[StudyPlanItem], model: str) -> list[str]:
    """What the study trains, printed before it starts: the model, the designs, the depths, the recipe."""
    family = registry.by_study_alias(model)
    first = plan[0].config
    designs = in_order(item.design.name for item in plan)
    depths = sorted({item.depth for item in plan})
    lines = [f"compare --model {model} ({family.name}: {family.summary})",
             f"  designs: {', '.join(designs)}; depths ({family.depth_label or 'depth'}): "
             f"{', '.join(map(str, depths))}; {len(plan)} runs",
             f"  recipe: {recipe_summary(first)}",
             f"  each run: evaluation every {first.eval_every} steps, probes every {first.probe_every} steps"]
    if family.designs is not None:
        named = {d.name: d.summary for d in family.designs}
        lines += [f"  {name}: {named[name]}" for name in designs if named.get(name)]
    if family.study.note:
        lines.append(f"  note: {family.study.note}")
    return lines


def summary_text(rows: Sequence[dict], runs: Sequence[Any], family: registry.ModelFamily) -> str:
    """The study's summary (``summary.txt``, and what ``resnorm compare`` prints): the table in the
    study's columns with its legend, and for designs that compute the same numbers
    (``StudyDefaults.same_numbers_rtol``) how far each design's training losses are from the first
    design's at every depth."""
    from resnorm.lab import summary

    study = family.study
    text = summary.format_summary_table(rows, notes=True, columns=study.columns if study else None)
    if study is not None and study.same_numbers_rtol is not None:
        text += "\n\n" + "\n".join(summary.loss_agreement(runs, study.same_numbers_rtol))
    return text


def run_compare(
    model: str = "mlp",
    designs: Sequence[Design] | None = None,
    depths: Sequence[int] | None = None,
    *,
    data: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    overrides: dict | None = None,
    workers: int | None = None,
    echo: Callable[[str], Any] | None = None,
) -> StudyResult:
    """Train every (design, depth) run into ``out_dir/<design>-d<depth>``, then write the report.

    ``out_dir`` defaults to ``runs/compare-<YYYYmmdd-HHMMSS>``; an existing non-empty folder is refused
    (``RunFolderError``) unless ``overwrite`` or it holds a study that did not finish (``study.json``
    without ``summary.txt``: a failed or interrupted study, redone in place). Everything (settings,
    data, folder) is checked before the folder is created. ``workers`` processes (default: 2 on a CPU
    with two or more cores, 1 on a GPU) each train a run and draw its plots; ``workers=1`` stays in this
    process. ``echo`` receives the
    recipe lines before the first run (``print`` when ``progress``). A run stopped by Ctrl-C or SIGTERM
    stops the study (``StopRequested``). Returns the summary rows and the report's path.
    """
    from resnorm.lab import report, summary

    if out_dir is None:
        out_dir = Path("runs") / f"compare-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    plan = plan_study(model, designs, depths, data=data, steps=steps, seed=seed, out_dir=out_dir,
                      overrides=overrides)
    workers = default_workers(plan) if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer; got {workers!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderExistsError(f"--out {out_dir} exists and is not a folder")
    if is_nonempty_dir(out_dir) and not overwrite and not unfinished_study(out_dir):
        raise RunFolderExistsError(f"output folder {out_dir} already exists and is not empty; "
                             "choose another out_dir or pass overwrite=True",
                             cli=f"output folder {out_dir} already exists and is not empty; "
                                 "choose another --out or give --overwrite")
    if overwrite:
        check_overwritable(out_dir, "study")
    validate_study_data(plan)
    overwrite = overwrite or unfinished_study(out_dir)  # a failed or interrupted compare is redone
    echo = echo if echo is not None else (print if progress else None)
    if echo is not None:
        for line in recipe_lines(plan, model):
            echo(line)
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:  # the finished marker goes first: an overwrite stopped half way is an unfinished compare
        (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    family = registry.by_study_alias(model)
    study = {
        "kind": "compare",
        "model": model,
        "family": family.name,
        "model_type": plan[0].config.model_type,
        "data": plan[0].config.data,
        "steps": plan[0].config.steps,
        "seed": seed,
        "recipe": recipe_summary(plan[0].config),
        "designs": [_design_entry(family, d) for d in _ordered_designs(plan)],
        "depths": sorted({item.depth for item in plan}),
        "depth_means": family.depth_label,
        "runs": [{"dir": item.run_dir.name, "design": item.design.name, "depth": item.depth}
                 for item in plan],
    }
    write_study(study, out_dir)

    train_plan(plan, workers=workers, overwrite=overwrite, progress=progress)

    report_path = report.build_report([out_dir], out_dir / "report.html", rebuild_run_plots=False)
    runs = [report.load_run(item.run_dir, item.design.name, item.depth) for item in plan]
    rows = [summary.summarize(r) for r in runs]
    text = summary_text(rows, runs, family)
    atomic_write_text(text + "\n", out_dir / SUMMARY_FILE)
    return StudyResult(out_dir=out_dir, rows=rows, report=report_path, summary=text)


def train_plan(plan: Sequence[StudyPlanItem], *, workers: int | None = None, overwrite: bool = False,
               progress: bool = True, desc: str = "compare") -> None:
    """Train every item of ``plan`` into its ``run_dir`` and draw its plots: ``workers`` processes side by
    side (default ``default_workers``; 1 = in this process), deepest runs first, one thread each for
    small models. A run stopped by Ctrl-C or SIGTERM stops the rest (``StopRequested``); a worker's
    error is re-raised at once."""
    if not plan:
        return
    workers = default_workers(plan) if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer; got {workers!r}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc=desc, unit="run")
    threads = min(_threads_per_worker(registry.get(item.config.model), workers) for item in plan)
    try:
        if workers == 1:
            for item in plan:
                if bar is not None:
                    bar.set_postfix_str(f"{item.design.name} depth {item.depth}")
                _stop_if_interrupted(_train_and_plot(item, overwrite, threads))
                if bar is not None:
                    bar.update()
        else:
            _run_parallel(plan, overwrite, threads, workers, bar)
    finally:
        if bar is not None:
            bar.close()


def _design_entry(family: registry.ModelFamily, design: Design) -> dict[str, Any]:
    """A design as ``study.json`` lists it: its placement and norm, or a named design's fields."""
    if family.designs is not None:
        return {"name": design.name, "fields": _design_fields(family, design)}
    return {"name": design.name, "placement": design.placement, "norm": design.norm}


def default_workers(plan: Sequence[StudyPlanItem]) -> int:
    """2 worker processes on a multi-core CPU (one run each at a time), 1 when CUDA is in use."""
    import os

    import torch

    if any(getattr(item.config, "device", "auto") in ("auto", "cuda") for item in plan) and \
            torch.cuda.is_available():
        return 1
    return max(1, min(2, os.cpu_count() or 1, len(plan)))


def _threads_per_worker(family: registry.ModelFamily, workers: int) -> int:
    """Small models are bound by per-op overhead: one thread each is fastest, and far faster when other
    processes compete for the cores (multi-threaded kernels then wait on each other)."""
    import os

    import torch

    if family.task == "text" or family.layout == "flat":
        return 1
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // workers))


def _train_and_plot(item: StudyPlanItem, overwrite: bool, threads: int) -> tuple[str, str, str | None]:
    """Train one run and draw its plots (in this process or in a worker). Returns (run folder, status,
    the signal that stopped it or None)."""
    import torch

    from resnorm.lab import report, trainer

    global _BUSY
    if _STOP is not None and _STOP.is_set():  # the study was stopped: start no further run
        return str(item.run_dir), "not started", None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    _BUSY = True
    try:
        result = trainer.train(item.config, item.run_dir, overwrite=overwrite, progress=False)
        if result.status != "interrupted":
            report.build_run_plots(report.load_run(item.run_dir, item.design.name, item.depth))
    finally:
        _BUSY = False
        torch.set_num_threads(previous)
    return str(item.run_dir), result.status, result.stop_signal


def _stop_if_interrupted(outcome: tuple[str, str, str | None]) -> None:
    _, status, stop_signal = outcome
    if status == "interrupted":
        raise StopRequested(stop_signal or "SIGINT")


_STOP = None  # in a worker: the pool's stop event (set by the main process when the study stops)
_BUSY = False  # in a worker: a run is being set up, trained or plotted


def _worker_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM in a worker: an idle worker ends at once and quietly; one busy with a run stops it the
    way the main process would (a run being set up removes what it wrote; a training run saves)."""
    import os

    if not _BUSY:
        os._exit(128 + signum)
    raise StopRequested("SIGTERM")


def _worker_init(stop=None) -> None:
    """Workers leave Ctrl-C to the main process (which stops them with SIGTERM): no tracebacks from
    idle workers. A run in progress handles SIGTERM itself: it stops after its step and saves; one
    being set up stops before it writes anything. ``stop`` (an event) keeps a worker from starting a
    run that was already queued when the study stopped."""
    import signal

    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)


def _run_parallel(plan, overwrite: bool, threads: int, workers: int, bar) -> None:
    """The plan on a pool of spawned processes, deepest runs first (they take longest)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    order = sorted(plan, key=lambda item: -item.depth)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(max_workers=min(workers, len(plan)), mp_context=context,
                               initializer=_worker_init, initargs=(stop,))
    processes = []
    try:
        with _sigint_ignored():  # workers start with Ctrl-C ignored: none dies with a traceback mid-import
            pending = {pool.submit(_train_and_plot, item, overwrite, threads) for item in order}
        processes = list(getattr(pool, "_processes", {}).values())
        while pending:
            # each finished run advances the bar; a worker's error is re-raised at once
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    raise _worker_died(processes) from None
                _stop_if_interrupted(outcome)
                if bar is not None:
                    bar.update()
    except BaseException:
        stop.set()  # before the workers are told to stop: a run already queued must not start
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _worker_died(processes: Sequence[Any]) -> BaseException:
    """What a worker process that ended abruptly means: a stop (SIGTERM/SIGINT reached it too) or a
    ``WorkerError`` naming how it ended (SIGKILL: most often the system out of memory)."""
    import signal

    codes = []
    for process in processes:
        process.join(1.0)
        if process.exitcode is not None:
            codes.append(process.exitcode)
    for sig in (signal.SIGTERM, signal.SIGINT):
        if -sig in codes or 128 + sig in codes:
            return StopRequested(signal.Signals(sig).name)
    def ended(code: int) -> str:
        try:
            return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        except ValueError:
            return f"exit status {code}"

    how = ", ".join(ended(c) for c in codes if c != 0) or "ended abruptly"
    return WorkerError(f"a worker process training the runs died ({how}; SIGKILL is most often the system "
                       "running out of memory); the runs it finished are kept: run the same command again "
                       "to redo the rest, or give --workers 1")


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes are started (a process inherits an ignored signal, and
    Python then installs no KeyboardInterrupt handler); the main process's handler comes back after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _stop_workers(pool, timeout: float = 10.0) -> None:
    """Cancel what has not started, ask running workers to stop (SIGTERM: a run saves and stops after
    its step), and kill what is still alive after ``timeout`` seconds."""
    import time

    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


def _ordered_designs(plan: Sequence[StudyPlanItem]) -> list[Design]:
    seen: dict[str, Design] = {}
    for item in plan:
        seen.setdefault(item.design.name, item.design)
    return list(seen.values())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


# kept for code that imported it from here
_name_for = name_for
