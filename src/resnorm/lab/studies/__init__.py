"""Named reproductions of the papers the lab is about: ``resnorm study NAME [--quick | --full]``.

=================  ===========================================================================
name               claim
=================  ===========================================================================
he2016             plain nets degrade with depth (plain-56 ends above plain-20 in training loss),
                   residual nets do not (ResNet-56 <= ResNet-20); He et al. 2016
xiong2020          Post-LN needs learning-rate warm-up where Pre-LN trains without it; at
                   initialization Post-LN's gradients are large near the output; Xiong et al. 2020
deepnet2022        at depth, Post-LN fails to train where DeepNorm (and its init) trains; Wang et al. 2022
mhc2026            hyper-connections' composite stream mixing grows with depth and training, mHC's
                   stays near 1; Zhu et al. 2025, Xie et al. (DeepSeek) 2025
default-compare    the README's claim on ``resnorm compare``: plain nets stop at depth 16, BatchNorm
                   alone reaches 16 but not 48, every skip design trains at 48, over three seeds
=================  ===========================================================================

Each study states the claim and the published numbers, trains its runs (``--quick``: at most 5 minutes
on a 2-core CPU; ``--full``: the budget the claim needs), prints a table and a one-line verdict
(reproduced / partly reproduced / not reproduced, measured beside published) and writes a report.
``base`` defines what a study is, ``catalog`` names them, ``runner`` runs one, ``figures`` draws
theirs; each study is one module.
"""

from __future__ import annotations

from resnorm.lab.studies.base import BUDGETS, Check, RunOutcome, RunSpec, Study, Verdict
from resnorm.lab.studies.catalog import STUDIES, get, names

__all__ = [
    "STUDIES",
    "get",
    "names",
    "run_study",
    "Study",
    "Check",
    "Verdict",
    "RunOutcome",
    "RunSpec",
    "BUDGETS",
]


def run_study(*args, **kwargs):
    """``resnorm.lab.studies.runner.run_study`` (imported on first use)."""
    from resnorm.lab.studies.runner import run_study as run

    return run(*args, **kwargs)
