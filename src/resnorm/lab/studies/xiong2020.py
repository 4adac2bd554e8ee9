"""Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture".

Claim 1 (section 3.2, figure 2): Post-LN needs learning-rate warm-up; Pre-LN trains without it.
The lab's experiment: a character-level GPT (6 layers as the paper's 6-6 model, d_model 128) with the
paper's setup, Xavier init, Adam (0.9, 0.98), no weight decay and no gradient clipping (clipping at
1.0, the lab's GPT default, hides the failure), constant learning rate after a linear warm-up, on a
grid of learning rate x warm-up steps. A run "trains" when its final training and validation losses
are 5% below the unigram entropy (``resnorm.lab.summary.verdict``); a GPT that has learned nothing
stays at that plateau.

Claim 2 (section 3.3-3.4, figure 3), at initialization:
(a) Theorem 1: the gradient of the LAST layer's FFN matrix W^2 does not depend on the depth L for
    Post-LN and shrinks like 1/sqrt(L) for Pre-LN (figure 3(c, d));
(b) per layer (figure 3(a, b)): Post-LN's grows with the layer index, Pre-LN's stays the same.
What the paper measured: "the Frobenius norm of the expected gradient" — the element-wise mean of the
gradient over mini-batches, then its norm — of the FFN matrices of each layer of a 6-6 encoder-decoder
on IWSLT14 De-En, Xavier init, LayerNorm gain 1 and bias 0, ten seeds. The per-layer claim comes from a
"preliminary" analysis (their supplement F) that bounds each layer's Jacobian by its LayerNorm's
contraction, sqrt(2/3), and does not count the growth of the branch's own Jacobian.

The lab's equivalent measurement (``resnorm.lab.studies.init_gradients``): the same statistic on the
lab's GPT with Xavier init and the theory's unit-variance inputs (Vaswani's scaled embedding) and an
untied output layer, averaged over batches and seeds. Theorem 1 is checked as Pre-LN's last-layer
gradient relative to Post-LN's, which should shrink like 1/sqrt(L): the ratio cancels what the two
share (the data's own statistics). It also measures a
control: Post-LN with one more post-LN sublayer per layer whose branch does not read the stream (a
stand-in for encoder attention at initialization with uniform attention, the paper's own
simplification, its output scaled to unit variance). Findings (docs/studies.md): (a) reproduces;
(b) does not in a decoder-only model — Post-LN's W^2 gradient is flat, Pre-LN's falls toward the
output — because LN(x + F(x)) contracts the backward signal by about the factor F adds to the forward
one, while F's Jacobian expands it by about as much; with the stream-independent sublayer only the
contraction is left and Post-LN's gradient grows toward the output as in the paper's figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resnorm.lab.studies.base import (
    PAPERS_ADAM,
    RUN_BOOKKEEPING,
    Check,
    Param,
    RunOutcome,
    RunSpec,
    Study,
    Verdict,
    all_hold,
    fmt,
)

PLACEMENTS = ("post", "pre")
FLAT = 1.5  # "flat": last/first within a factor 1.5; "grows"/"shrinks": beyond it
LAYERS = 6  # the paper's 6-6 model


class Xiong2020(Study):
    name = "xiong2020"
    title = "Post-LN needs warm-up, Pre-LN does not; gradients at initialization"
    paper = "Xiong et al. On Layer Normalization in the Transformer Architecture. ICML 2020"
    claim = (
        "Post-LN needs learning-rate warm-up where Pre-LN trains without it; at initialization Post-LN's "
        "gradient is large near the output (grows with the layer index, independent of depth for the "
        "last layer) while Pre-LN's is the same for every layer and shrinks like 1/sqrt(L)"
    )
    published = (
        "IWSLT14 De-En, 6-6 Post-LN, Adam lr 5e-4/1e-3: BLEU 8.45 without warm-up vs ~34 with 4000 steps; "
        "warm-up 500 at lr 1e-3: BLEU 2.77 (fig. 2); Pre-LN without warm-up ~34 (fig. 4)",
        "last layer's ||dL/dW2||_F at init: Post-LN ~1.6 for 6-6 ... 14-14, Pre-LN decreasing (fig. 3c,d)",
        "per layer: Post-LN's expected gradient grows with the layer index, Pre-LN's ~flat (fig. 3a,b)",
    )
    setup = (
        "char-level GPT, 6 layers, d_model 128, 4 heads, block 64, batch 12; Xavier init",
        "Adam (0.9, 0.98), no weight decay, no gradient clipping, linear warm-up then constant lr",
        "trained = final training and validation loss 5% below the unigram entropy",
        "init gradients: ||mean over batches of dL/dW2||_F per layer (the paper's statistic), Xavier, "
        "unit-variance input, untied output layer, geometric mean over seeds",
    )
    task = "text"
    params = (
        Param("data", "str", "stdlib or a UTF-8 text file"),
        Param("steps", "int", "optimizer steps per run"),
        Param("seeds", "ints", "training seeds"),
        Param("lrs", "floats", "learning rates of the grid"),
        Param("warmups", "ints", "warm-up steps of the grid (0 = none)"),
        Param("grad_batches", "int", "mini-batches averaged for the expected gradient"),
        Param("grad_seeds", "int", "initializations averaged for the gradient measurement"),
        Param("grad_depths", "ints", "layer counts for the last-layer-vs-depth measurement"),
    )
    budgets = {
        "quick": {
            "data": "stdlib",
            "steps": 300,
            "seeds": (0,),
            "lrs": (1e-3, 3e-3),
            "warmups": (0, 100),
            "grad_batches": 8,
            "grad_seeds": 2,
            "grad_depths": (2, 4, 8, 16),
        },
        "full": {
            "data": "stdlib",
            "steps": 600,
            "seeds": (0, 1, 2),
            "lrs": (1e-3, 3e-3),
            "warmups": (0, 100, 300),
            "grad_batches": 32,
            "grad_seeds": 4,
            "grad_depths": (2, 4, 8, 16, 32),
        },
    }
    varies = ("model", "placement", "lr", "warmup_steps", "seed", "n_layer", "norm")

    def plan(self, settings: Mapping[str, Any], overrides: Mapping[str, str]) -> list[RunSpec]:
        steps = settings["steps"]
        several = len(settings["seeds"]) > 1
        plan = []
        for seed in settings["seeds"]:
            for lr in settings["lrs"]:
                for warmup in settings["warmups"]:
                    for placement in PLACEMENTS:
                        config = self.config(
                            "gpt",
                            overrides,
                            data=settings["data"],
                            placement=placement,
                            norm="layernorm",
                            n_layer=LAYERS,
                            d_model=128,
                            n_head=4,
                            block_size=64,
                            batch_size=12,
                            init="xavier",
                            **PAPERS_ADAM,
                            lr=lr,
                            warmup_steps=warmup,
                            steps=steps,
                            seed=seed,
                            eval_every=max(1, steps // 3),
                            probe_every=max(1, steps // 10),
                            **RUN_BOOKKEEPING,
                        )
                        key = f"{placement}-lr{lr:g}-w{warmup}" + (f"-s{seed}" if several else "")
                        design = f"{placement}-LN, lr {lr:g}, warm-up {warmup}"
                        plan.append(
                            RunSpec(
                                key,
                                design,
                                LAYERS,
                                {"placement": placement, "lr": lr, "warmup": warmup, "seed": seed},
                                config,
                            )
                        )
        return plan

    def measure(
        self, settings: Mapping[str, Any], overrides: Mapping[str, str], out_dir: Path, progress: bool = False
    ) -> dict[str, Any]:
        from resnorm.data import load_text_data
        from resnorm.lab.studies.init_gradients import init_gradients

        data = load_text_data(settings["data"])
        d_model = int(overrides.get("d_model", 128))
        n_head = int(overrides.get("n_head", 4))
        k, seeds = settings["grad_batches"], settings["grad_seeds"]
        per_layer = {}
        for variant in ("post", "pre", "post+cross"):
            per_layer[variant] = init_gradients(
                data, variant, LAYERS, d_model=d_model, n_head=n_head, batches=k, seeds=seeds
            )
        by_depth: dict[str, list[list[float]]] = {"post": [], "pre": []}
        for placement in PLACEMENTS:
            for layers in settings["grad_depths"]:
                got = init_gradients(
                    data,
                    placement,
                    layers,
                    d_model=d_model,
                    n_head=n_head,
                    batches=max(1, k // 2),
                    seeds=seeds,
                )
                by_depth[placement].append([layers, got["W2"][-1]])
        return {
            "statistic": "||mean over mini-batches of dL/dW||_F, geometric mean over initializations",
            "d_model": d_model,
            "batches": k,
            "seeds": seeds,
            "per_layer": per_layer,
            "last_layer_vs_depth": by_depth,
        }

    def judge(self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]) -> Verdict:
        checks = [*self._warmup_checks(outcomes), *self._gradient_checks(measurements)]
        notes = []
        baselines = {round(o.baseline, 3) for o in outcomes if o.baseline is not None}
        if baselines:
            notes.append(
                f"unigram entropy of the training text (the plateau): {', '.join(map(str, baselines))} nats"
            )
        return Verdict(checks, notes)

    def _warmup_checks(self, outcomes: Sequence[RunOutcome]) -> list[Check]:
        by = {
            (o.coords["placement"], o.coords["lr"], o.coords["warmup"], o.coords["seed"]): o for o in outcomes
        }
        lrs = sorted({o.coords["lr"] for o in outcomes})
        warmups = sorted({o.coords["warmup"] for o in outcomes})
        seeds = sorted({o.coords["seed"] for o in outcomes})
        longest = [w for w in warmups if w > 0]
        # 1. at some lr where Post-LN trains with warm-up (every seed), it fails without (every seed)
        shown, needs = [], []
        for lr in lrs:
            cold = [o for o in (by.get(("post", lr, 0, s)) for s in seeds) if o]
            warm = [o for o in (by.get(("post", lr, w, s)) for s in seeds for w in longest) if o]
            if not cold or not warm:
                continue
            best = min(warm, key=lambda o: o.final_loss if o.final_loss is not None else math.inf)
            shown.append(
                f"lr {lr:g}: no warm-up {_losses(cold)} ({_verdicts(cold)}), warm-up "
                f"{best.coords['warmup']} {fmt(best.final_loss)} ({best.verdict})"
            )
            warm_trains = any(all(_trained(by.get(("post", lr, w, s))) for s in seeds) for w in longest)
            if warm_trains:
                needs.append(all(not o.trained for o in cold))
        if not needs:
            holds1 = None
            reason1 = "Post-LN did not train with warm-up either: nothing to compare at this budget"
        else:
            holds1 = any(needs)
            reason1 = "" if holds1 else "Post-LN trained without warm-up wherever it trained with it"
        check1 = Check(
            "Post-LN needs warm-up (fails without it, trains with it, at the same lr)",
            "BLEU 8.45 without vs ~34 with warm-up (Adam, lr 5e-4 / 1e-3)",
            "; ".join(shown) or "no runs",
            holds1,
            reason1,
        )
        # 2. Pre-LN trains without warm-up at every lr
        cold_pre = [by.get(("pre", lr, 0, s)) for lr in lrs for s in seeds]
        cold_pre = [o for o in cold_pre if o]
        holds2 = all_hold([o.trained for o in cold_pre])
        check2 = Check(
            "Pre-LN trains without warm-up",
            "Pre-LN without warm-up: BLEU ~34, as Post-LN with it",
            "; ".join(f"lr {o.coords['lr']:g}: {fmt(o.final_loss)} ({o.verdict})" for o in cold_pre)
            or "no runs",
            holds2,
            "" if holds2 is not False else "Pre-LN without warm-up did not train at some lr",
        )
        return [check1, check2]

    def _gradient_checks(self, m: Mapping[str, Any]) -> list[Check]:
        checks = []
        by_depth = m.get("last_layer_vs_depth") or {}
        post, pre = by_depth.get("post") or [], by_depth.get("pre") or []
        if len(post) > 1 and len(pre) > 1:
            r_post, r_pre = post[-1][1] / post[0][1], pre[-1][1] / pre[0][1]
            span = post[-1][0] / post[0][0]
            relative, expected = r_pre / r_post, span**-0.5
            holds = expected / FLAT <= relative <= expected * FLAT and relative < 1 / FLAT
            checks.append(
                Check(
                    "last layer's W2 gradient: Pre-LN's shrinks like 1/sqrt(L) relative to Post-LN's "
                    f"(L = {post[0][0]} to {post[-1][0]})",
                    "Post-LN ~1.6 at every depth, Pre-LN decreasing (fig. 3c,d; theorem 1: 1/sqrt(L))",
                    f"Post-LN {fmt(post[0][1])} -> {fmt(post[-1][1])} (x{r_post:.2f}), Pre-LN "
                    f"{fmt(pre[0][1])} -> {fmt(pre[-1][1])} (x{r_pre:.2f}); Pre/Post x{relative:.2f} vs "
                    f"1/sqrt({span:g}) = {expected:.2f}",
                    holds,
                    "" if holds else "the depth dependence differs from theorem 1's 1/sqrt(L)",
                )
            )
        per_layer = m.get("per_layer") or {}
        if "post" in per_layer and "pre" in per_layer:
            g_post, g_pre = per_layer["post"]["W2"], per_layer["pre"]["W2"]
            r_post, r_pre = g_post[-1] / g_post[0], g_pre[-1] / g_pre[0]
            holds = r_post > FLAT and 1 / FLAT <= r_pre <= FLAT
            cross = per_layer.get("post+cross", {}).get("W2")
            measured = f"last/first layer: Post-LN x{r_post:.2f}, Pre-LN x{r_pre:.2f}"
            if cross:
                measured += f"; Post-LN + a stream-independent sublayer x{cross[-1] / cross[0]:.2f}"
            reason = ""
            if not holds:
                reason = (
                    "in a decoder-only model LN(x + F(x))'s contraction of the gradient is undone by F's own "
                    "Jacobian, so Post-LN's gradient stays flat; a sublayer that does not read the stream "
                    "(encoder attention in the paper's encoder-decoder) leaves only the contraction"
                )
                if cross and cross[-1] / cross[0] > FLAT:
                    reason += " (the control grows as in the paper)"
                if r_pre < 1 / FLAT:
                    reason += (
                        "; Pre-LN's early layers get more gradient (their branches see a smaller stream)"
                    )
            checks.append(
                Check(
                    f"per layer: Post-LN's W2 gradient grows toward the output, Pre-LN's flat "
                    f"({len(g_post)} layers)",
                    "grows with the layer index / ~flat (fig. 3a,b)",
                    measured,
                    holds,
                    reason,
                )
            )
        return checks

    def table(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        header = ["placement", "lr", "warm-up", "seed", "final train loss", "val loss", "result"]
        rows = []
        for o in sorted(
            outcomes,
            key=lambda o: (o.coords["lr"], o.coords["warmup"], o.coords["placement"], o.coords["seed"]),
        ):
            c = o.coords
            rows.append(
                [
                    f"{c['placement']}-LN",
                    f"{c['lr']:g}",
                    str(c["warmup"]),
                    str(c["seed"]),
                    fmt(o.final_loss),
                    fmt(o.val_loss),
                    o.verdict or o.status,
                ]
            )
        for variant, values in (measurements.get("per_layer") or {}).items():
            rows.append(
                [
                    f"{variant}-LN",
                    "init",
                    "-",
                    "-",
                    "||E g_W2|| per layer: " + " ".join(fmt(v, 3) for v in values["W2"]),
                    "",
                    "",
                ]
            )
        for placement, pts in (measurements.get("last_layer_vs_depth") or {}).items():
            rows.append(
                [
                    f"{placement}-LN",
                    "init",
                    "-",
                    "-",
                    "last layer vs L: " + " ".join(f"L{int(d)}={fmt(v, 3)}" for d, v in pts),
                    "",
                    "",
                ]
            )
        return header, rows

    def figures(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any], out_dir: Path
    ) -> dict[str, tuple[Path, str]]:
        import resnorm.lab.studies.figures as figures

        colors = {"post": "tab:red", "pre": "tab:blue"}
        warmups = sorted({o.coords["warmup"] for o in outcomes})
        dashes = dict(zip(warmups, ("-", "--", ":", "-."), strict=False))
        out = {}
        path = figures.plot_loss_panels(
            outcomes,
            out_dir / "xiong2020_warmup.png",
            panel=lambda o: f"lr {o.coords['lr']:g}",
            label=lambda o: f"{o.coords['placement']}-LN, warm-up {o.coords['warmup']}",
            style=lambda o: {
                "color": colors[o.coords["placement"]],
                "ls": dashes.get(o.coords["warmup"], "-"),
            },
            title="Post-LN vs Pre-LN with and without warm-up (dashed grey: unigram entropy)",
        )
        out["xiong2020_warmup.png"] = (
            path,
            "Training loss per learning rate: Post-LN (red) and Pre-LN (blue), solid without warm-up",
        )
        if measurements.get("per_layer"):
            path = figures.plot_init_gradients(measurements, out_dir / "xiong2020_init_gradients.png")
            out["xiong2020_init_gradients.png"] = (
                path,
                "Expected gradient of the FFN's W2 at initialization: "
                "per layer (left), last layer against depth (right)",
            )
        return out


def _trained(outcome: RunOutcome | None) -> bool:
    return outcome is not None and outcome.trained


def _losses(outcomes: Sequence[RunOutcome]) -> str:
    return "/".join(fmt(o.final_loss) for o in outcomes)


def _verdicts(outcomes: Sequence[RunOutcome]) -> str:
    return "/".join(o.verdict or o.status for o in outcomes)
