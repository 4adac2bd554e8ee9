"""The README's claim on the default ``resnorm compare``, checked over several seeds.

The default study trains the residual MLP (width 64, 200 AdamW steps) on mnist5k at depths 4, 16 and
48 with six designs. The README says: the plain network stops training at depth 16; BatchNorm alone
carries it to depth 16 but not 48; every design with a skip connection trains at depth 48. "Trains"
is the lab's verdict (final training and validation loss 5% below the class prior's entropy, ln 10).
The study runs the default compare once per seed and states what holds in every seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resnorm.lab.studies.base import Check, Param, RunOutcome, RunSpec, Study, Verdict, fmt

SKIP_DESIGNS = ("residual", "post-norm", "pre-norm", "rezero")


class DefaultCompare(Study):
    name = "default-compare"
    title = "the README's claim on the default resnorm compare, over seeds"
    paper = (
        "the README of resnorm (after He et al. 2016 and Ioffe & Szegedy 2015); the default 'resnorm compare'"
    )
    claim = (
        "plain nets stop training at depth 16; BatchNorm alone reaches depth 16 but not 48; every design "
        "with a skip connection trains at depth 48"
    )
    published = (
        "README: 'The plain network stops training at depth 16 ... BatchNorm alone carries it to "
        "depth 16 but not 48; every design with a skip connection trains at depth 48.'",
    )
    setup = (
        "resnorm compare defaults: residual MLP width 64, AdamW 2e-3, batch 128, 200 steps, mnist5k, "
        "depths 4, 16, 48; designs plain, plain-bn, residual, post-norm, pre-norm, rezero",
        "trained = final training and validation loss 5% below ln 10 (the class prior's loss)",
    )
    task = "image"
    params = (
        Param("data", "str", "mnist5k, digits, or an MNIST / CIFAR-10 folder"),
        Param("steps", "int", "optimizer steps per run"),
        Param("seeds", "ints", "training seeds, e.g. 0,1,2"),
    )
    budgets = {
        "quick": {"data": "mnist5k", "steps": 200, "seeds": (0, 1, 2)},
        "full": {"data": "mnist5k", "steps": 200, "seeds": (0, 1, 2, 3, 4)},
    }
    varies = ("model", "placement", "norm", "depth", "seed")

    def plan(self, settings: Mapping[str, Any], overrides: Mapping[str, str]) -> list[RunSpec]:
        from resnorm.lab import compare

        plan = []
        for seed in settings["seeds"]:
            items = compare.plan_study(
                "mlp", data=settings["data"], steps=settings["steps"], seed=seed, overrides=dict(overrides)
            )
            for item in items:
                key = f"{item.design.name}-d{item.depth}-s{seed}"
                plan.append(
                    RunSpec(
                        key,
                        item.design.name,
                        item.depth,
                        {"design": item.design.name, "depth": item.depth, "seed": seed},
                        item.config,
                    )
                )
        return plan

    def judge(self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]) -> Verdict:
        by = {(o.coords["design"], o.coords["depth"], o.coords["seed"]): o for o in outcomes}
        seeds = sorted({o.coords["seed"] for o in outcomes})

        def runs(design: str, depth: int) -> list[RunOutcome]:
            return [by[(design, depth, s)] for s in seeds if (design, depth, s) in by]

        def check(claim: str, wanted: Sequence[tuple[str, int, bool]]) -> Check:
            flags, parts, failing = [], [], []
            for design, depth, trains in wanted:
                got = runs(design, depth)
                if not got:
                    continue
                flags += [o.trained == trains for o in got]
                accs = "/".join("-" if o.val_acc is None else f"{100 * o.val_acc:.1f}%" for o in got)
                parts.append(
                    f"{design}-{depth}: {sum(o.trained for o in got)} of {len(got)} trained ({accs})"
                )
                failing += [
                    f"{design}-{depth} seed {o.coords['seed']} {o.verdict or o.status}"
                    for o in got
                    if o.trained != trains
                ]
            holds = None if not flags else all(flags)
            return Check(
                claim,
                "README: holds (measured once, seed 0)",
                "; ".join(parts),
                holds,
                "" if holds is not False else "not in every seed: " + ", ".join(failing),
            )

        checks = [
            check(
                "plain trains at 4, stops at 16 and 48",
                [("plain", 4, True), ("plain", 16, False), ("plain", 48, False)],
            ),
            check("plain-bn trains at 16 but not at 48", [("plain-bn", 16, True), ("plain-bn", 48, False)]),
            check("every skip design trains at 48", [(d, 48, True) for d in SKIP_DESIGNS]),
        ]
        notes = [f"seeds: {', '.join(map(str, seeds))}"]
        weak = [
            o
            for o in outcomes
            if o.trained and o.baseline and o.final_loss is not None and o.final_loss > 0.5 * o.baseline
        ]
        if weak:
            notes.append(
                "trained but with more than half the baseline's loss: "
                + ", ".join(f"{o.key} ({fmt(o.final_loss)})" for o in weak)
            )
        return Verdict(checks, notes)

    def table(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        seeds = sorted({o.coords["seed"] for o in outcomes})
        designs = list(dict.fromkeys(o.coords["design"] for o in outcomes))
        depths = sorted({o.coords["depth"] for o in outcomes})
        by = {(o.coords["design"], o.coords["depth"], o.coords["seed"]): o for o in outcomes}
        header = ["design", *[f"depth {d}: trained, val acc per seed" for d in depths]]
        rows = []
        for design in designs:
            row = [design]
            for depth in depths:
                got = [by[(design, depth, s)] for s in seeds if (design, depth, s) in by]
                accs = "/".join("-" if o.val_acc is None else f"{100 * o.val_acc:.0f}" for o in got)
                row.append(f"{sum(o.trained for o in got)}/{len(got)} ({accs}%)")
            rows.append(row)
        return header, rows

    def figures(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any], out_dir: Path
    ) -> dict[str, tuple[Path, str]]:
        import resnorm.lab.studies.figures as figures

        points: dict[str, dict[int, list[float]]] = {}
        for o in outcomes:
            if o.val_acc is not None:
                points.setdefault(o.coords["design"], {}).setdefault(o.coords["depth"], []).append(o.val_acc)
        path = figures.plot_accuracy_over_seeds(points, out_dir / "default_compare_accuracy.png")
        return {"default_compare_accuracy.png": (path, "Validation accuracy against depth, every seed")}
