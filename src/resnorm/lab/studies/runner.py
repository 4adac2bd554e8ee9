"""Running a named study: plan, train, measure, judge, and write the study folder.

``run_study(name, budget="quick", out_dir=None, settings={...})`` checks everything it can before it
creates anything (the study's settings, every run's config, the data, the folder), prints what it is
about to do (the paper's claim and published numbers, how the lab's experiment maps onto it, the
recipe, the runs), trains the runs (``resnorm.lab.compare.train_plan``: two worker processes on a
multi-core CPU), makes the study's own measurements, judges the claim and writes::

    OUT/
      study.json          the plan: study, budget, settings, overrides, one entry per run
      measurements.json   measurements that are not training runs (e.g. gradients at initialization)
      <run>/              one run folder per run (resnorm.lab.runfolder)
      verdict.json        the outcome and each part of the claim: published, measured, holds, reason
      summary.txt         the study's table, the verdict line and the lab's summary table (written last)
      report.html         the lab's report with the claim, the verdict and the study's own figures on top
      *.png               the study's figures and the lab's comparison plots
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnorm.lab.errors import ConfigError, RunFolderExistsError
from resnorm.lab.files import atomic_write_text
from resnorm.lab.studies.base import RunOutcome, RunSpec, Study, Verdict, final_loss, format_table

__all__ = [
    "run_study",
    "StudyRun",
    "outcome_from_run",
    "load_outcomes",
    "rebuild_report",
    "check_data",
    "header_lines",
    "MEASUREMENTS_FILE",
    "VERDICT_FILE",
    "SUMMARY_FILE",
]

MEASUREMENTS_FILE = "measurements.json"
VERDICT_FILE = "verdict.json"
SUMMARY_FILE = "summary.txt"  # written last: a study folder without it did not finish


@dataclass
class StudyRun:
    """A finished study: its folder, verdict, table (header + rows), report and what it measured."""

    study: Study
    out_dir: Path
    verdict: Verdict
    header: list[str]
    rows: list[list[str]]
    outcomes: list[RunOutcome] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    wall_s: float = 0.0

    @property
    def line(self) -> str:
        return self.verdict.line(self.study.name)

    @property
    def table(self) -> str:
        return format_table(self.header, self.rows)


def check_data(study: Study, data: str) -> None:
    """``data`` must be an embedded dataset of the study's kind or an existing path."""
    from resnorm.data import EMBEDDED_IMAGE_DATASETS, EMBEDDED_TEXT_DATASETS

    names = EMBEDDED_TEXT_DATASETS if study.task == "text" else EMBEDDED_IMAGE_DATASETS
    other = EMBEDDED_IMAGE_DATASETS if study.task == "text" else EMBEDDED_TEXT_DATASETS
    what = (
        "a UTF-8 text file"
        if study.task == "text"
        else "a CIFAR-10 python-batches folder or an MNIST/Fashion-MNIST IDX folder"
    )
    if data in names:
        return
    if data in other:
        raise ConfigError(
            f"data={data}: study {study.name} needs {study.task} data: {', '.join(names)} or {what}"
        )
    if not Path(data).expanduser().exists():
        raise FileNotFoundError(
            f"data={data}: no such dataset or path (study {study.name} expects {', '.join(names)} or {what})"
        )


