"""Hyper-connections (Zhu et al., ICLR 2025) vs manifold-constrained hyper-connections (mHC; Xie et al.,
DeepSeek, arXiv 2512.24880) vs pre-norm.

Claim (DeepSeek): the residual streams' mixing matrices of unconstrained hyper-connections compound
across layers — the composite mapping's gain (its largest absolute row sum forward, column sum
backward) grows with depth and with training, to ~3000 in a 27B model — while mHC, which projects each
mixing matrix onto the doubly stochastic matrices (Sinkhorn-Knopp), keeps it near 1 (~1.6); with it,
HC's training is unstable where mHC's is not.

The lab's experiment: a character-level GPT (d_model 64, RMSNorm, 4 streams, dynamic HC; mHC with 20
Sinkhorn iterations) with the lab's GPT recipe at several depths; the probes record the composite gain
from the input through each layer (``resnorm.nn.composite_mixing_gains``) every tenth of the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resnorm.lab.studies.base import RUN_BOOKKEEPING, Check, Param, RunOutcome, RunSpec, Study, Verdict, fmt

# (label, design name in resnorm.lab.designs)
DESIGNS = (("hyper", "hyper"), ("mhc", "mhc"), ("pre-norm", "pre-rms"))
NEAR_ONE = 2.0  # mHC's gain counts as "near 1" below this (DeepSeek: ~1.6)
GROWS = 2.0  # HC's gain "grows" when it ends at least this many times its value at the first probe
DEEPER = 1.25  # ... and "grows with depth" when each deeper net ends at least this many times the shallower


class MHC2026(Study):
    name = "mhc2026"
    title = "hyper-connections vs mHC vs pre-norm: the composite stream-mixing gain"
    paper = (
        "Zhu et al. Hyper-Connections. ICLR 2025; Xie et al. (DeepSeek). mHC: Manifold-Constrained "
        "Hyper-Connections. arXiv 2512.24880, 2025"
    )
    claim = (
        "the composite stream-mixing gain of unconstrained hyper-connections grows with depth and with "
        "training; mHC's (doubly stochastic mixing) stays near 1"
    )
    published = (
        "27B model: composite gain (max abs row/column sum) of HC up to ~3000, of mHC ~1.6",
        "HC's loss and gradient norm become unstable mid-training at 27B; mHC trains stably with 6.7% "
        "overhead (fused kernels)",
    )
    setup = (
        "char-level GPT, d_model 64, 4 heads, RMSNorm, 4 residual streams (dynamic HC; mHC with 20 "
        "Sinkhorn-Knopp iterations); pre-norm RMSNorm as the single-stream reference",
        "the lab's GPT recipe (AdamW 1e-3, 100 warm-up steps, cosine, grad clip 1.0)",
        "gain = composite max |row sum| from the input through the last layer, read by the probes",
    )
    task = "text"
    params = (
        Param("data", "str", "stdlib or a UTF-8 text file"),
        Param("steps", "int", "optimizer steps per run"),
        Param("seeds", "ints", "training seeds"),
        Param("depths", "ints", "numbers of layers (n_layer), e.g. 6,12"),
    )
    budgets = {
        "quick": {"data": "stdlib", "steps": 300, "seeds": (0,), "depths": (6, 12)},
        "full": {"data": "stdlib", "steps": 1000, "seeds": (0, 1), "depths": (6, 12, 24)},
    }
    varies = ("model", "placement", "norm", "n_layer", "seed")

    def plan(self, settings: Mapping[str, Any], overrides: Mapping[str, str]) -> list[RunSpec]:
        from resnorm.lab.designs import DESIGNS as NAMED

        steps = settings["steps"]
        several = len(settings["seeds"]) > 1
        plan = []
        for seed in settings["seeds"]:
            for depth in settings["depths"]:
                for label, name in DESIGNS:
                    design = NAMED[name]
                    config = self.config(
                        "gpt",
                        overrides,
                        data=settings["data"],
                        placement=design.placement,
                        norm=design.norm,
                        n_layer=depth,
                        d_model=64,
                        n_head=4,
                        steps=steps,
                        seed=seed,
                        eval_every=max(1, steps // 3),
                        probe_every=max(1, steps // 10),
                        **RUN_BOOKKEEPING,
                    )
                    key = f"{label}-d{depth}" + (f"-s{seed}" if several else "")
                    plan.append(
                        RunSpec(key, label, depth, {"design": label, "depth": depth, "seed": seed}, config)
                    )
        return plan

    def judge(self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]) -> Verdict:
        gains = {o.key: _gains(o) for o in outcomes}
        hyper = [o for o in outcomes if o.coords["design"] == "hyper" and gains[o.key]]
        mhc = [o for o in outcomes if o.coords["design"] == "mhc" and gains[o.key]]
        seeds = sorted({o.coords["seed"] for o in hyper})
        checks = []
        # 1. HC's final gain grows with depth (in every seed)
        flags, shown = [], []
        for s in seeds:
            runs = sorted((o for o in hyper if o.coords["seed"] == s), key=lambda o: o.coords["depth"])
            finals = [gains[o.key][-1][1] for o in runs]
            if len(finals) > 1:
                flags.append(all(b >= DEEPER * a for a, b in zip(finals, finals[1:], strict=False)))
                shown.append(
                    " < ".join(
                        f"{fmt(g, 3)} ({o.coords['depth']} layers)" for g, o in zip(finals, runs, strict=True)
                    )
                )
        checks.append(
            Check(
                "HC's composite gain grows with depth",
                "~3000 at 27B",
                "; ".join(shown) or "needs two depths",
                None if not flags else all(flags),
                "" if not flags or all(flags) else "a deeper HC ended with a smaller gain",
            )
        )
        # 2. HC's gain grows with training
        grown = [(o, gains[o.key][0][1], gains[o.key][-1][1]) for o in hyper]
        flags = [end >= GROWS * start for _, start, end in grown]
        checks.append(
            Check(
                "HC's composite gain grows with training",
                "grows during training to ~3000 (27B)",
                "; ".join(f"{o.coords['depth']} layers: {fmt(a, 3)} -> {fmt(b, 3)}" for o, a, b in grown)
                or "no HC run",
                None if not flags else all(flags),
                "" if not flags or all(flags) else f"HC's gain grew less than {GROWS:g}x",
            )
        )
        # 3. mHC's gain stays near 1 (at every probe)
        peaks = [(o, max(g for _, g in gains[o.key])) for o in mhc]
        flags = [peak < NEAR_ONE for _, peak in peaks]
        checks.append(
            Check(
                "mHC's composite gain stays near 1",
                "~1.6 at 27B",
                "; ".join(f"{o.coords['depth']} layers: max {fmt(p, 4)}" for o, p in peaks) or "no mHC run",
                None if not flags else all(flags),
                "" if not flags or all(flags) else f"mHC's gain exceeded {NEAR_ONE:g}",
            )
        )
        notes = []
        for depth in sorted({o.coords["depth"] for o in outcomes}):
            row = [o for o in outcomes if o.coords["depth"] == depth]
            notes.append(
                f"{depth} layers, final training loss: "
                + ", ".join(
                    f"{o.coords['design']} {fmt(o.final_loss)} ({o.verdict or o.status})" for o in row
                )
            )
        return Verdict(checks, notes)

    def table(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        header = [
            "design",
            "layers",
            "seed",
            "gain first",
            "gain middle",
            "gain end",
            "backward end",
            "final train loss",
            "val loss",
            "result",
            "time",
        ]
        rows = []
        for o in sorted(outcomes, key=lambda o: (o.coords["depth"], o.coords["design"], o.coords["seed"])):
            g = _gains(o)
            bwd = [p["mix_gain_bwd"][-1] for p in o.probes if p.get("mix_gain_bwd")]
            cells = (
                [fmt(g[0][1], 3), fmt(g[len(g) // 2][1], 3), fmt(g[-1][1], 3), fmt(bwd[-1], 3)]
                if g
                else ["-", "-", "-", "-"]
            )
            rows.append(
                [
                    o.coords["design"],
                    str(o.coords["depth"]),
                    str(o.coords["seed"]),
                    *cells,
                    fmt(o.final_loss),
                    fmt(o.val_loss),
                    o.verdict or o.status,
                    "-" if o.wall_s is None else f"{o.wall_s:.0f}s",
                ]
            )
        return header, rows

    def figures(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any], out_dir: Path
    ) -> dict[str, tuple[Path, str]]:
        import resnorm.lab.studies.figures as figures

        out = {}
        if any(_gains(o) for o in outcomes):
            path = figures.plot_mixing_gains(outcomes, out_dir / "mhc2026_gain.png")
            out["mhc2026_gain.png"] = (
                path,
                "Composite stream-mixing gain: during training (left), per layer at the end (right)",
            )
        colors = {"hyper": "tab:orange", "mhc": "tab:green", "pre-norm": "tab:blue"}
        path = figures.plot_loss_panels(
            outcomes,
            out_dir / "mhc2026_loss.png",
            panel=lambda o: f"{o.coords['depth']} layers",
            label=lambda o: o.coords["design"],
            style=lambda o: {"color": colors.get(o.coords["design"], "grey")},
            title="Training loss (dashed grey: unigram entropy)",
        )
        out["mhc2026_loss.png"] = (path, "Training loss of HC, mHC and pre-norm at each depth")
        return out


def _gains(outcome: RunOutcome) -> list[tuple[int, float]]:
    """(step, composite forward gain through the whole stack) at each probe."""
    return [(p["step"], p["mix_gain_fwd"][-1]) for p in outcome.probes if p.get("mix_gain_fwd")]
