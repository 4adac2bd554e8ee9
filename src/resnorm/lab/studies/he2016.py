"""He et al. 2016, "Deep Residual Learning for Image Recognition": the degradation problem.

Claim (section 4.2, figure 6): on CIFAR-10, the plain 56-layer net ends with a HIGHER training error
than the plain 20-layer net (deeper is worse: an optimization failure, not overfitting), while the
ResNet-56 ends at or below the ResNet-20 (the shortcuts remove the degradation).

The lab's experiment: ``resnet-cifar`` at depths 20 and 56 (6n+2 layers), plain (``residual=False``)
and residual, BatchNorm, He et al.'s SGD recipe (momentum 0.9, weight decay 1e-4, learning rate /10 at
50% and 75% of training) with the learning rate scaled linearly to the batch (0.1 at batch 128 ->
0.025 at batch 32). On the bundled digits (mnist5k padded to 32x32) no augmentation; on CIFAR-10
(``data=PATH``) He et al.'s flip + 4-pixel crop. The final training loss is the mean training loss over
the last 10% of the steps. Measured budget (docs/studies.md): 150-300 steps leave ResNet-56 and
ResNet-20 tied; 600 steps of batch 32 (4.3 epochs of mnist5k) put ResNet-56 below ResNet-20 in each of
three seeds. He et al.'s own rate 0.1 at batch 128 makes ResNet-56 blow up at the first steps on mnist5k
(loss 7.5, stuck at 2.1), the failure they report for ResNet-110 on CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resnorm.lab.studies.base import RUN_BOOKKEEPING, Check, Param, RunOutcome, RunSpec, Study, Verdict, fmt

DEPTHS = (20, 56)
NETS = ("plain", "residual")
EMBEDDED = ("mnist5k", "digits")


class He2016(Study):
    name = "he2016"
    title = "plain vs residual CIFAR nets at depths 20 and 56 (the degradation problem)"
    paper = "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 (sec. 4.2, fig. 6)"
    claim = (
        "plain-56 ends with a HIGHER training loss than plain-20 (degradation); ResNet-56 ends at or "
        "below ResNet-20"
    )
    published = (
        "CIFAR-10, SGD 0.1 / batch 128 / 64k iterations: plain-56's training error stays above plain-20's "
        "throughout training (fig. 6 left); ResNet-56's below ResNet-20's (fig. 6 middle)",
        "CIFAR-10 test error ResNet-20 8.75%, ResNet-56 6.97% (table 6)",
    )
    setup = (
        "resnet-cifar (BatchNorm, option-A shortcuts), plain = the same net without shortcuts",
        "SGD momentum 0.9, weight decay 1e-4, lr /10 at 50% and 75%; lr 0.1 x batch/128 (linear scaling)",
        "digits (mnist5k 32x32): no augmentation; CIFAR-10: flip + 4-px crop",
        "final training loss = mean training loss over the last 10% of the steps",
    )
    task = "image"
    params = (
        Param("data", "str", "mnist5k, digits, or a CIFAR-10 / MNIST folder"),
        Param("steps", "int", "optimizer steps per run"),
        Param("seeds", "ints", "training seeds, e.g. 0,1,2"),
        Param("batch_size", "int", "batch size (lr = 0.1 x batch/128)"),
    )
    budgets = {
        "quick": {"data": "mnist5k", "steps": 600, "seeds": (0,), "batch_size": 32},
        "full": {"data": "mnist5k", "steps": 1200, "seeds": (0, 1, 2), "batch_size": 32},
    }
    varies = ("model", "depth", "residual", "seed", "norm", "placement")

    def plan(self, settings: Mapping[str, Any], overrides: Mapping[str, str]) -> list[RunSpec]:
        steps, batch = settings["steps"], settings["batch_size"]
        augment = settings["data"] not in EMBEDDED and not _is_mnist_folder(settings["data"])
        plan = []
        for seed in settings["seeds"]:
            for net in NETS:
                for depth in DEPTHS:
                    config = self.config(
                        "resnet-cifar",
                        overrides,
                        data=settings["data"],
                        depth=depth,
                        residual=net == "residual",
                        norm="batchnorm",
                        placement="post",
                        optimizer="sgd",
                        lr=0.1 * batch / 128,
                        momentum=0.9,
                        weight_decay=1e-4,
                        batch_size=batch,
                        steps=steps,
                        schedule="step",
                        warmup_steps=0,
                        augment=augment,
                        seed=seed,
                        eval_every=max(1, steps // 2),
                        probe_every=max(1, steps // 12),
                        **RUN_BOOKKEEPING,
                    )
                    suffix = f"-s{seed}" if len(settings["seeds"]) > 1 else ""
                    plan.append(
                        RunSpec(
                            f"{net}-{depth}{suffix}",
                            net,
                            depth,
                            {"net": net, "depth": depth, "seed": seed},
                            config,
                        )
                    )
        return plan

    def judge(self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]) -> Verdict:
        by = {(o.coords["net"], o.coords["depth"], o.coords["seed"]): o for o in outcomes}
        seeds = sorted({o.coords["seed"] for o in outcomes})
        checks = []
        for net, claim, deeper_worse in (
            ("plain", "plain-56 ends above plain-20", True),
            ("residual", "ResNet-56 ends at or below ResNet-20", False),
        ):
            pairs = [(by.get((net, 20, s)), by.get((net, 56, s))) for s in seeds]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            flags, shown = [], []
            for shallow, deep in pairs:
                lo, hi = shallow.final_loss, deep.final_loss
                if lo is None or hi is None:
                    continue
                flags.append(hi > lo if deeper_worse else hi <= lo)
                shown.append(f"{fmt(hi)} vs {fmt(lo)}")
            holds = None if not flags else all(flags)
            measured = f"final training loss 56 vs 20: {'; '.join(shown)}" if shown else "no finished runs"
            if len(flags) > 1:
                measured += f" ({sum(flags)} of {len(flags)} seeds)"
            reason = ""
            if holds is False:
                reason = (
                    "deeper plain net not worse at this budget"
                    if deeper_worse
                    else "at short budgets the two ResNets tie or the deeper one lags "
                    "(measured: tie at 150-300 steps of batch 32, below from 600)"
                )
            published = (
                "plain-56 training error above plain-20's (fig. 6)"
                if deeper_worse
                else "ResNet-56 training error below ResNet-20's (fig. 6); test 6.97% vs 8.75%"
            )
            checks.append(Check(claim, published, measured, holds, reason))
        notes = []
        for o in outcomes:
            if o.status == "diverged":
                notes.append(f"{o.key} diverged at step {o.steps}")
        return Verdict(checks, notes)

    def table(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        header = ["net", "depth", "seed", "final train loss", "val acc", "val loss", "result", "steps"]
        rows = []
        for o in sorted(outcomes, key=lambda o: (o.coords["net"], o.coords["depth"], o.coords["seed"])):
            rows.append(
                [
                    o.coords["net"],
                    str(o.coords["depth"]),
                    str(o.coords["seed"]),
                    fmt(o.final_loss),
                    "-" if o.val_acc is None else f"{100 * o.val_acc:.1f}%",
                    fmt(o.val_loss),
                    o.verdict or o.status,
                    str(o.steps),
                ]
            )
        return header, rows

    def figures(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any], out_dir: Path
    ) -> dict[str, tuple[Path, str]]:
        import resnorm.lab.studies.figures as figures

        several = len({o.coords["seed"] for o in outcomes}) > 1
        shade = {20: "tab:green", 56: "tab:purple"}
        path = figures.plot_loss_panels(
            outcomes,
            out_dir / "he2016_loss.png",
            panel=lambda o: f"{o.coords['net']} net",
            label=lambda o: f"{o.coords['depth']} layers" + (f", seed {o.coords['seed']}" if several else ""),
            style=lambda o: {"color": shade.get(o.coords["depth"], "tab:gray")},
            log_y=True,
            title="Training loss, each net at 20 and 56 layers (He et al. 2016's figure 6 view)",
        )
        return {
            "he2016_loss.png": (
                path,
                "Training loss against step: plain (left) and residual (right) "
                "nets at 20 and 56 layers; dashed: the class prior's loss",
            )
        }


def _is_mnist_folder(data: str) -> bool:
    """An on-disk MNIST / Fashion-MNIST folder (digits-like: no flips, and He's crop only on CIFAR)."""
    from resnorm.data import is_idx_folder, resolve_path

    path = resolve_path(data)
    return path.is_dir() and is_idx_folder(path)