def header_lines(
    study: Study, budget: str, settings: Mapping[str, Any], plan: Sequence[RunSpec]
) -> list[str]:
    """What the study prints before it trains: claim, published numbers, setup, budget, recipe."""
    from resnorm.lab.config import recipe_summary

    lines = [f"study {study.name}: {study.title}", f"  paper: {study.paper}", f"  claim: {study.claim}"]
    lines += [f"  published: {p}" for p in study.published]
    lines += [f"  setup: {s}" for s in study.setup]
    shown = ", ".join(f"{k}={_show(v)}" for k, v in settings.items())
    lines.append(f"  budget: {budget} ({shown}); {len(plan)} training runs")
    if plan:
        recipes = []
        for spec in plan:
            text = recipe_summary(spec.config)
            if text not in recipes:
                recipes.append(text)
        if len(recipes) == 1:
            lines.append(f"  recipe: {recipes[0]}")
        else:
            lines.append(f"  recipe: {recipes[0]} (the first run's; the runs differ in {_differing(plan)})")
    return lines


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _differing(plan: Sequence[RunSpec]) -> str:
    first = plan[0].config.to_dict()
    keys = sorted({k for spec in plan for k, v in spec.config.to_dict().items() if first.get(k) != v})
    return ", ".join(keys) or "nothing"


def run_study(
    study: str | Study,
    budget: str = "quick",
    out_dir: str | Path | None = None,
    settings: Mapping[str, str] | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], Any] | None = None,
) -> StudyRun:
    """Run the study ``study`` (a name in ``resnorm.lab.studies.STUDIES`` or a ``Study``) at ``budget``
    (``quick`` / ``full``) into ``out_dir`` (default ``runs/study-<name>-<time>``); ``settings`` are
    ``KEY=VALUE`` pairs (study parameters or training-config overrides, as strings). A non-empty
    ``out_dir`` is refused unless ``overwrite`` or it holds this study unfinished (no ``summary.txt``).
    ``echo`` receives the header lines and the result (``print`` when ``progress``)."""
    from resnorm.lab import compare, report
    from resnorm.lab.designs import Design
    from resnorm.lab.runfolder import check_overwritable, encode_json, is_nonempty_dir, write_study
    from resnorm.lab.studies.catalog import get

    start = time.perf_counter()
    study = get(study) if isinstance(study, str) else study
    values, overrides = study.settings(budget, settings)
    check_data(study, values["data"])
    plan = study.plan(values, overrides)
    keys = [spec.key for spec in plan]
    if len(set(keys)) != len(keys):
        raise ValueError(f"study {study.name} planned two runs with the same folder name")
    if out_dir is None:
        out_dir = Path("runs") / f"study-{study.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderExistsError(f"--out {out_dir} exists and is not a folder")
    unfinished = compare.unfinished_study(out_dir, "study", study.name)  # this study, failed or stopped
    if is_nonempty_dir(out_dir) and not overwrite and not unfinished:
        raise RunFolderExistsError(
            f"output folder {out_dir} already exists and is not empty; choose "
            "another out_dir or pass overwrite=True",
            cli=f"output folder {out_dir} already exists and is not empty; choose "
            "another --out or give --overwrite",
        )
    if overwrite:
        check_overwritable(out_dir, "study")
    items = [
        compare.StudyPlanItem(
            Design(spec.design, spec.config.placement, spec.config.norm),
            spec.depth,
            out_dir / spec.key,
            spec.config,
        )
        for spec in plan
    ]
    compare.validate_study_data(items)
    echo = echo if echo is not None else (print if progress else None)
    for line in header_lines(study, budget, values, plan):
        if echo is not None:
            echo(line)
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:  # the old outcome goes first: an overwrite stopped half way is an unfinished study
        for name in (SUMMARY_FILE, VERDICT_FILE):
            (out_dir / name).unlink(missing_ok=True)
    write_study(
        {
            "kind": "study",
            "study": study.name,
            "title": study.title,
            "budget": budget,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
            "overrides": dict(overrides),
            "runs": [
                {"dir": spec.key, "design": spec.design, "depth": spec.depth, "coords": dict(spec.coords)}
                for spec in plan
            ],
        },
        out_dir,
    )
    measurements = study.measure(values, overrides, out_dir, progress=progress)
    # strict JSON (a non-finite number as null, its kind under "nonfinite"), like every file of the lab
    atomic_write_text(encode_json(measurements, indent=2) + "\n", out_dir / MEASUREMENTS_FILE)
    compare.train_plan(
        items, workers=workers, overwrite=overwrite or unfinished, progress=progress, desc=study.name
    )

    outcomes = [outcome_from_run(out_dir / spec.key, spec.coords) for spec in plan]
    verdict = study.judge(outcomes, measurements)
    header, rows = study.table(outcomes, measurements)
    figures = study.figures(outcomes, measurements, out_dir)
    atomic_write_text(
        encode_json(
            {"study": study.name, "budget": budget, **verdict.to_json(), "line": verdict.line(study.name)},
            indent=2,
        )
        + "\n",
        out_dir / VERDICT_FILE,
    )
    report_path = report.build_report(
        [out_dir],
        out_dir / "report.html",
        rebuild_run_plots=False,
        title=f"resnorm study {study.name}: {study.title}",
        preface_html=_preface(study, budget, values, verdict, header, rows),
        extra_images=figures,
    )
    runs = [report.load_run(item.run_dir, item.design.name, item.depth) for item in items]
    from resnorm.lab import summary

    lab_table = summary.format_summary_table([summary.summarize(r) for r in runs], notes=True)
    result = StudyRun(
        study,
        out_dir,
        verdict,
        header,
        rows,
        outcomes,
        measurements,
        report_path,
        wall_s=time.perf_counter() - start,
    )
    text = [
        result.table,
        "",
        result.line,
        *[f"  note: {n}" for n in verdict.notes],
        "",
        "runs:",
        lab_table,
        "",
    ]
    atomic_write_text("\n".join(text), out_dir / SUMMARY_FILE)
    return result


