"""resnorm.lab.runfolder: strict JSON with non-finite numbers, file permissions, unreadable files."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch

from resnorm.lab import runfolder
from resnorm.lab.config import config_for
from resnorm.lab.errors import RunFolderError
from resnorm.lab.runfolder import decode_json, encode_json, load_checkpoint, read_metrics, read_result
from resnorm.lab.trainer import train


def tiny_mlp(**fields):
    base = dict(data="digits", depth=2, width=16, batch_size=256, steps=4, eval_every=2, log_every=1,
                probe_every=2, checkpoint_every=0, tensorboard=False, device="cpu")
    return config_for("residual-mlp", **{**base, **fields})


def strict_loads(line: str):
    """json.loads as JavaScript's JSON.parse sees it: NaN, Infinity and -Infinity are not JSON."""
    def reject(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(line, parse_constant=reject)


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    """A run whose loss becomes non-finite (SGD at lr 1e6) within a few steps."""
    out = tmp_path_factory.mktemp("div") / "run"
    result = train(tiny_mlp(optimizer="sgd", lr=1e6, momentum=0.0, steps=40, probe_every=1), out,
                   progress=False)
    assert result.status == "diverged" and result.verdict == "diverged"
    assert json.loads((out / "result.json").read_text())["verdict"] == "diverged"
    return out


def test_encode_json_is_strict_and_decodes_back():
    record = {"kind": "probe", "step": 3, "loss": math.nan, "grad_norm": [1.0, math.inf, -math.inf, 2.5],
              "final": {"val_loss": math.nan, "val_acc": 0.5}, "detail": "loss=nan"}
    text = encode_json(record)
    parsed = strict_loads(text)
    assert parsed["loss"] is None and parsed["grad_norm"] == [1.0, None, None, 2.5]
    assert parsed["final"] == {"val_loss": None, "val_acc": 0.5}
    assert parsed["nonfinite"] == {"loss": "nan", "grad_norm.1": "inf", "grad_norm.2": "-inf",
                                   "final.val_loss": "nan"}
    back = decode_json(parsed)
    assert "nonfinite" not in back and math.isnan(back["loss"]) and math.isnan(back["final"]["val_loss"])
    assert back["grad_norm"][:3] == [1.0, math.inf, -math.inf] and back["detail"] == "loss=nan"
    assert encode_json({"kind": "val", "step": 1, "loss": 0.5}) == '{"kind": "val", "step": 1, "loss": 0.5}'


def test_a_diverged_run_writes_strict_json_and_reads_back_the_non_finite_values(diverged_run):
    lines = (diverged_run / "metrics.jsonl").read_text().splitlines()
    records = [strict_loads(line) for line in lines]  # every line is JSON
    last_train = [r for r in records if r["kind"] == "train"][-1]
    assert None in (last_train["loss"], last_train["grad_norm"]) and last_train["nonfinite"]
    read_back = read_metrics(diverged_run, "train")[-1]
    assert not (math.isfinite(read_back["loss"]) and math.isfinite(read_back["grad_norm"]))
    assert set(read_back) == {"kind", "step", "epoch", "loss", "lr", "grad_norm", "spike", "time_s"}
    strict_loads((diverged_run / "result.json").read_text())
    assert read_result(diverged_run).status == "diverged"


def test_read_metrics_still_reads_bare_nan(tmp_path):
    legacy = '{"kind": "train", "step": 1, "loss": NaN, "grad_norm": Infinity}\n'  # written before null
    (tmp_path / "metrics.jsonl").write_text(legacy)
    record = read_metrics(tmp_path)[0]
    assert math.isnan(record["loss"]) and record["grad_norm"] == math.inf


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_get_the_umask_s_permissions(tmp_path, umask):
    """result.json and checkpoint.pt used to be 0600 (tempfile.mkstemp) while the rest was 0644."""
    old = os.umask(umask)
    try:
        train(tiny_mlp(steps=2), tmp_path / "run", progress=False)
        (tmp_path / "plain.txt").write_text("made by open()")  # what any new file gets
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert {"config.yaml", "metrics.jsonl", "result.json", "checkpoint.pt"} <= set(modes)
    assert modes == dict.fromkeys(modes, expected)


def test_checkpoint_loads_without_running_code(tmp_path):
    train(tiny_mlp(steps=2), tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and state["format"] == runfolder.FORMAT_VERSION


@pytest.mark.parametrize("content", [b"", b"garbage" * 20, "truncated"])
def test_unreadable_checkpoint_is_a_clear_error_and_stays_as_it_is(tmp_path, content):
    train(tiny_mlp(steps=2), tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    if content == "truncated":
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(RunFolderError, match="checkpoint.pt"):
        load_checkpoint(path)
    with pytest.raises(RunFolderError, match="checkpoint.pt"):
        train(tiny_mlp(steps=4), tmp_path / "run", resume=True, progress=False)
    assert path.read_bytes() == content


def test_corrupted_files_name_themselves(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(b"\x89PNG\x00\xff\xfe binary")
    with pytest.raises(RunFolderError, match=r"metrics.jsonl.*not UTF-8"):
        read_metrics(run)
    (run / "result.json").write_text("{not json")
    with pytest.raises(RunFolderError, match=r"result.json.*invalid JSON"):
        read_result(run)
    (run / "config.yaml").write_text("depth: [1, 2\n")
    with pytest.raises(ValueError, match=r"config.yaml.*not valid YAML"):
        runfolder.read_config(run)
