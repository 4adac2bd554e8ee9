"""What a named study is made of: its parameters and budgets, its runs, their outcomes, its verdict.

A study (``Study``) reproduces one published claim. It declares

- ``params``: its own settings (``Param``: name, kind, help), with one value per budget in
  ``budgets`` (``"quick"``: at most 5 minutes on a 2-core CPU; ``"full"``: the budget the claim
  needs); ``data`` and ``steps`` are always among them;
- ``varies``: the ``TrainConfig`` fields it sets per run (a ``KEY=VALUE`` for one of them is an error
  naming the parameter to use instead); any other ``TrainConfig`` field given as ``KEY=VALUE``
  changes the recipe of every run;
- ``plan(settings)``: the runs (``RunSpec``: a key naming the run folder, the design label and depth
  the report shows, the coordinates the verdict reads, the ``TrainConfig``);
- ``measure(settings, out_dir)`` (optional): measurements that are not training runs (e.g. gradients
  at initialization), returned as a JSON-able dict;
- ``judge(outcomes, measurements)``: the ``Verdict`` (one ``Check`` per part of the claim);
- ``table(outcomes, measurements)``: the rows printed at the end; ``figures(...)``: its own plots.

The verdict: every part of the claim holds -> ``reproduced``; none holds -> ``not reproduced``; some
-> ``partly reproduced``. A part that could not be judged (its runs are missing) does not count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnorm.lab.config import TrainConfig
from resnorm.lab.errors import ConfigError

__all__ = [
    "Param",
    "RunSpec",
    "RunOutcome",
    "Check",
    "Verdict",
    "Study",
    "BUDGETS",
    "OUTCOMES",
    "final_loss",
    "format_table",
    "fmt",
    "all_hold",
]

BUDGETS = ("quick", "full")
OUTCOMES = ("reproduced", "partly reproduced", "not reproduced", "not judged")
PARAM_KINDS = ("str", "int", "ints", "floats")
FINAL_FRACTION = 0.1  # the final training loss: mean over the last 10% of the steps
# what every study's runs share: the loss of every step, no checkpoint but the final one, no TensorBoard
RUN_BOOKKEEPING: dict[str, Any] = {"log_every": 1, "checkpoint_every": 0, "tensorboard": False}
# the optimizer of the Post-LN papers (Xiong et al. 2020; Wang et al. 2022): Adam (0.9, 0.98), no weight
# decay, no gradient clipping, a constant rate after the warm-up
PAPERS_ADAM: dict[str, Any] = {"optimizer": "adam", "beta1": 0.9, "beta2": 0.98, "weight_decay": 0.0,
                               "grad_clip": 0.0, "schedule": "constant"}


@dataclass(frozen=True)
class Param:
    """A study setting: ``kind`` is ``str``, ``int``, ``ints`` (comma-separated) or ``floats``."""

    name: str
    kind: str
    help: str

    def parse(self, text: str) -> Any:
        """The value of ``KEY=text``; a ``ConfigError`` naming the key and what was expected."""
        if self.kind == "str":
            if not text:
                raise ConfigError(f"{self.name}= is empty; expected {self.help}")
            return text
        items = [t.strip() for t in str(text).split(",") if t.strip()]
        if not items or (self.kind == "int" and len(items) != 1):
            what = "an integer" if self.kind == "int" else "comma-separated numbers"
            raise ConfigError(f"{self.name}={text!r}: expected {what} ({self.help})")
        values = []
        for item in items:
            try:
                value = float(item) if self.kind == "floats" else int(item)
            except ValueError:
                what = "numbers" if self.kind == "floats" else "integers"
                raise ConfigError(f"{self.name}={text!r}: expected {what} ({self.help})") from None
            bad = not (math.isfinite(value) and value > 0) if self.kind == "floats" else value < 0
            if bad:
                sign = "positive" if self.kind == "floats" else "non-negative"
                raise ConfigError(f"{self.name}={text!r}: expected {sign} values ({self.help})")
            values.append(value)
        if len(set(values)) != len(values):
            raise ConfigError(f"{self.name}={text!r} repeats a value")
        return values[0] if self.kind == "int" else tuple(values)


@dataclass(frozen=True)
class RunSpec:
    """One training run of a study: ``key`` (its folder name), ``design`` and ``depth`` (as the report
    groups runs), ``coords`` (what the verdict reads: placement, lr, seed, ...) and its config."""

    key: str
    design: str
    depth: int | None
    coords: Mapping[str, Any]
    config: TrainConfig


@dataclass
class RunOutcome:
    """What a run ended with, as the verdict reads it (built from its folder, or by hand in tests).

    ``final_loss``: mean training loss over the last 10% of the steps (``final_loss``); ``verdict``:
    the lab's (trained / did not train / diverged, against ``baseline``); ``probes``: the probe
    records of ``metrics.jsonl``; ``curve``: (step, training loss) pairs."""

    key: str
    coords: Mapping[str, Any]
    status: str
    verdict: str | None
    final_loss: float | None
    val_loss: float | None = None
    val_acc: float | None = None
    baseline: float | None = None
    steps: int = 0
    wall_s: float | None = None
    probes: list[dict] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def trained(self) -> bool:
        return self.verdict == "trained"


@dataclass(frozen=True)
class Check:
    """One part of a claim: what the paper says (``published``), what was measured, and whether it
    holds (None: could not be judged). ``reason``: why it does not hold, when known."""

    claim: str
    published: str
    measured: str
    holds: bool | None
    reason: str = ""


@dataclass
class Verdict:
    """The study's outcome over its ``checks``; ``notes``: context that is not part of the claim."""

    checks: list[Check]
    notes: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        judged = [c.holds for c in self.checks if c.holds is not None]
        if not judged:
            return "not judged"
        if all(judged):
            return "reproduced"
        if not any(judged):
            return "not reproduced"
        return "partly reproduced"

    def line(self, name: str) -> str:
        """``name: reproduced (...)`` — the one-line verdict with each part's measured numbers."""
        parts = []
        for c in self.checks:
            mark = {True: "holds", False: "does not hold", None: "not judged"}[c.holds]
            parts.append(f"{c.claim}: {mark} ({c.measured}; published: {c.published})")
        return f"{name}: {self.outcome} — " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "checks": [c.__dict__ for c in self.checks], "notes": self.notes}


