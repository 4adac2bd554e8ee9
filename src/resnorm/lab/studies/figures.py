"""The studies' own figures (matplotlib, Agg): loss curves grouped by panel, gradient profiles at
initialization, stream-mixing gains, accuracy against depth over seeds. Each function takes outcomes or
measurements (``resnorm.lab.studies.base``) and writes one PNG."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from resnorm.lab.plots import smooth  # noqa: E402
from resnorm.lab.studies.base import RunOutcome  # noqa: E402

__all__ = ["plot_loss_panels", "plot_init_gradients", "plot_mixing_gains", "plot_accuracy_over_seeds"]

DPI = 100
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_loss_panels(
    outcomes: Sequence[RunOutcome],
    path: str | Path,
    *,
    panel: Callable[[RunOutcome], str],
    label: Callable[[RunOutcome], str],
    style: Callable[[RunOutcome], Mapping[str, Any]] | None = None,
    title: str = "",
    log_y: bool = False,
    baseline: bool = True,
) -> Path:
    """Smoothed training loss against step, one panel per ``panel(o)``, one line per run labelled
    ``label(o)`` and drawn with ``style(o)`` (matplotlib keywords); the task's baseline (the loss of
    predicting the class or character frequencies) as a grey dashed line."""
    panels = list(dict.fromkeys(panel(o) for o in outcomes)) or [""]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(4.6 * len(panels) + 1.8, 3.8),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    labels: dict[str, Any] = {}
    for ax, name in zip(axes[0], panels, strict=True):
        for k, o in enumerate(o for o in outcomes if panel(o) == name):
            if not o.curve:
                continue
            steps = [s for s, _ in o.curve]
            losses = [v if np.isfinite(v) else np.nan for _, v in o.curve]
            kw = dict(style(o)) if style is not None else {"color": COLORS[k % len(COLORS)]}
            (line,) = ax.plot(steps, smooth(losses), lw=1.5, **kw)
            labels.setdefault(label(o), line)
            if o.status == "diverged":
                ax.axvline(o.steps, color=line.get_color(), ls=":", lw=1.0)
        base = [o.baseline for o in outcomes if panel(o) == name and o.baseline is not None]
        if baseline and base:
            ax.axhline(base[0], color="grey", ls="--", lw=1.0)
            ax.text(
                0.99,
                base[0],
                "baseline",
                color="grey",
                fontsize=7,
                ha="right",
                va="bottom",
                transform=ax.get_yaxis_transform(),
            )
        ax.set(title=name, xlabel="optimizer step")
        ax.grid(alpha=0.3, which="both")
        if log_y:
            ax.set_yscale("log")
    axes[0][0].set_ylabel("training loss (smoothed, nats)")
    if labels:
        axes[0][-1].legend(
            list(labels.values()),
            list(labels),
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_init_gradients(measurements: Mapping[str, Any], path: str | Path) -> Path:
    """Xiong et al. 2020's figure 3 as measured here: (left) per-layer norm of the expected gradient of
    the FFN's second matrix at initialization; (middle) the last layer's against the number of layers;
    (right) Pre-LN's over Post-LN's, with theorem 1's 1/sqrt(L) for reference."""
    per_layer = measurements.get("per_layer", {})
    by_depth = measurements.get("last_layer_vs_depth", {})
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14.5, 3.9), constrained_layout=True)
    styles = {"post": ("tab:red", "o-"), "pre": ("tab:blue", "s-"), "post+cross": ("tab:red", "^--")}
    names = {"post": "Post-LN", "pre": "Pre-LN", "post+cross": "Post-LN + a stream-independent sublayer"}
    for key, values in per_layer.items():
        w2 = values.get("W2")
        if not w2:
            continue
        color, fmt_ = styles.get(key, ("tab:gray", "o-"))
        left.plot(np.arange(1, len(w2) + 1), w2, fmt_, color=color, lw=1.6, ms=4, label=names.get(key, key))
    left.set(title="per layer", xlabel="layer (1 = input side)", ylabel="||E[dL/dW2]||_F (FFN second matrix)")
    for key in ("post", "pre"):
        pts = by_depth.get(key)
        if pts:
            color, fmt_ = styles[key]
            middle.plot([p[0] for p in pts], [p[1] for p in pts], fmt_, color=color, lw=1.6, ms=4,
                        label=names[key])
    middle.set(title="last layer, against the number of layers L", xlabel="layers L",
               ylabel="||E[dL/dW2 of layer L]||_F")
    post, pre = by_depth.get("post") or [], by_depth.get("pre") or []
    if post and pre and len(post) == len(pre):
        depths = np.array([p[0] for p in pre], dtype=float)
        ratio = np.array([b[1] / a[1] for a, b in zip(post, pre, strict=True)])
        right.plot(depths, ratio, "ko-", lw=1.6, ms=4, label="Pre-LN / Post-LN, measured")
        right.plot(depths, ratio[0] * np.sqrt(depths[0] / depths), ":", color="grey", lw=1.4,
                   label="1/sqrt(L) (theorem 1)")
    right.set(title="Pre-LN relative to Post-LN", xlabel="layers L",
              ylabel="ratio of the last layer's gradients")
    for ax in (left, middle, right):
        ax.grid(alpha=0.3, which="both")
        ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in (middle, right):
        ax.set_xscale("log", base=2)
    fig.suptitle("Gradients at initialization (Xiong et al. 2020, figure 3's measurement)", fontsize=10)
    return _save(fig, path)


