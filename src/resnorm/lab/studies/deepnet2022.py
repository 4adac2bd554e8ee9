"""Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers".

Claim: at depth, Post-LN fails to train (its early updates explode) where DeepNorm trains:
``x <- LN(alpha x + F(x))`` with the branch's value, attention-output and feed-forward weights
initialised Xavier x beta; decoder-only, N layers: alpha = (2N)^(1/4), beta = (8N)^(-1/4).

The lab's experiment: a character-level GPT with 24 layers (48 residual sublayers) in the quick budget
and 52 (104) in the full one, d_model 64, the paper's inits (Post-LN and Pre-LN Xavier, DeepNorm
DeepNet's), Adam (0.9, 0.98), no weight decay, no gradient clipping, lr 1e-3 after 100 warm-up
steps. The full budget adds a control with GPT-2's init (N(0, 0.02), output projections scaled by
1/sqrt(2N)) for Post-LN and DeepNorm, the lab's default: with it the comparison turns around (docs).
"""

from __future__ import annotations

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
    fmt,
)

# (design label, placement, init)
DESIGNS = (("post-LN", "post", "xavier"), ("DeepNorm", "deepnorm", "deepnet"), ("pre-LN", "pre", "xavier"))
CONTROL = (("post-LN, GPT-2 init", "post", "gpt2"), ("DeepNorm, GPT-2 init", "deepnorm", "gpt2"))