def outcome_from_run(run_dir: str | Path, coords: Mapping[str, Any] | None = None) -> RunOutcome:
    """The ``RunOutcome`` of a run folder (``result.json`` and ``metrics.jsonl``); ``coords``: the run's
    coordinates in its study (``RunSpec.coords``)."""
    from resnorm.lab.runfolder import read_metrics, read_result_dict

    run_dir = Path(run_dir)
    result = read_result_dict(run_dir) or {}
    records = read_metrics(Path(run_dir))
    curve = [
        (r["step"], r["loss"]) for r in records if r.get("kind") == "train" and r.get("loss") is not None
    ]
    probes = [r for r in records if r.get("kind") == "probe"]
    final = result.get("final") or {}
    return RunOutcome(
        key=run_dir.name,
        coords=dict(coords or {}),
        status=result.get("status", "interrupted"),
        verdict=result.get("verdict"),
        final_loss=final_loss(curve),
        val_loss=final.get("val_loss"),
        val_acc=final.get("val_acc"),
        baseline=result.get("baseline_loss"),
        steps=result.get("steps", 0),
        wall_s=result.get("wall_s"),
        probes=probes,
        curve=curve,
    )


def load_outcomes(out_dir: str | Path) -> tuple[list[RunOutcome], dict[str, Any]]:
    """The outcomes and measurements of a study folder (to judge or redraw it again); a damaged
    ``study.json`` or ``measurements.json`` is a ``RunFolderError`` naming the file."""
    from resnorm.lab.errors import RunFolderError
    from resnorm.lab.runfolder import decode_json, read_study

    out_dir = Path(out_dir)
    meta = read_study(out_dir) or {}
    runs = meta.get("runs") or []
    if not isinstance(runs, list) or not all(
        isinstance(e, dict) and isinstance(e.get("dir"), str) and isinstance(e.get("coords", {}), dict)
        for e in runs
    ):
        raise RunFolderError(f"{out_dir / 'study.json'}: its runs are not valid entries "
                             "(the file is corrupted)")
    outcomes = []
    for entry in runs:
        if (out_dir / entry["dir"] / "metrics.jsonl").is_file():
            outcomes.append(outcome_from_run(out_dir / entry["dir"], entry.get("coords", {})))
    path = out_dir / MEASUREMENTS_FILE
    measurements: Any = {}
    if path.is_file():
        try:
            measurements = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            measurements = None
        if not isinstance(measurements, dict):
            raise RunFolderError(f"{path}: not a JSON object of measurements (the file is corrupted)")
        measurements = decode_json(measurements)
    return outcomes, measurements