def plot_mixing_gains(outcomes: Sequence[RunOutcome], path: str | Path) -> Path:
    """Composite stream-mixing gain (the last layer's, forward) against step for each multi-stream run,
    and the per-layer gain at the last probe."""
    runs = [o for o in outcomes if any("mix_gain_fwd" in p for p in o.probes)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.9), constrained_layout=True)
    designs = list(dict.fromkeys(o.coords.get("design", o.key) for o in runs))
    depths = sorted({o.coords.get("depth", 0) for o in runs})
    cmap = {d: COLORS[i % len(COLORS)] for i, d in enumerate(designs)}
    dashes = {d: ls for d, ls in zip(depths, ("-", "--", "-.", ":", "-", "--"), strict=False)}
    for o in runs:
        probes = [p for p in o.probes if "mix_gain_fwd" in p]
        design, depth = o.coords.get("design", o.key), o.coords.get("depth", 0)
        label = f"{design}, {depth} layers"
        left.plot(
            [p["step"] for p in probes],
            [p["mix_gain_fwd"][-1] for p in probes],
            lw=1.6,
            color=cmap[design],
            ls=dashes.get(depth, "-"),
            label=label,
        )
        last = probes[-1]["mix_gain_fwd"]
        right.plot(
            np.arange(1, len(last) + 1),
            last,
            "o",
            ms=3,
            color=cmap[design],
            ls=dashes.get(depth, "-"),
            label=label,
        )
    for ax, title, xlabel in (
        (left, "through the whole stack, during training", "optimizer step"),
        (right, "through layers 1..l, at the end", "layer l"),
    ):
        ax.set(title=title, xlabel=xlabel, ylabel="composite gain (max |row sum|)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("Stream-mixing gain of hyper-connections (hyper) vs manifold-constrained (mhc)", fontsize=10)
    return _save(fig, path)


def plot_accuracy_over_seeds(
    points: Mapping[str, Mapping[int, Sequence[float]]], path: str | Path, chance: float = 0.1
) -> Path:
    """Validation accuracy against depth per design: the mean over seeds, and every seed as a dot."""
    fig, ax = plt.subplots(figsize=(6.8, 4.2), constrained_layout=True)
    depths_seen: set[int] = set()
    for k, (design, by_depth) in enumerate(points.items()):
        depths = sorted(by_depth)
        depths_seen.update(depths)
        color = COLORS[k % len(COLORS)]
        means = [100 * float(np.mean(by_depth[d])) for d in depths]
        ax.plot(depths, means, "-", color=color, lw=1.8, label=design)
        for d in depths:
            ax.plot(
                [d] * len(by_depth[d]), [100 * v for v in by_depth[d]], "o", color=color, ms=3.5, alpha=0.7
            )
    if depths_seen:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(depths_seen))
        ax.set_xticklabels([str(d) for d in sorted(depths_seen)])
    ax.axhline(100 * chance, color="grey", ls="--", lw=1.0)
    ax.set(
        xlabel="depth (residual blocks)",
        ylabel="final validation accuracy (%)",
        ylim=(0, 100),
        title="Does it train at depth? (line: mean over seeds; dots: each seed)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)