class DeepNet2022(Study):
    name = "deepnet2022"
    title = "Post-LN vs DeepNorm vs Pre-LN at depth, with the paper's init"
    paper = "Wang, Ma, Dong, Huang, Zhang, Wei. DeepNet: Scaling Transformers to 1,000 Layers. 2022"
    claim = "at depth, Post-LN fails to train (or diverges) where DeepNorm trains"
    published = (
        "WMT-17 En-De: Post-LN baselines optimize unstably from 50L-50L on; DeepNet trains 100L-100L to 28.9 "
        "BLEU (table 1) and 1,000 layers on OPUS-100",
        "Pre-LN trains deep but 0.5-1.0 BLEU below converged Post-LN / DeepNet (sec. 5)",
        "IWSLT-14: Post-LN's early model update explodes, DeepNet's stays flat (fig. 5)",
    )
    setup = (
        "char-level GPT, d_model 64, 4 heads, block 64, batch 12;",
        "DeepNorm alpha = (2N)^1/4, beta = (8N)^-1/4 for N layers",
        "inits: Post-LN and Pre-LN Xavier, DeepNorm Xavier with beta on value, attention-out and FFN",
        "Adam (0.9, 0.98), no weight decay, no gradient clipping, lr 1e-3, 100 warm-up steps, then constant",
        "trained = final training and validation loss 5% below the unigram entropy",
    )
    task = "text"
    params = (
        Param("data", "str", "stdlib or a UTF-8 text file"),
        Param("steps", "int", "optimizer steps per run"),
        Param("seeds", "ints", "training seeds"),
        Param("layers", "int", "transformer layers (2 residual sublayers each)"),
        Param(
            "control", "int", "1: also train Post-LN and DeepNorm with GPT-2's init (seed of the first run)"
        ),
    )
    budgets = {
        "quick": {"data": "stdlib", "steps": 400, "seeds": (0,), "layers": 24, "control": 0},
        "full": {"data": "stdlib", "steps": 1000, "seeds": (0, 1, 2), "layers": 52, "control": 1},
    }
    varies = ("model", "placement", "init", "n_layer", "seed", "norm")

    def plan(self, settings: Mapping[str, Any], overrides: Mapping[str, str]) -> list[RunSpec]:
        steps, layers = settings["steps"], settings["layers"]
        several = len(settings["seeds"]) > 1
        runs = [
            (label, placement, init, seed) for seed in settings["seeds"] for label, placement, init in DESIGNS
        ]
        if settings["control"]:
            runs += [(label, placement, init, settings["seeds"][0]) for label, placement, init in CONTROL]
        plan = []
        for label, placement, init, seed in runs:
            config = self.config(
                "gpt",
                overrides,
                data=settings["data"],
                placement=placement,
                norm="layernorm",
                n_layer=layers,
                d_model=64,
                n_head=4,
                block_size=64,
                batch_size=12,
                init=init,
                **PAPERS_ADAM,
                lr=1e-3,
                warmup_steps=100,
                steps=steps,
                seed=seed,
                eval_every=max(1, steps // 4),
                probe_every=max(1, steps // 10),
                **RUN_BOOKKEEPING,
            )
            key = f"{placement}-{init}" + (f"-s{seed}" if several else "")
            plan.append(
                RunSpec(
                    key,
                    label,
                    layers,
                    {"design": label, "placement": placement, "init": init, "seed": seed, "layers": layers},
                    config,
                )
            )
        return plan

    def judge(self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]) -> Verdict:
        main = [
            o
            for o in outcomes
            if (o.coords["placement"], o.coords["init"]) in {(p, i) for _, p, i in DESIGNS}
        ]
        by = {(o.coords["placement"], o.coords["seed"]): o for o in main}
        seeds = sorted({o.coords["seed"] for o in main})
        layers = main[0].coords["layers"] if main else 0
        post = [by[("post", s)] for s in seeds if ("post", s) in by]
        deep = [by[("deepnorm", s)] for s in seeds if ("deepnorm", s) in by]
        sub = f"{2 * layers} sublayers"
        trained_seeds = [o.coords["seed"] for o in deep if o.trained]
        paired = [by[("post", s)] for s in trained_seeds if ("post", s) in by]
        if not deep:
            post_holds, post_reason = None, "no DeepNorm run"
        elif not paired:
            post_holds, post_reason = None, "DeepNorm did not train either: nothing to compare at this budget"
        else:
            post_holds = all(not o.trained for o in paired)
            post_reason = "" if post_holds else "Post-LN trained too, at this depth and budget"
        checks = [
            Check(
                f"DeepNorm trains ({sub})",
                "100L-100L: 28.9 BLEU; 1,000 layers train",
                _describe(deep),
                None if not deep else all(o.trained for o in deep),
                "DeepNorm did not train at this budget" if any(not o.trained for o in deep) else "",
            ),
            Check(
                f"Post-LN fails to train or diverges where DeepNorm trains ({sub})",
                "Post-LN unstable from 50L-50L (100 sublayers per stack) on WMT-17",
                _describe(post),
                post_holds,
                post_reason,
            ),
        ]
        notes = []
        pre = [by[("pre", s)] for s in seeds if ("pre", s) in by]
        if pre and deep:
            notes.append(
                f"pre-LN: {_describe(pre)}; DeepNorm {'below' if _mean(deep) < _mean(pre) else 'above'} "
                f"pre-LN in final training loss ({fmt(_mean(deep))} vs {fmt(_mean(pre))}; the paper ranks "
                "DeepNet above Pre-LN by 0.5-1.0 BLEU)"
            )
        control = [o for o in outcomes if o.coords["init"] == "gpt2"]
        if control:
            notes.append(
                "with GPT-2's init (the lab's default): "
                + "; ".join(
                    f"{o.coords['design'].split(',')[0]} {fmt(o.final_loss)} ({o.verdict})" for o in control
                )
            )
        baselines = {round(o.baseline, 3) for o in outcomes if o.baseline is not None}
        if baselines:
            notes.append(f"unigram entropy (the plateau): {', '.join(map(str, baselines))} nats")
        return Verdict(checks, notes)

    def table(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        header = ["design", "init", "layers", "seed", "final train loss", "val loss", "result", "steps"]
        rows = [
            [
                o.coords["design"],
                o.coords["init"],
                str(o.coords["layers"]),
                str(o.coords["seed"]),
                fmt(o.final_loss),
                fmt(o.val_loss),
                o.verdict or o.status,
                str(o.steps),
            ]
            for o in outcomes
        ]
        return header, rows

    def figures(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any], out_dir: Path
    ) -> dict[str, tuple[Path, str]]:
        import resnorm.lab.studies.figures as figures

        colors = {"post": "tab:red", "deepnorm": "tab:green", "pre": "tab:blue"}
        layers = outcomes[0].coords["layers"] if outcomes else 0
        path = figures.plot_loss_panels(
            outcomes,
            out_dir / "deepnet2022_loss.png",
            panel=lambda o: (
                f"{layers} layers, {'GPT-2 init' if o.coords['init'] == 'gpt2' else 'paper init'}"
            ),
            label=lambda o: o.coords["design"] + (f", seed {o.coords['seed']}" if o.coords["seed"] else ""),
            style=lambda o: {"color": colors[o.coords["placement"]]},
            title=f"Training loss at {2 * layers} residual sublayers (dashed grey: unigram entropy)",
        )
        return {"deepnet2022_loss.png": (path, "Post-LN (red), DeepNorm (green), Pre-LN (blue)")}


def _describe(outcomes: Sequence[RunOutcome]) -> str:
    if not outcomes:
        return "no runs"
    return (
        "final training loss "
        + "/".join(fmt(o.final_loss) for o in outcomes)
        + " ("
        + "/".join(o.verdict or o.status for o in outcomes)
        + ")"
    )


def _mean(outcomes: Sequence[RunOutcome]) -> float:
    values = [o.final_loss for o in outcomes if o.final_loss is not None]
    return sum(values) / len(values) if values else float("nan")
