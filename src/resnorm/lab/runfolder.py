"""The run folder: the one module that reads and writes its files.

A run folder (``resnorm train``, one per run of ``resnorm compare``) holds:

- ``config.yaml``: the full ``TrainConfig`` (``write_config`` / ``read_config``);
- ``metrics.jsonl``: one strict-JSON object per line, ``kind`` = train | val | probe | event
  (``MetricsWriter`` / ``read_metrics``). JSON has no NaN or infinity: a non-finite number is written as
  ``null`` and its kind (``"nan"``, ``"inf"``, ``"-inf"``) is kept under ``"nonfinite"`` by path, e.g.
  ``{"loss": null, "nonfinite": {"loss": "nan"}}`` or ``{"act_rms": [1.0, null], "nonfinite":
  {"act_rms.1": "nan"}}``; ``read_metrics`` restores the floats (and still reads bare ``NaN``);
- ``result.json``: what the run ended with (``RunResult``; the same strict JSON, written atomically);
- ``checkpoint.pt``: model, optimizer, step and RNG state for ``resume`` (``save_checkpoint`` /
  ``load_checkpoint``), written atomically and read with ``torch.load(weights_only=True)``;
- ``tb/``: TensorBoard events when tensorboard is installed.

Files are written with the permissions the process's umask gives new files (0644 under the usual
022), like the plots and reports beside them. Anything unreadable (truncated, binary, not JSON/YAML, not a
checkpoint, or a known field holding a value of the wrong type) raises ``RunFolderError`` naming the
file and the problem, and the file is left as it is.

``load_run`` parses a folder into ``RunData`` for plots and reports; ``find_run_dirs`` expands study
folders (``study.json``, written by ``resnorm compare``) into their runs.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnorm.lab import registry
from resnorm.lab.config import (
    TrainConfig,
    canonical_keys,
    field_names,
    from_dict,
    read_yaml_mapping,
    save_config,
)
from resnorm.lab.errors import ConfigError, RunFolderError, RunFolderExistsError
from resnorm.lab.files import atomic_torch_save, atomic_write_text, file_mode

__all__ = [
    "CONFIG_FILE", "METRICS_FILE", "RESULT_FILE", "CHECKPOINT_FILE", "STUDY_FILE", "TB_DIR", "RUN_FILES",
    "FORMAT_VERSION", "RunResult", "RunData", "MetricsWriter", "write_config", "read_config",
    "read_metrics", "group_metrics", "truncate_metrics", "encode_json", "decode_json", "write_result",
    "read_result", "save_checkpoint", "load_checkpoint", "has_checkpoint", "is_nonempty_dir",
    "is_run_folder", "is_study_folder", "check_overwritable",
    "clear_run_files", "remove_stale_temporaries", "load_run", "find_run_dirs", "read_study", "write_study",
    "atomic_write_text", "atomic_torch_save", "file_mode", "printable",
]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"
STUDY_FILE = "study.json"
TB_DIR = "tb"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, RESULT_FILE)
# everything a run (and its plots and report) writes into its folder: what --overwrite replaces
RUN_OUTPUTS = (*RUN_FILES, "report.html", "loss.png", "grad_norm.png", "act_rms.png", TB_DIR)
# the files a compare or study writes at the top of its folder (besides the run folders and plots)
STUDY_OUTPUTS = (STUDY_FILE, "summary.txt", "verdict.json", "measurements.json", "report.html")
FORMAT_VERSION = 1  # of checkpoint.pt
STATUSES = ("completed", "diverged", "interrupted")


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: not a {what} (not UTF-8 text; the file is corrupted)") from None


# ----------------------------------------------------------------------------------------------
# strict JSON with non-finite numbers


def _kind(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _strict(value: Any, path: str, nonfinite: dict[str, str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        nonfinite[path] = _kind(value)
        return None
    if isinstance(value, dict):
        return {k: _strict(v, f"{path}.{k}" if path else str(k), nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v, f"{path}.{i}" if path else str(i), nonfinite) for i, v in enumerate(value)]
    return value


def encode_json(record: dict[str, Any], indent: int | None = None) -> str:
    """``record`` as strict JSON: non-finite floats become ``null``, their kinds go to ``"nonfinite"``."""
    nonfinite: dict[str, str] = {}
    clean = _strict(record, "", nonfinite)
    if nonfinite:
        clean["nonfinite"] = nonfinite
    return json.dumps(clean, indent=indent, allow_nan=False)


def decode_json(record: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``encode_json`` on a parsed object: restores the non-finite floats."""
    nonfinite = record.pop("nonfinite", None)
    if not isinstance(nonfinite, dict):
        return record
    values = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
    for path, kind in nonfinite.items():
        keys = str(path).split(".")
        target: Any = record
        try:
            for key in keys[:-1]:
                target = target[int(key)] if isinstance(target, list) else target[key]
            last = keys[-1]
            if isinstance(target, list):
                target[int(last)] = values.get(kind, math.nan)
            else:
                target[last] = values.get(kind, math.nan)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a path that does not exist in this record: nothing to restore
    return record