class Study:
    """A named reproduction (module docstring). Subclasses set the class attributes and implement
    ``plan``, ``judge`` and ``table``."""

    name: str = ""
    title: str = ""
    paper: str = ""
    claim: str = ""
    published: Sequence[str] = ()
    setup: Sequence[str] = ()  # how the lab's experiment maps onto the paper's (printed before the runs)
    task: str = "text"  # image | text: what data= must be
    params: Sequence[Param] = ()
    budgets: Mapping[str, Mapping[str, Any]] = {}
    varies: Sequence[str] = ()

    # ------------------------------------------------------------------------------ settings

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def settings(self, budget: str, given: Mapping[str, str] | None = None) -> tuple[dict, dict]:
        """(study settings, TrainConfig overrides) for ``budget`` and the ``KEY=VALUE`` strings
        ``given``. Study parameters are parsed by their kind; ``seed=N`` means ``seeds=N``; a field the
        study varies per run is a ``ConfigError`` naming the parameter to use; any other key must be a
        ``TrainConfig`` field (checked when the runs are planned)."""
        from resnorm.lab.config import field_names

        if budget not in self.budgets:
            raise ConfigError(f"budget {budget!r}: expected one of {', '.join(self.budgets)}")
        settings = dict(self.budgets[budget])
        overrides: dict[str, str] = {}
        names = {p.name for p in self.params}
        seen: dict[str, str] = {}  # setting -> the KEY=VALUE that gave it
        for raw_key, text in (given or {}).items():
            key = raw_key.strip().replace("-", "_")
            if key == "seed" and "seeds" in names:
                key = "seeds"
            if key in seen and seen[key].partition("=")[2] != str(text).strip():  # seed= and seeds=
                raise ConfigError(f"{seen[key]} and {raw_key}={text} both set {key}: conflicting values")
            seen[key] = f"{raw_key}={str(text).strip()}"
            if key == "epochs" and "steps" in names:  # it would silently replace the study's steps
                raise ConfigError(f"epochs={text}: study {self.name} sets the length of its runs with "
                                  "steps=; give steps=N instead")
            if key in names:
                settings[key] = self.param(key).parse(str(text))
            elif key in self.varies:
                raise ConfigError(
                    f"{key}={text}: study {self.name} sets {key} itself for each run; "
                    f"its settings are {', '.join(sorted(names))}"
                )
            elif key in field_names():
                overrides[key] = str(text)
            else:
                raise ConfigError(
                    f"unknown setting {key!r} for study {self.name}; its settings: "
                    f"{', '.join(sorted(names))}; or any training-config key "
                    "(resnorm train --help)"
                )
        return settings, overrides

    # ------------------------------------------------------------------------------ to implement

    def plan(self, settings: Mapping[str, Any], overrides: Mapping[str, str]) -> list[RunSpec]:
        raise NotImplementedError

    def measure(
        self, settings: Mapping[str, Any], overrides: Mapping[str, str], out_dir: Path, progress: bool = False
    ) -> dict[str, Any]:
        return {}

    def judge(self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]) -> Verdict:
        raise NotImplementedError

    def table(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        raise NotImplementedError

    def figures(
        self, outcomes: Sequence[RunOutcome], measurements: Mapping[str, Any], out_dir: Path
    ) -> dict[str, tuple[Path, str]]:
        """The study's own PNGs: name -> (path, caption)."""
        return {}

    # ------------------------------------------------------------------------------ helpers

    def config(self, model: str, overrides: Mapping[str, str], **fields: Any) -> TrainConfig:
        """``config_for(model, **fields)`` with the user's recipe overrides applied on top (parsed by
        each field's type)."""
        from resnorm.lab.config import config_for, parse_overrides

        typed = parse_overrides([f"{k}={v}" for k, v in overrides.items()])
        return config_for(model, **{**fields, **typed})


def final_loss(curve: Sequence[tuple[int, float]], fraction: float = FINAL_FRACTION) -> float | None:
    """Mean training loss over the last ``fraction`` of the logged steps (at least one); None when the
    curve is empty; NaN/inf when a loss in that window is."""
    if not curve:
        return None
    k = max(1, math.ceil(len(curve) * fraction))
    tail = [loss for _, loss in curve[-k:]]
    return sum(tail) / len(tail)


def all_hold(flags: Sequence[bool]) -> bool | None:
    """True when every flag is True, False when one is False, None for no flags."""
    return None if not flags else all(flags)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table cell (``-`` for None, ``nan``/``inf`` as such)."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000 or (value != 0 and abs(value) < 10 ** -(digits - 1)):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def slug(text: str) -> str:
    """A folder-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
