"""Per-run plots and a self-contained HTML report, built from run folders only.

A run folder (``resnorm.lab.runfolder``) holds ``config.yaml``, ``metrics.jsonl`` and, when the run
finished, ``result.json``. A study folder (written by ``resnorm compare``) holds one run folder per
design and depth, plus ``study.json`` naming each run's design and depth. Because only these files are
read, ``resnorm report RUN_DIR...`` rebuilds everything from saved runs.

- :func:`build_run_plots` writes ``loss.png``, ``grad_norm.png`` and ``act_rms.png`` into a run folder;
- :func:`build_report` writes ``report.html``: a summary table (``resnorm.lab.summary``), study-level
  comparison plots and, for each plot kind, a grid (designs x depths) of the per-run plots, all PNGs
  embedded as base64.

``load_run``, ``RunData``, ``find_run_dirs`` (``resnorm.lab.runfolder``) and ``summarize``,
``format_summary_table`` (``resnorm.lab.summary``) are re-exported here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Sequence
from pathlib import Path

import yaml

from resnorm.lab import plots
from resnorm.lab.designs import in_order
from resnorm.lab.errors import ConfigError, RunFolderError, RunFolderExistsError
from resnorm.lab.files import atomic_write_text
from resnorm.lab.runfolder import METRICS_FILE, RunData, find_run_dirs, load_run, printable, read_study
from resnorm.lab.summary import (
    COLUMNS,
    SUMMARY_COLUMNS,
    format_cell,
    format_summary_table,
    summarize,
    summary_notes,
)

__all__ = [
    "RunData",
    "load_run",
    "find_run_dirs",
    "summarize",
    "format_summary_table",
    "build_run_plots",
    "build_study_plots",
    "build_report",
    "RUN_PLOTS",
    "STUDY_PLOTS",
]

RUN_PLOTS = {
    "loss.png": ("Loss, accuracy and gradient norm", plots.plot_loss),
    "grad_norm.png": ("Per-block gradient norm over training", plots.plot_grad_heatmap),
    "act_rms.png": ("Activation RMS against depth", plots.plot_act_rms),
}
STUDY_PLOTS = {
    "study_accuracy.png": "Final validation result against depth",
    "study_loss_by_design.png": "Training loss of each design at every depth (He et al. 2016's view)",
    "study_loss.png": "Training loss by design and depth",
    "study_grad_norm.png": "Per-block gradient norm, first and last probe",
    "study_act_rms.png": "Per-block activation RMS, first and last probe",
}
CHANCE_CLASSES = 10  # the accuracy plot's chance line: every image dataset resnorm.data reads has 10 classes


# ----------------------------------------------------------------------------------------------
# building


def build_run_plots(run: RunData) -> dict[str, Path]:
    """Write the three per-run PNGs into the run folder; returns file name -> path."""
    return {name: fn(run, run.path / name) for name, (_, fn) in RUN_PLOTS.items()}


def build_study_plots(runs: Sequence[RunData], out_dir: str | Path) -> dict[str, Path]:
    """Write the study-level PNGs (accuracy vs depth, losses, gradient and activation profiles)."""
    out_dir = Path(out_dir)
    return {
        "study_accuracy.png": plots.plot_study_accuracy(runs, out_dir / "study_accuracy.png",
                                                        chance=1.0 / CHANCE_CLASSES),
        "study_loss_by_design.png": plots.plot_study_losses_by_design(
            runs, out_dir / "study_loss_by_design.png"),
        "study_loss.png": plots.plot_study_losses(runs, out_dir / "study_loss.png"),
        "study_grad_norm.png": plots.plot_study_profiles(runs, out_dir / "study_grad_norm.png", "grad_norm"),
        "study_act_rms.png": plots.plot_study_profiles(runs, out_dir / "study_act_rms.png", "act_rms"),
    }


def build_report(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    title: str | None = None,
    progress: bool = False,
    rebuild_run_plots: bool = True,
    preface_html: str = "",
    extra_images: dict[str, tuple[Path, str]] | None = None,
) -> Path:
    """Load the runs under ``paths`` (run or study folders), draw every plot, write ``report.html``.

    ``out`` is the HTML file to write; by default ``report.html`` inside the only folder given, or in
    the current directory when several are given. ``rebuild_run_plots=False`` keeps a run's PNGs when
    all three exist and are newer than its metrics.jsonl. ``preface_html`` (trusted, already escaped)
    goes right under the title, and ``extra_images`` (name -> (PNG path, caption)) right after it: a
    named study's claim, verdict and own figures (``resnorm.lab.studies``). Returns the path of the HTML
    file.
    """
    paths = list(paths)
    if not paths:
        raise ConfigError("build_report needs at least one run or study folder")
    entries = find_run_dirs(paths)
    runs = [load_run(p, design, depth) for p, design, depth in entries]
    if out is None:
        out = Path(paths[0]) / "report.html" if len(paths) == 1 else Path("report.html")
    out = Path(out)
    if out.is_dir():
        raise RunFolderError(f"the report's output {out} is a folder; give the HTML file to write",
                             cli=f"--out {out} is a folder; give the HTML file to write")
    if out.exists() and not is_report_file(out):  # never replace a file resnorm did not write
        raise RunFolderExistsError(f"{out} exists and is not a resnorm report; give another output file",
                                   cli=f"{printable(str(out))} exists and is not a resnorm report; "
                                       "give another --out")
    out.parent.mkdir(parents=True, exist_ok=True)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(runs), desc="plots", unit="run", leave=False)
    run_images = {}
    try:
        for run in runs:
            run_images[run.path] = (build_run_plots(run) if rebuild_run_plots or not _plots_fresh(run)
                                    else {name: run.path / name for name in RUN_PLOTS})
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:  # cleared before an error is printed
            bar.close()
    study_images = build_study_plots(runs, out.parent) if len(runs) > 1 else {}
    html_text = render_html(runs, run_images, study_images, title=title or _default_title(runs, paths),
                            preface_html=preface_html, extra_images=extra_images)
    atomic_write_text(html_text, out)
    return out


def is_report_file(path: str | Path) -> bool:
    """Whether ``path`` is an HTML report that resnorm wrote (its generator mark, or the line every
    report has said since the first version): the only kind of existing file a report may replace."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return False
    return _GENERATOR.encode() in text or b"by resnorm.lab.report" in text