# ----------------------------------------------------------------------------------------------
# config.yaml


def write_config(config: TrainConfig, path: str | Path) -> None:
    """``config`` as YAML at ``path`` (a file, or a run folder: then its ``config.yaml``)."""
    path = Path(path)
    save_config(config, path / CONFIG_FILE if path.is_dir() else path)


def read_config(run_dir: str | Path) -> TrainConfig:
    """The ``TrainConfig`` saved in ``run_dir/config.yaml``."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunFolderError(f"no {CONFIG_FILE} in {run_dir}: not a run folder")
    values = read_yaml_mapping(path)
    try:
        return from_dict(values)
    except ConfigError as err:
        raise RunFolderError(f"{path}: {err}") from None


# ----------------------------------------------------------------------------------------------
# metrics.jsonl


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None for a bad line, line) for each non-blank line."""
    lines = _read_text(path, "metrics file").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            yield number, None, line
            continue
        yield number, record, line


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (``path`` is the run folder or the file), in file
    order, optionally only those of one ``kind``; non-finite values are restored as floats.

    A truncated last line (a run killed mid-write) is skipped; any other line that is not a JSON object
    with a ``kind`` raises ``RunFolderError`` naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise RunFolderError(f"no {METRICS_FILE} at {path.parent}: not a run folder")
    rows = list(_records(path))
    out = []
    for i, (number, record, _) in enumerate(rows):
        if record is None:
            if i == len(rows) - 1:
                break
            raise RunFolderError(f"{path}:{number}: not a JSON object (the file is corrupted)")
        if not isinstance(record, dict) or "kind" not in record:
            raise RunFolderError(f"{path}:{number}: expected a JSON object with a 'kind' field")
        problem = _record_problem(record)
        if problem:
            raise RunFolderError(f"{path}:{number}: {problem} (the file is corrupted)")
        if kind is None or record.get("kind") == kind:
            out.append(decode_json(record))
    return out


_RECORD_NUMBERS = ("loss", "lr", "grad_norm", "acc", "epoch", "time_s", "global_grad_norm")
_RECORD_LISTS = ("grad_norm", "act_rms", "update_ratio", "attn_entropy")


def _record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with the types of a metrics record's known fields (None when nothing is)."""
    if not isinstance(record["kind"], str):
        return "'kind' is not a string"
    if _wrong_type(record.get("step"), (int,)):
        return f"'step' is not an integer: {record['step']!r}"
    probe = record["kind"] == "probe"
    for key in _RECORD_NUMBERS:
        if key in record and not (probe and key in _RECORD_LISTS) and _wrong_type(record[key], _NUMBER):
            return f"{key!r} is not a number: {record[key]!r}"
    if probe:
        for key in _RECORD_LISTS:
            value = record.get(key)
            if value is not None and (not isinstance(value, list) or
                                      any(_wrong_type(v, _NUMBER) for v in value)):
                return f"{key!r} is not a list of numbers"
    return None