def rebuild_report(
    out_dir: str | Path, out: str | Path | None = None, *, title: str | None = None
) -> Path:
    """Rebuild a named study folder's ``report.html`` (or ``out``) from its files: the lab's report with
    the study's claim, verdict, table and own figures on top, as ``run_study`` wrote it (``resnorm
    report`` on a study folder; a plain report would drop the verdict)."""
    from resnorm.lab import report
    from resnorm.lab.errors import RunFolderError
    from resnorm.lab.runfolder import read_study
    from resnorm.lab.studies.catalog import STUDIES, get

    out_dir = Path(out_dir)
    meta = read_study(out_dir) or {}
    if meta.get("study") not in STUDIES:
        raise RunFolderError(f"{out_dir / 'study.json'}: names no known study ({meta.get('study')!r}); "
                             f"known: {', '.join(STUDIES)}")
    study = get(meta["study"])
    outcomes, measurements = load_outcomes(out_dir)
    try:
        verdict = study.judge(outcomes, measurements)
        header, rows = study.table(outcomes, measurements)
    except (KeyError, TypeError) as err:  # coordinates or measurements that are not this study's
        raise RunFolderError(f"{out_dir}: its study.json or measurements.json do not fit study {study.name} "
                             f"(missing or wrong {err}; the files are corrupted)") from None
    figures = study.figures(outcomes, measurements, out_dir)
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return report.build_report(
        [out_dir],
        out if out is not None else out_dir / "report.html",
        title=title or f"resnorm study {study.name}: {study.title}",
        preface_html=_preface(study, str(meta.get("budget", "")), settings, verdict, header, rows),
        extra_images=figures,
    )


def _preface(
    study: Study,
    budget: str,
    settings: Mapping[str, Any],
    verdict: Verdict,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
) -> str:
    esc = html.escape
    cls = {"reproduced": "trained", "partly reproduced": "stuck", "not reproduced": "diverged"}.get(
        verdict.outcome, ""
    )
    parts = [
        f"<p class='meta'><b>Paper:</b> {esc(study.paper)}<br><b>Claim:</b> {esc(study.claim)}</p>",
        "<ul class='meta'>"
        + "".join(f"<li>published: {esc(p)}</li>" for p in study.published)
        + "".join(f"<li>setup: {esc(s)}</li>" for s in study.setup)
        + "</ul>",
        f"<p class='meta'>budget: {esc(budget)} ("
        + esc(", ".join(f"{k}={_show(v)}" for k, v in settings.items()))
        + ")</p>",
        f"<h2>Verdict: <span class='{cls}'>{esc(verdict.outcome)}</span></h2>",
        "<table class='summary'><tr><th>part of the claim</th><th>published</th><th>measured</th>"
        "<th>holds</th><th>why not</th></tr>",
    ]
    for c in verdict.checks:
        mark = {True: "yes", False: "no", None: "not judged"}[c.holds]
        kind = {True: "trained", False: "diverged", None: ""}[c.holds]
        parts.append(
            f"<tr><td class='text'>{esc(c.claim)}</td><td class='text'>{esc(c.published)}</td>"
            f"<td class='text'>{esc(c.measured)}</td><td class='{kind}'>{mark}</td>"
            f"<td class='text'>{esc(c.reason)}</td></tr>"
        )
    parts.append("</table>")
    if verdict.notes:
        parts.append("<ul class='meta'>" + "".join(f"<li>{esc(n)}</li>" for n in verdict.notes) + "</ul>")
    parts.append(
        "<h2>The study's table</h2><table class='summary'><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr>"
    )
    for row in rows:
        parts.append("<tr>" + "".join(f"<td class='text'>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)
