"""What a run amounts to: its verdict, its gradient ratio, and one row of the summary table.

The verdict of a run (``verdict``; written to ``result.json`` by the trainer):

- ``diverged``: the loss or gradient norm became NaN/inf (the run stopped there);
- ``trained``: the final training loss (mean of the last ``spike_window`` = 50 training losses) *and*
  the last validation loss are both at least ``TRAINED_MARGIN`` = 5% below the task's baseline, the
  loss of predicting the training set's class frequencies (classification: the class-prior entropy,
  ln 10 = 2.303 nats for balanced digits) or character frequencies (text: the unigram entropy). A GPT
  stuck at the unigram plateau, or a classifier no better than the prior, is not "trained" however
  far its loss fell from the start; a network whose training loss fell but whose validation loss did
  not (e.g. BatchNorm statistics that do not match at evaluation) is not "trained" either;
- ``did not train``: otherwise.

The gradient ratio of a probe is the first block's gradient norm over the last block's
(``probes.grad_ratio``): much less than 1 means gradients vanish toward the input, much more than 1
that they explode. Over a run it spans many orders of magnitude, so it is summarized by its
geometric mean ``exp(mean(ln r))`` (an exactly-zero ratio makes it 0), next to the first and the last
probe's own ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from resnorm.lab.probes import grad_ratio
from resnorm.lab.runfolder import RunData

__all__ = ["TRAINED_MARGIN", "VERDICTS", "verdict", "geometric_mean", "grad_ratio_summary", "summarize",
           "format_cell", "format_summary_table", "SUMMARY_COLUMNS", "COLUMNS", "summary_notes",
           "loss_agreement"]

TRAINED_MARGIN = 0.05
VERDICTS = ("trained", "did not train", "diverged")
RECENT_LOSSES = 50  # legacy runs without result.json: mean of this many last training losses


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def verdict(status: str | None, train_loss: float | None, baseline_loss: float | None,
            val_loss: float | None = None) -> str | None:
    """``trained`` / ``did not train`` / ``diverged`` (module docstring); None when there is no baseline
    or no training loss to judge."""
    if status == "diverged" or (train_loss is not None and not _finite(train_loss)):
        return "diverged"
    if train_loss is None or baseline_loss is None or not _finite(baseline_loss):
        return None
    limit = (1.0 - TRAINED_MARGIN) * baseline_loss
    if train_loss > limit:
        return "did not train"
    if val_loss is not None and not (_finite(val_loss) and val_loss <= limit):
        return "did not train"
    return "trained"


def geometric_mean(values: Sequence[float]) -> float | None:
    """``exp(mean(ln v))`` of positive values; 0 when one is 0, inf when one is inf; None when empty."""
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    if any(v < 0 for v in values):
        raise ValueError("geometric_mean needs non-negative values")
    if any(v == 0 for v in values):
        return 0.0
    if any(math.isinf(v) for v in values):
        return math.inf
    return math.exp(sum(math.log(v) for v in values) / len(values))


def grad_ratio_summary(ratios: Sequence[float]) -> dict[str, float | None]:
    """``{"grad_ratio": geometric mean, "grad_ratio_first": first, "grad_ratio_last": last}``."""
    ratios = [r for r in ratios if r is not None]
    return {"grad_ratio": geometric_mean(ratios), "grad_ratio_first": ratios[0] if ratios else None,
            "grad_ratio_last": ratios[-1] if ratios else None}


def _probe_ratios(probes: Sequence[dict]) -> list[float]:
    return [r for r in (grad_ratio(p) for p in probes) if r is not None]


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


def summarize(run: RunData) -> dict:
    """One row of the summary table: design, depth, status, verdict, final losses and accuracy, gradient
    ratios, steps, time. Read from ``result.json`` where it has the value, else from the metrics."""
    result = run.result or {}
    final = result.get("final") or {}
    val_acc = final.get("val_acc", _last(run.val, "acc"))
    val_loss = final.get("val_loss", _last(run.val, "loss"))
    train_loss = final.get("train_loss")
    if train_loss is None and run.train:
        recent = [r.get("loss") for r in run.train[-RECENT_LOSSES:] if r.get("loss") is not None]
        train_loss = sum(recent) / len(recent) if recent else None
    status = result.get("status") or _status_from_events(run.events)
    ratios = grad_ratio_summary(_probe_ratios(run.probes))
    for key in ratios:
        if result.get(key) is not None:
            ratios[key] = result[key]
    baseline = result.get("baseline_loss")
    judged = result.get("verdict") or verdict(status, train_loss, baseline, val_loss)
    if judged is None and status != "diverged" and val_acc is not None and train_loss is not None:
        # a run from before baselines were recorded: a 10-class classifier's uniform guess, ln 10
        judged = verdict(status, train_loss, math.log(10), val_loss)
    steps = result.get("steps", run.train[-1]["step"] if run.train else 0)
    wall_s = result.get("wall_s", run.train[-1].get("time_s") if run.train else None)
    step_time_s = result.get("step_time_s")
    peak_memory_mib = result.get("peak_memory_mib")
    return {
        "run": run.name,
        "design": run.design,
        "depth": run.depth,
        "status": status,
        "verdict": judged or "-",
        "train_loss": train_loss,
        "baseline_loss": baseline,
        "val_acc": val_acc,
        "val_loss": val_loss,
        **ratios,
        "steps": steps,
        "wall_s": wall_s,
        "step_time_s": step_time_s,
        "peak_memory_mib": peak_memory_mib,
    }


COLUMNS = {  # every column a summary table can show: row key -> title
    "design": "design",
    "depth": "depth",
    "verdict": "result",
    "train_loss": "train loss",
    "val_acc": "val acc",
    "val_loss": "val loss",
    "grad_ratio": "grad ratio",
    "grad_ratio_last": "at end",
    "steps": "steps",
    "wall_s": "time",
    "step_time_s": "step time",
    "peak_memory_mib": "peak mem",
}
# the default table (a study may choose its own columns: registry.StudyDefaults.columns)
SUMMARY_COLUMNS = [(key, COLUMNS[key]) for key in ("design", "depth", "verdict", "train_loss", "val_acc",
                                                   "val_loss", "grad_ratio", "grad_ratio_last", "steps",
                                                   "wall_s")]


def format_cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "val_acc":
        return f"{100.0 * value:.1f}%"
    if key in ("val_loss", "train_loss", "baseline_loss"):
        return f"{value:.3f}" if math.isfinite(value) else "nan"
    if key.startswith("grad_ratio"):
        if value == 0:
            return "0 (vanished)"
        return f"{value:.2e}" if math.isfinite(value) else str(value)
    if key == "wall_s":
        return f"{value:.1f}s"
    if key == "step_time_s":
        return f"{1000.0 * value:.1f}ms"
    if key == "peak_memory_mib":
        return f"{value:.2f}MiB"
    return str(value)


def summary_notes(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """The legend printed under the table: the verdict rule with the baseline(s), and what the other
    columns shown (``columns``; None: ``SUMMARY_COLUMNS``) mean."""
    keys = [k for k, _ in SUMMARY_COLUMNS] if columns is None else list(columns)
    baselines = sorted({round(r["baseline_loss"], 3) for r in rows if r.get("baseline_loss") is not None})
    base = (f" ({', '.join(f'{b:.3f}' for b in baselines)} nats here)" if baselines else "")
    text = (f"result: trained = final training and validation loss at least {TRAINED_MARGIN:.0%} below the "
            f"baseline, the loss of predicting the training set's class or character frequencies{base}; "
            "diverged = NaN/inf.")
    if "grad_ratio" in keys:
        text += (" grad ratio: first-block / last-block gradient norm, geometric mean over the probes "
                 "(<< 1: gradients vanish toward the input); at end: the last probe's.")
    if "step_time_s" in keys:
        text += (" step time: median wall-clock time of a training step (batch, forward, backward, "
                 "optimizer), probe steps excluded.")
    if "peak_memory_mib" in keys:
        text += (" peak mem: the most tensor memory one training step used above what was in use when it "
                 "began (activations, gradients, temporaries; not the weights or optimizer state).")
    return text


def loss_agreement(runs: Sequence[RunData], rtol: float) -> list[str]:
    """For designs meant to compute the same numbers: at each depth, the largest relative difference
    ``|l - l_ref| / |l_ref|`` between each design's training losses and the first design's, over the
    steps both logged, against ``rtol``; one line per design and depth."""
    lines = []
    depths = sorted({r.depth for r in runs if r.depth is not None})
    for depth in depths:
        at_depth = [r for r in runs if r.depth == depth]
        ref = at_depth[0]
        ref_losses = {t["step"]: t.get("loss") for t in ref.train}
        for run in at_depth[1:]:
            pairs = [(t.get("loss"), ref_losses[t["step"]]) for t in run.train if t["step"] in ref_losses]
            pairs = [(a, b) for a, b in pairs if _finite(a) and _finite(b)]
            head = f"same numbers, depth {depth}: {run.design} vs {ref.design}:"
            if not pairs:
                lines.append(f"{head} no training step with a finite loss in both runs")
                continue
            worst = max(abs(a - b) / max(abs(b), 1e-30) for a, b in pairs)
            judged = (f"equal within {rtol:g}" if worst <= rtol else
                      f"DIFFERENT (more than the tolerance {rtol:g})")
            lines.append(f"{head} training losses {judged}: largest relative difference {worst:.1e} over "
                         f"{len(pairs)} steps")
    return lines


def format_summary_table(rows: Sequence[dict], notes: bool = False,
                         columns: Sequence[str] | None = None) -> str:
    """A plain-text table of :func:`summarize` rows, for the terminal (``notes``: the legend under it;
    ``columns``: keys of ``COLUMNS``, default ``SUMMARY_COLUMNS``)."""
    chosen = SUMMARY_COLUMNS if columns is None else [(k, COLUMNS[k]) for k in columns]
    header = [title for _, title in chosen]
    body = [[format_cell(key, row.get(key)) for key, _ in chosen] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    if notes:
        lines += ["", summary_notes(rows, [k for k, _ in chosen])]
    return "\n".join(lines)