def render_html(
    runs: Sequence[RunData],
    run_images: dict[Path, dict[str, Path]],
    study_images: dict[str, Path],
    *,
    title: str,
    preface_html: str = "",
    extra_images: dict[str, tuple[Path, str]] | None = None,
) -> str:
    """The report page, every image inlined as a base64 data URI (no external files)."""
    rows = [summarize(r) for r in runs]
    parts = [_HEAD.format(title=html.escape(title)), f"<h1>{html.escape(title)}</h1>"]
    if preface_html:
        parts.append(preface_html)
    if extra_images:
        parts.append("<div class='study'>")
        for path, caption in extra_images.values():
            parts.append(f"<figure>{_img(path, caption)}"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append(f"<p class='meta'>{len(runs)} run(s); generated "
                 f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by resnorm.lab.report. "
                 f"{html.escape(summary_notes(rows, [k for k, _ in _html_columns(rows)]))}</p>")
    parts.append("<h2>Summary</h2><div class='study'>")
    parts.append(_summary_table_html(rows))
    first = "study_accuracy.png"
    if first in study_images:
        parts.append(f"<figure class='beside'>{_img(study_images[first], STUDY_PLOTS[first])}"
                     f"<figcaption>{html.escape(STUDY_PLOTS[first])}</figcaption></figure>")
    parts.append("</div>")
    if study_images:
        parts.append("<h2>Comparison</h2><div class='study'>")
        for name, caption in STUDY_PLOTS.items():
            if name in study_images and name != first:
                parts.append(f"<figure>{_img(study_images[name], caption)}"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    designs = in_order(r.design for r in runs)
    depths = sorted({r.depth for r in runs if r.depth is not None}, key=int)
    if any(r.depth is None for r in runs):
        depths.append(None)
    for name, (caption, _) in RUN_PLOTS.items():
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append("<div class='scroll'><table class='grid'><tr><th></th>")
        parts += [f"<th>depth {d}</th>" if d is not None else "<th>-</th>" for d in depths]
        parts.append("</tr>")
        for design in designs:
            parts.append(f"<tr><th class='rowhead'>{html.escape(design)}</th>")
            for depth in depths:
                cell = [r for r in runs if r.design == design and r.depth == depth]
                imgs = "".join(_img(run_images[r.path][name], f"{r.name} {name}") for r in cell)
                parts.append(f"<td>{imgs}</td>")
            parts.append("</tr>")
        parts.append("</table></div>")
    parts.append("<h2>Configurations</h2>")
    for run in runs:
        config_text = yaml.safe_dump(run.config, sort_keys=True) if run.config else "(no config.yaml)"
        where = html.escape(printable(str(run.path)))
        parts.append(f"<details><summary>{html.escape(run.name)} — {where}</summary>"
                     f"<pre>{html.escape(config_text)}</pre></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# helpers


_GENERATOR = '<meta name="generator" content="resnorm.lab.report">'
_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="resnorm.lab.report">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em 2em; color: #222; }}
h1 {{ font-size: 1.5em; margin-bottom: 0.2em; }}
h2 {{ font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }}
.meta {{ color: #555; font-size: 0.9em; max-width: 70em; }}
table.summary {{ border-collapse: collapse; font-size: 0.88em; }}
table.summary th, table.summary td {{ border: 1px solid #ccc; padding: 2px 7px; text-align: right; }}
table.summary th {{ background: #f3f3f3; }}
table.summary td.text {{ text-align: left; }}
td.trained {{ background: #e3f4e1; }}
td.stuck {{ background: #fbeed5; }}
td.diverged {{ background: #f9dcdc; }}
.study {{ display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }}
.study figure {{ margin: 0; }}
.study figure.beside {{ flex: 1 1 380px; max-width: 650px; }}
.study figure.beside img {{ width: 100%; }}
.study img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; text-align: center; }}
.scroll {{ overflow-x: auto; }}
table.grid {{ border-collapse: collapse; }}
table.grid td {{ vertical-align: top; padding: 2px; min-width: 460px; }}
table.grid td img {{ width: 100%; display: block; }}
table.grid th.rowhead {{ writing-mode: vertical-rl; transform: rotate(180deg); font-weight: 600; }}
details pre {{ background: #f7f7f7; padding: 0.6em; font-size: 0.85em; }}
</style></head><body>"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"


def _html_columns(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """The default columns, plus step time and peak memory when a run recorded them."""
    extra = [(k, COLUMNS[k]) for k in ("step_time_s", "peak_memory_mib")
             if any(row.get(k) is not None for row in rows)]
    return [*SUMMARY_COLUMNS, *extra]


def _summary_table_html(rows: Sequence[dict]) -> str:
    columns = _html_columns(rows)
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in [("run", "run"), *columns])
    body = []
    for row in rows:
        cells = [f"<td class='text'>{html.escape(row['run'])}</td>"]
        for key, _ in columns:
            text = html.escape(format_cell(key, row.get(key)))
            cls = "text" if key == "design" else ""
            if key == "verdict":
                cls = {"trained": "trained", "did not train": "stuck", "diverged": "diverged"}.get(
                    row.get(key), "")
            cells.append(f"<td class='{cls}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='summary'><tr>{head}</tr>" + "".join(body) + "</table>"


def _default_title(runs: Sequence[RunData], paths: Sequence[str | Path]) -> str:
    if len(runs) == 1:
        return f"resnorm run {runs[0].name}"
    if len(paths) == 1:
        meta = read_study(paths[0]) if Path(paths[0]).is_dir() else None
        if meta and meta.get("kind") == "compare" and meta.get("model") and meta.get("data"):
            return f"resnorm compare: {meta['model']} on {meta['data']}"
        return f"resnorm study {Path(paths[0]).resolve().name}"
    return f"resnorm report: {len(runs)} runs"


def _plots_fresh(run: RunData) -> bool:
    metrics_time = (run.path / METRICS_FILE).stat().st_mtime
    pngs = [run.path / name for name in RUN_PLOTS]
    return all(p.is_file() and p.stat().st_mtime >= metrics_time for p in pngs)