def group_metrics(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by ``kind`` (train, val, probe, event, ...). A resumed run may have logged a step
    twice: train, val and probe keep the latest record of each step, in step order."""
    groups: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "probe": [], "event": []}
    for record in records:
        groups.setdefault(record["kind"], []).append(record)
    for kind in ("train", "val", "probe"):
        by_step = {r["step"]: r for r in groups[kind] if "step" in r}
        groups[kind] = [by_step[s] for s in sorted(by_step)]
    return groups


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keep only the records up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [line for _, record, line in _records(path)
            if record is not None and isinstance(record, dict) and record.get("step", 0) <= step]
    atomic_write_text("".join(line + "\n" for line in kept), path)


class MetricsWriter:
    """Appends records to ``metrics.jsonl`` (and TensorBoard scalars); does nothing when disabled
    (processes other than rank 0)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False) -> None:
        run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.file = None
        self.writer = None
        if not enabled:
            return
        if not self.path.exists():
            self.path.touch(mode=file_mode())
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=str(run_dir / TB_DIR))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled or self.file is None:
            return
        self.file.write(encode_json(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            self._scalars(record)

    def event(self, step: int, event: str, detail: str = "") -> None:
        self.write({"kind": "event", "step": step, "event": event, "detail": detail})

    def _scalars(self, record: dict[str, Any]) -> None:
        step, kind = record["step"], record["kind"]
        if kind == "train":
            for key in ("loss", "lr", "grad_norm"):
                self.writer.add_scalar(f"train/{key}", record[key], step)
        elif kind == "val":
            self.writer.add_scalar("val/loss", record["loss"], step)
            if record.get("acc") is not None:
                self.writer.add_scalar("val/acc", record["acc"], step)
        elif kind == "probe":
            for key in ("grad_norm", "act_rms", "update_ratio", "attn_entropy"):
                for i, value in enumerate(record.get(key) or []):
                    self.writer.add_scalar(f"probe/{key}/{i}", value, step)
            self.writer.add_scalar("probe/global_grad_norm", record["global_grad_norm"], step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ----------------------------------------------------------------------------------------------
# result.json


@dataclass
class RunResult:
    """What a run ended with; written to ``result.json``.

    ``status``: completed | diverged | interrupted. ``verdict``: trained | did not train | diverged
    (``resnorm.lab.summary.verdict``: the final losses against ``baseline_loss``, the loss of predicting
    the training set's class or character frequencies). ``final``: ``train_loss`` (mean of the last
    ``spike_window`` training losses), ``val_loss`` and ``val_acc`` (the last evaluation; ``val_acc`` is
    None for text), plus ``test_loss`` and ``test_acc`` for completed runs on datasets with their own test
    split. ``grad_ratio``: first-block / last-block gradient norm, geometric mean over the probes;
    ``grad_ratio_first`` / ``grad_ratio_last``: the same ratio at the first and the last probe.
    ``stop_signal``: ``"SIGINT"`` or ``"SIGTERM"`` when a signal interrupted the run.
    ``step_time_s``: median seconds of a training step without probes; ``peak_memory_mib``: peak tensor
    memory of one training step above what was in use at its start (``resnorm.lab.memory``).
    """

    status: str
    steps: int
    diverged_step: int | None
    final: dict[str, float | None]
    grad_ratio: float | None
    out_dir: Path
    wall_s: float
    total_steps: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    verdict: str | None = None
    baseline_loss: float | None = None
    grad_ratio_first: float | None = None
    grad_ratio_last: float | None = None
    stop_signal: str | None = None
    step_time_s: float | None = None
    peak_memory_mib: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["out_dir"] = Path(known.get("out_dir", "."))
        return cls(**known)


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    text = _read_text(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path}: not a {what} (invalid JSON at line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: not a {what} (expected a JSON object, got {type(data).__name__})")
    return decode_json(data)


def write_result(result: RunResult, run_dir: str | Path | None = None) -> None:
    path = Path(run_dir if run_dir is not None else result.out_dir) / RESULT_FILE
    atomic_write_text(encode_json(result.to_json(), indent=2) + "\n", path)


_NUMBER = (int, float)
_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "verdict": (str,), "stop_signal": (str,), "steps": (int,), "total_steps": (int,),
    "diverged_step": (int,), "final": (dict,), "config": (dict,), "grad_ratio": _NUMBER,
    "grad_ratio_first": _NUMBER, "grad_ratio_last": _NUMBER, "wall_s": _NUMBER, "baseline_loss": _NUMBER,
    "step_time_s": _NUMBER, "peak_memory_mib": _NUMBER,
}


def _wrong_type(value: Any, types: tuple[type, ...]) -> bool:
    """Not None and not one of ``types`` (a bool is no number)."""
    return value is not None and (not isinstance(value, types) or isinstance(value, bool))


def read_result_dict(run_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``result.json`` of a run folder (None when the run has not finished); a known field of
    the wrong type (``"steps": "x"``, ``"final": 3``) is a ``RunFolderError`` naming the file."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    data = _read_json_object(path, "result file")
    wrong = [k for k, types in _RESULT_TYPES.items() if _wrong_type(data.get(k), types)]
    final = data.get("final")
    if not wrong and isinstance(final, dict):
        wrong = [f"final.{k}" for k, v in final.items() if _wrong_type(v, _NUMBER)]
    if wrong:
        raise RunFolderError(f"{path}: not a valid result file (a wrong value for {', '.join(wrong)}; "
                             "the file is corrupted)")
    return data


def read_result(run_dir: str | Path) -> RunResult:
    """The ``RunResult`` of a finished run."""
    data = read_result_dict(run_dir)
    if data is None:
        raise RunFolderError(f"no {RESULT_FILE} in {run_dir} (the run has not finished)")
    if "status" not in data or "steps" not in data:
        raise RunFolderError(f"{Path(run_dir) / RESULT_FILE}: not a result file (no status or steps)")
    data.setdefault("diverged_step", None)
    data.setdefault("final", {})
    data.setdefault("grad_ratio", None)
    data.setdefault("wall_s", 0.0)
    return RunResult.from_json(data)


# ----------------------------------------------------------------------------------------------
# checkpoint.pt

CHECKPOINT_KEYS = ("format", "step", "config", "model", "optimizer", "rng", "spikes", "grad_ratios",
                   "elapsed_s")
# what each entry must be: a checkpoint that loads but holds something else is corrupted as well
_CHECKPOINT_TYPES: dict[str, tuple[type, ...]] = {
    "step": (int,), "config": (dict,), "model": (dict,), "optimizer": (dict,), "rng": (list, tuple),
    "spikes": (dict,), "grad_ratios": (list, tuple), "elapsed_s": (int, float),
}


def save_checkpoint(state: dict[str, Any], run_dir: str | Path) -> None:
    """Write ``state`` (with ``format`` set) to ``run_dir/checkpoint.pt`` atomically."""
    atomic_torch_save({"format": FORMAT_VERSION, **state}, Path(run_dir) / CHECKPOINT_FILE)


def _numpy_safe_globals() -> list[Any]:
    """numpy types a checkpoint of an older resnorm holds (numpy's RNG state as an array)."""
    import numpy as np

    found = [np.ndarray, np.dtype]
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    reconstruct = getattr(getattr(core, "multiarray", None), "_reconstruct", None)
    if reconstruct is not None:
        found.append(reconstruct)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "UInt32DType"):
        found.append(dtypes.UInt32DType)
    return found


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's state, read without running any code from the file (``weights_only=True``).

    ``path`` is the file or its run folder. A missing, truncated, empty or foreign file raises
    ``RunFolderError`` naming it (the file is left as it is).
    """
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise RunFolderError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise RunFolderError(f"{path}: not a readable checkpoint (the file is empty)")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        reason = " ".join(str(err).split()) or type(err).__name__
        if len(reason) > 160:
            reason = reason[:157] + "..."
        raise RunFolderError(f"{path}: not a readable checkpoint (truncated or corrupted: "
                             f"{reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise RunFolderError(f"{path} is not a resnorm checkpoint (format {FORMAT_VERSION})")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise RunFolderError(f"{path}: not a complete resnorm checkpoint (missing {', '.join(missing)})")
    wrong = [k for k, types in _CHECKPOINT_TYPES.items()
             if not isinstance(state[k], types) or isinstance(state[k], bool)]
    if not wrong and state["step"] < 0:
        wrong = ["step"]
    if not wrong and not (state["rng"] and all(isinstance(r, dict) for r in state["rng"])):
        wrong = ["rng"]
    if wrong:
        raise RunFolderError(f"{path}: not a valid resnorm checkpoint (a wrong value for {', '.join(wrong)}; "
                             "the file is corrupted)")
    return state


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_FILE).is_file()


# ----------------------------------------------------------------------------------------------
# the folder


def is_nonempty_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any(path.iterdir())


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder a resnorm run wrote: it holds the run's metrics, checkpoint or result,
    or a ``config.yaml`` that is a run's (a mapping with a ``model`` key: a run stopped in its setup)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in (METRICS_FILE, CHECKPOINT_FILE, RESULT_FILE)):
        return True
    try:
        return "model" in read_yaml_mapping(path / CONFIG_FILE)
    except (OSError, ValueError, TypeError):
        return False


def is_study_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder ``resnorm compare`` or ``resnorm study`` wrote (it has ``study.json``)."""
    return (Path(path) / STUDY_FILE).is_file()


def check_overwritable(path: str | Path, kind: str = "run") -> None:
    """Overwriting replaces only what resnorm wrote. In a folder that is not a run folder
    (``kind="run"``) or a study folder (``kind="study"``), a file the run or study would replace (a
    ``config.yaml``, ``report.html``, ``tb/``, a plot of the same name) is the user's own: then
    ``RunFolderExistsError`` naming it. Other files in the folder are kept either way."""
    path = Path(path)
    if not is_nonempty_dir(path):
        return
    if kind == "run":
        if is_run_folder(path):
            return
        names = [n for n in RUN_OUTPUTS if (path / n).exists()]
        what = "a run folder"
    else:
        if is_study_folder(path):
            return
        names = [n for n in STUDY_OUTPUTS if (path / n).exists()] + sorted(p.name for p in path.glob("*.png"))
        what = "a study folder (it has no study.json)"
    if names:
        shown = printable(str(path / names[0]))
        raise RunFolderExistsError(
            f"{shown} is not resnorm's: {printable(str(path))} is not {what}, and overwrite=True replaces "
            "only resnorm's own files; choose another out_dir",
            cli=f"{shown} is not resnorm's: {printable(str(path))} is not {what}, and --overwrite replaces "
                "only resnorm's own files; choose another --out")


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Remove the temporary files of atomic writes that a killed process left (``.checkpoint.pt.*.tmp``:
    a run killed with SIGKILL while it saved); only those of the run's own files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for path in run_dir.glob(".*.tmp"):
        if path.is_file() and any(path.name.startswith(f".{name}.") for name in RUN_FILES):
            path.unlink(missing_ok=True)


def clear_run_files(run_dir: str | Path) -> None:
    """Remove the files a run writes (and only those): the run files, ``tb/`` and the plots/report."""
    run_dir = Path(run_dir)
    for name in RUN_OUTPUTS:
        if name != TB_DIR:
            (run_dir / name).unlink(missing_ok=True)
    remove_stale_temporaries(run_dir)
    shutil.rmtree(run_dir / TB_DIR, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# reading runs for plots and reports


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

    @property
    def family(self) -> registry.ModelFamily | None:
        model = self.config.get("model")
        return registry.get(model) if model in registry.names() else None


def load_run(path: str | Path, design: str | None = None, depth: int | None = None) -> RunData:
    """Parse a run folder. ``design``/``depth`` override what is derived from its ``config.yaml``."""
    path = Path(path)
    if not (path / METRICS_FILE).is_file():
        raise RunFolderError(f"not a run folder: {path} (no {METRICS_FILE} in it)")
    config = read_yaml_mapping(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
    _check_saved_config(path / CONFIG_FILE, config)
    result = read_result_dict(path) or {}
    groups = group_metrics(read_metrics(path / METRICS_FILE))
    if depth is None:
        depth = _depth_of(config, groups["probe"])
    return RunData(path=path, name=printable(path.name), config=config,
                   design=design or registry.design_name(config),
                   depth=depth, train=groups["train"], val=groups["val"], probes=groups["probe"],
                   events=groups["event"], result=result)


def _check_saved_config(path: Path, config: dict) -> None:
    """The known keys of a saved config of a known model must hold valid values (a ``RunFolderError``
    naming the file otherwise); keys this version does not know are left alone."""
    if config.get("model") not in registry.names():
        return
    known = {k: v for k, v in canonical_keys(config).items() if k in field_names()}
    try:
        from_dict(known)
    except ConfigError as err:
        raise RunFolderError(f"{path}: {err}") from None
    family = registry.get(config["model"])
    try:
        family.depth_of(known)
    except (TypeError, ValueError):
        raise RunFolderError(f"{path}: {family.depth_field}={known[family.depth_field]!r} is not an "
                             "integer") from None


def printable(text: str) -> str:
    """``text`` (a file name) with bytes that are not UTF-8 shown as U+FFFD: names of folders made
    outside Python may hold them, and plots, HTML and the terminal need real text."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _depth_of(config: dict, probes: list[dict]) -> int | None:
    model = config.get("model")
    if model in registry.names():
        depth = registry.get(model).depth_of(config)
        if depth is not None:
            return depth
    if probes and probes[0].get("grad_norm"):
        return len(probes[0]["grad_norm"])
    return None


def write_study(study: dict[str, Any], out_dir: str | Path) -> None:
    atomic_write_text(encode_json(study, indent=2) + "\n", Path(out_dir) / STUDY_FILE)


def read_study(out_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``study.json`` of a study folder (None when there is none)."""
    path = Path(out_dir) / STUDY_FILE
    if not path.is_file():
        return None
    return _read_json_object(path, "study file")


def _study_entries(path: Path, study: dict[str, Any]) -> list[tuple[str, str | None, int | None]]:
    """``(dir, design, depth)`` of each run a ``study.json`` lists; a ``RunFolderError`` naming the file
    when an entry is not ``{"dir": "name", "design": str, "depth": int}`` (design and depth optional)."""
    runs = study.get("runs") or []
    where = path / STUDY_FILE
    if not isinstance(runs, list):
        raise RunFolderError(f"{where}: 'runs' is not a list (the file is corrupted)")
    entries = []
    for i, entry in enumerate(runs):
        if not isinstance(entry, dict) or "dir" not in entry:
            continue
        run_dir, design, depth = entry["dir"], entry.get("design"), entry.get("depth")
        if not isinstance(run_dir, str) or not run_dir or _wrong_type(design, (str,)) or \
                _wrong_type(depth, (int,)):
            raise RunFolderError(f"{where}: run {i} is not a valid entry (expected a folder name, a design "
                                 "name and an integer depth; the file is corrupted)")
        entries.append((run_dir, design, depth))
    return entries


def find_run_dirs(paths: Iterable[str | Path]) -> list[tuple[Path, str | None, int | None]]:
    """Expand run and study folders into ``(run_dir, design, depth)``; design/depth None = derive.

    A study folder's ``study.json`` gives order, design and depth; without it, every sub-folder that
    holds a ``metrics.jsonl`` is a run. Raises ``FileNotFoundError`` for a path that does not exist and
    ``RunFolderError`` for one that is neither.
    """
    found: list[tuple[Path, str | None, int | None]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"no such run or study folder: {path}")
        if (path / METRICS_FILE).is_file():
            found.append((path, None, None))
            continue
        study = read_study(path) if path.is_dir() else None
        if study is not None:
            entries = _study_entries(path, study)
            runs = [(path / d, design, depth) for d, design, depth in entries
                    if (path / d / METRICS_FILE).is_file()]
        elif path.is_dir():
            runs = [(p, None, None) for p in sorted(path.iterdir()) if (p / METRICS_FILE).is_file()]
        else:
            runs = []
        if not runs:
            raise RunFolderError(f"{path} is neither a run folder (config.yaml + metrics.jsonl) nor a "
                                 "study folder (sub-folders that are run folders)")
        found.extend(runs)
    return found
