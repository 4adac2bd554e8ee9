"""Per-run plots and a self-contained HTML report, built from run folders only.

A run folder (written by :func:`resnorm.lab.trainer.train`) holds ``config.yaml``, ``metrics.jsonl``
and, when the run finished, ``result.json``. A study folder (written by ``resnorm compare``) holds one
run folder per design and depth, plus ``study.json`` naming each run's design and depth. Because only
these files are read, ``resnorm report RUN_DIR...`` rebuilds everything from saved runs.

- :func:`load_run` parses one run folder into :class:`RunData`;
- :func:`build_run_plots` writes ``loss.png``, ``grad_norm.png`` and ``act_rms.png`` into a run folder;
- :func:`build_report` writes ``report.html``: a summary table, study-level comparison plots and, for
  each plot kind, a grid (designs × depths) of the per-run plots, all PNGs embedded as base64.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from resnorm.lab import plots

__all__ = [
    "RunData",
    "load_run",
    "read_metrics",
    "find_run_dirs",
    "summarize",
    "format_summary_table",
    "build_run_plots",
    "build_study_plots",
    "build_report",
    "RUN_PLOTS",
]

RUN_PLOTS = {
    "loss.png": ("Loss, accuracy and gradient norm", plots.plot_loss),
    "grad_norm.png": ("Per-block gradient norm over training", plots.plot_grad_heatmap),
    "act_rms.png": ("Activation RMS against depth", plots.plot_act_rms),
}
STUDY_PLOTS = {
    "study_accuracy.png": "Final validation result against depth",
    "study_loss.png": "Training loss by design and depth",
    "study_grad_norm.png": "Per-block gradient norm, first and last probe",
    "study_act_rms.png": "Per-block activation RMS, first and last probe",
}
# "trained": final smoothed train loss below 80% of the first logged loss and, for classifiers, of the
# loss of the uniform guess, ln(10) (every image dataset resnorm.data reads has 10 classes)
TRAINED_LOSS_FRACTION = 0.8
CHANCE_CLASSES = 10


@dataclass
class RunData:
    """One run folder, parsed. ``train``/``val``/``probes``/``events`` are metrics.jsonl records."""

    path: Path
    name: str
    config: dict
    design: str
    depth: int | None
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)


def read_metrics(path: str | Path) -> dict[str, list[dict]]:
    """Records of a ``metrics.jsonl`` grouped by ``kind`` (train, val, probe, event).

    Blank lines and a truncated last line (a run killed mid-write) are skipped; other malformed lines
    raise ``ValueError`` naming the file and line.
    """
    path = Path(path)
    groups: dict[str, list[dict]] = {"train": [], "val": [], "probe": [], "event": []}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict) or "kind" not in record:
            raise ValueError(f"{path}:{number}: expected a JSON object with a 'kind' field")
        groups.setdefault(record["kind"], []).append(record)
    # a resumed run may log a step twice: keep the latest record of each step, in step order
    for kind in ("train", "val", "probe"):
        by_step = {r["step"]: r for r in groups[kind] if "step" in r}
        groups[kind] = [by_step[s] for s in sorted(by_step)]
    return groups


def load_run(path: str | Path, design: str | None = None, depth: int | None = None) -> RunData:
    """Parse a run folder. ``design``/``depth`` override what is derived from its ``config.yaml``."""
    path = Path(path)
    metrics_file = path / "metrics.jsonl"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"not a run folder: {path} (no metrics.jsonl in it)")
    config: dict = {}
    if (path / "config.yaml").is_file():
        loaded = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) else {}
    result: dict = {}
    if (path / "result.json").is_file():
        try:
            result = json.loads((path / "result.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            result = {}
    groups = read_metrics(metrics_file)
    if depth is None:
        depth = _depth_of(config, groups["probe"])
    return RunData(path=path, name=path.name, config=config, design=design or design_of(config),
                   depth=depth, train=groups["train"], val=groups["val"], probes=groups["probe"],
                   events=groups["event"], result=result)


def design_of(config: dict) -> str:
    """A design label for a config: a named design when one matches, else ``placement:norm``."""
    from resnorm.lab.compare import design_name  # lazy: compare imports this module

    return design_name(config)


def find_run_dirs(paths: Iterable[str | Path]) -> list[tuple[Path, str | None, int | None]]:
    """Expand run and study folders into ``(run_dir, design, depth)``; design/depth None = derive.

    A study folder's ``study.json`` gives order, design and depth; without it, every sub-folder that
    holds a ``metrics.jsonl`` is a run. Raises ``FileNotFoundError`` for a path that is neither.
    """
    found: list[tuple[Path, str | None, int | None]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"no such run or study folder: {path}")
        if (path / "metrics.jsonl").is_file():
            found.append((path, None, None))
            continue
        study = path / "study.json"
        if study.is_file():
            entries = json.loads(study.read_text(encoding="utf-8")).get("runs", [])
            runs = [(path / e["dir"], e.get("design"), e.get("depth")) for e in entries
                    if (path / e["dir"] / "metrics.jsonl").is_file()]
        else:
            runs = [(p, None, None) for p in sorted(path.iterdir()) if (p / "metrics.jsonl").is_file()]
        if not runs:
            raise FileNotFoundError(f"{path} is neither a run folder (config.yaml + metrics.jsonl) nor a "
                                    "study folder (sub-folders that are run folders)")
        found.extend(runs)
    return found


# ----------------------------------------------------------------------------------------------
# summary


def summarize(run: RunData) -> dict:
    """One row of the summary table: design, depth, status, verdict, final metrics, grad ratio."""
    final = run.result.get("final") or {}
    val_acc = final.get("val_acc", _last(run.val, "acc"))
    val_loss = final.get("val_loss", _last(run.val, "loss"))
    train_loss = final.get("train_loss", _last(run.train, "loss"))
    status = run.result.get("status") or _status_from_events(run.events)
    grad_ratio = run.result.get("grad_ratio")
    if grad_ratio is None:
        grad_ratio = _grad_ratio(run.probes)
    steps = run.result.get("steps", run.train[-1]["step"] if run.train else 0)
    wall_s = run.result.get("wall_s", run.train[-1].get("time_s") if run.train else None)
    return {
        "run": run.name,
        "design": run.design,
        "depth": run.depth,
        "status": status,
        "verdict": _verdict(run, status),
        "val_acc": val_acc,
        "val_loss": val_loss,
        "train_loss": train_loss,
        "grad_ratio": grad_ratio,
        "steps": steps,
        "wall_s": wall_s,
    }


SUMMARY_COLUMNS = [
    ("design", "design"),
    ("depth", "depth"),
    ("verdict", "result"),
    ("val_acc", "val acc"),
    ("val_loss", "val loss"),
    ("grad_ratio", "grad first/last"),
    ("steps", "steps"),
    ("wall_s", "time"),
]


def format_cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "val_acc":
        return f"{100.0 * value:.1f}%"
    if key in ("val_loss", "train_loss"):
        return f"{value:.3f}" if math.isfinite(value) else "nan"
    if key == "grad_ratio":
        if value == 0:
            return "0 (vanished)"
        return f"{value:.2e}" if math.isfinite(value) else "nan"
    if key == "wall_s":
        return f"{value:.1f}s"
    return str(value)


def format_summary_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`summarize` rows, for the terminal."""
    header = [title for _, title in SUMMARY_COLUMNS]
    body = [[format_cell(key, row.get(key)) for key, _ in SUMMARY_COLUMNS] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


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
) -> Path:
    """Load the runs under ``paths`` (run or study folders), draw every plot, write ``report.html``.

    ``out`` is the HTML file to write; by default ``report.html`` inside the only folder given, or in
    the current directory when several are given. ``rebuild_run_plots=False`` keeps a run's PNGs when
    all three exist and are newer than its metrics.jsonl. Returns the path of the HTML file.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("build_report needs at least one run or study folder")
    entries = find_run_dirs(paths)
    runs = [load_run(p, design, depth) for p, design, depth in entries]
    if out is None:
        out = Path(paths[0]) / "report.html" if len(paths) == 1 else Path("report.html")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    iterator: Iterable[RunData] = runs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(runs, desc="plots", unit="run", leave=False)
    run_images = {run.path: (build_run_plots(run) if rebuild_run_plots or not _plots_fresh(run)
                             else {name: run.path / name for name in RUN_PLOTS}) for run in iterator}
    study_images = build_study_plots(runs, out.parent) if len(runs) > 1 else {}
    html_text = render_html(runs, run_images, study_images, title=title or _default_title(runs, paths))
    out.write_text(html_text, encoding="utf-8")
    return out


def render_html(
    runs: Sequence[RunData],
    run_images: dict[Path, dict[str, Path]],
    study_images: dict[str, Path],
    *,
    title: str,
) -> str:
    """The report page, every image inlined as a base64 data URI (no external files)."""
    rows = [summarize(r) for r in runs]
    parts = [_HEAD.format(title=html.escape(title)), f"<h1>{html.escape(title)}</h1>"]
    parts.append(f"<p class='meta'>{len(runs)} run(s); generated "
                 f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by resnorm.lab.report. "
                 f"'result': trained = final training loss below {TRAINED_LOSS_FRACTION:.0%} of its "
                 f"first value (classifiers: and of ln {CHANCE_CLASSES}, the uniform guess); "
                 "'grad first/last' = gradient norm of the first block over that of the "
                 "last (mean over probes; &lt;&lt; 1 means gradients vanish toward the input).</p>")
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
    designs = plots._ordered(r.design for r in runs)
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
        parts.append(f"<details><summary>{html.escape(run.name)} — {html.escape(str(run.path))}</summary>"
                     f"<pre>{html.escape(config_text)}</pre></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# helpers


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
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


def _summary_table_html(rows: Sequence[dict]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in [("run", "run")] + SUMMARY_COLUMNS)
    body = []
    for row in rows:
        cells = [f"<td class='text'>{html.escape(row['run'])}</td>"]
        for key, _ in SUMMARY_COLUMNS:
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
        study = Path(paths[0]) / "study.json"
        if study.is_file():
            meta = json.loads(study.read_text(encoding="utf-8"))
            if meta.get("kind") == "compare" and meta.get("model") and meta.get("data"):
                return f"resnorm compare: {meta['model']} on {meta['data']}"
        return f"resnorm study {Path(paths[0]).resolve().name}"
    return f"resnorm report: {len(runs)} runs"


def _depth_of(config: dict, probes: list[dict]) -> int | None:
    model = config.get("model")
    if model == "gpt" and config.get("n_layer") is not None:
        return int(config["n_layer"])
    if model in ("residual-mlp", "resnet-cifar") and config.get("depth") is not None:
        return int(config["depth"])
    if probes and probes[0].get("grad_norm"):
        return len(probes[0]["grad_norm"])
    return None


def _plots_fresh(run: RunData) -> bool:
    metrics_time = (run.path / "metrics.jsonl").stat().st_mtime
    pngs = [run.path / name for name in RUN_PLOTS]
    return all(p.is_file() and p.stat().st_mtime >= metrics_time for p in pngs)


def _last(records: Sequence[dict], key: str):
    for record in reversed(records):
        if record.get(key) is not None:
            return record[key]
    return None


def _status_from_events(events: Sequence[dict]) -> str:
    names = [e.get("event") for e in events]
    if "diverged" in names:
        return "diverged"
    if names and names[-1] == "interrupted":
        return "interrupted"
    return "completed"


def _grad_ratio(probes: Sequence[dict]) -> float | None:
    ratios = []
    for p in probes:
        g = p.get("grad_norm") or []
        if len(g) >= 2 and g[-1] and math.isfinite(g[0]) and math.isfinite(g[-1]):
            ratios.append(g[0] / g[-1])
    return sum(ratios) / len(ratios) if ratios else None


def _verdict(run: RunData, status: str) -> str:
    if status == "diverged":
        return "diverged"
    losses = [r.get("loss") for r in run.train]
    losses = [float(v) for v in losses if v is not None]
    if not losses:
        return "-"
    if not all(math.isfinite(v) for v in losses[-5:]):
        return "diverged"
    smoothed = plots.smooth(losses)
    reference = losses[0]
    if any(r.get("acc") is not None for r in run.val):
        # a classifier: measure against chance too, so that a net whose loss blew up at the start and
        # then settled on the uniform guess does not count as trained
        reference = min(reference, math.log(CHANCE_CLASSES))
    return "trained" if smoothed[-1] < TRAINED_LOSS_FRACTION * reference else "did not train"
