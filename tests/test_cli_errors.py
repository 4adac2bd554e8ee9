"""Every command's error paths: one ``resnorm: error:`` line, exit status 2, nothing created or changed;
Ctrl-C and SIGTERM give 130 and 143; an internal error is not disguised as a usage error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from resnorm.cli import main
from resnorm.lab.config import config_for
from resnorm.lab.trainer import train

EXIT_STATUSES = {0, 2, 130, 143}
NOT_UTF8 = bytes([0xFF, 0xFE, 0xFA]) * 99
TINY = ["data=digits", "depth=2", "width=16", "batch_size=64", "eval_every=2", "log_every=1", "probe_every=2",
        "tensorboard=false", "device=cpu"]


def tiny_config(**fields):
    base = dict(data="digits", depth=2, width=16, batch_size=64, steps=4, eval_every=2, log_every=1,
                probe_every=2, checkpoint_every=0, tensorboard=False, device="cpu")
    return config_for("residual-mlp", **{**base, **fields})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("made") / "run"
    train(tiny_config(), out, progress=False)
    return out


def snapshot(path: Path) -> dict | None:
    """Every file under ``path`` with its bytes (None when ``path`` does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def unwritable_dir(tmp: Path) -> Path:
    """A folder in which this process cannot create anything (root ignores permission bits: /sys)."""
    if os.geteuid() == 0:
        if not Path("/sys").is_dir():
            pytest.skip("running as root without /sys: no unwritable folder to test with")
        return Path("/sys")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def copy_run(run: Path, tmp: Path, name: str = "copy") -> Path:
    target = tmp / name
    shutil.copytree(run, target)
    return target


MLP = ["train", "residual-mlp"]


def o(t: Path) -> list[str]:
    return ["--out", str(t / "o")]


def resume(run: Path) -> list[str]:
    return ["--out", str(run), "--resume"]


# case -> (builder(tmp, finished run) -> (argv, watched path), words the error line must contain). The
# builder makes the broken files; the watched path must be exactly as it was (or still absent) afterwards.
CASES = {
    # ---------------------------------------------------------------------------------- train
    "train unknown model":
        (lambda t, r: (["train", "nope", *o(t)], t / "o"), ["'nope'", "residual-mlp", "gpt"]),
    "train unknown key": (lambda t, r: ([*MLP, "foo=1", *o(t)], t / "o"), ["'foo'", "valid keys"]),
    "train bad value": (lambda t, r: ([*MLP, "lr=fast", *o(t)], t / "o"), ["lr", "fast"]),
    "train missing yaml": (lambda t, r: ([*MLP, "no.yaml", *o(t)], t / "o"), ["no.yaml", "not found"]),
    "train malformed yaml":
        (lambda t, r: ([*MLP, str(write(t / "bad.yaml", "depth: [2, 3\n")), *o(t)], t / "o"),
                             ["bad.yaml", "not valid YAML"]),
    "train binary yaml": (lambda t, r: ([*MLP, str(write(t / "bin.yaml", NOT_UTF8)), *o(t)], t / "o"),
                          ["bin.yaml", "UTF-8"]),
    "train yaml list": (lambda t, r: ([*MLP, str(write(t / "l.yaml", "- 1\n- 2\n")), *o(t)], t / "o"),
                        ["l.yaml", "mapping"]),
    "train yaml key twice":
        (lambda t, r: ([*MLP, str(write(t / "d.yaml", "depth: 2\ndepth: 3\n")), *o(t)], t / "o"),
         ["d.yaml", "depth", "twice"]),
    "train yaml key not a name": (lambda t, r: ([*MLP, str(write(t / "k.yaml", "1: 2\n")), *o(t)], t / "o"),
                                  ["k.yaml", "key 1"]),
    "train yaml model conflict":
        (lambda t, r: ([*MLP, str(write(t / "g.yaml", "model: gpt\n")), *o(t)], t / "o"),
                                  ["gpt", "MODEL"]),
    "train model= conflict": (lambda t, r: ([*MLP, "model=gpt", *o(t)], t / "o"), ["gpt", "residual-mlp"]),
    "train key twice": (lambda t, r: ([*MLP, "depth=2", "depth=3", *o(t)], t / "o"), ["depth", "twice"]),
    "train resume without out": (lambda t, r: (["train", "gpt", "--resume"], t / "o"), ["--resume", "--out"]),
    "train resume and overwrite": (lambda t, r: ([*MLP, *resume(r), "--overwrite"], r),
                                   ["--resume", "--overwrite"]),
    "train resume missing folder": (lambda t, r: ([*MLP, *resume(t / "o")], t / "o"),
                                    ["nothing to resume", "--resume"]),
    "train resume empty folder":
        (lambda t, r: ([*MLP, *resume(_mkdir(t / "e"))], t / "e"), ["nothing to resume"]),
    "train resume no checkpoint": (lambda t, r: ([*MLP, *resume(_no_ckpt(r, t))], t / "copy"),
                                   ["nothing to resume", "checkpoint.pt"]),
    "train resume empty checkpoint": (lambda t, r: ([*MLP, *resume(_ckpt(r, t, b""))], t / "copy"),
                                      ["checkpoint.pt", "empty"]),
    "train resume garbage checkpoint":
        (lambda t, r: ([*MLP, *resume(_ckpt(r, t, b"\x00junk" * 50))], t / "copy"),
                                        ["checkpoint.pt", "not a readable checkpoint"]),
    "train resume truncated checkpoint": (lambda t, r: ([*MLP, *resume(_ckpt(r, t, None))], t / "copy"),
                                          ["checkpoint.pt"]),
    "train resume changes the model": (lambda t, r: ([*MLP, *resume(copy_run(r, t)), "depth=9"], t / "copy"),
                                       ["depth", "2 -> 9"]),
    "train resume other model": (lambda t, r: (["train", "gpt", *resume(copy_run(r, t))], t / "copy"),
                                 ["residual-mlp", "gpt"]),
    "train resume malformed config": (lambda t, r: ([*MLP, *resume(_bad_config(r, t))], t / "copy"),
                                      ["config.yaml", "YAML"]),
    "train resume checkpoint of another model":
        (lambda t, r: ([*MLP, *resume(_ckpt_edit(r, t, model={}))], t / "copy"), ["checkpoint.pt", "fit"]),
    "train resume checkpoint without spikes":
        (lambda t, r: ([*MLP, *resume(_ckpt_edit(r, t, spikes=None))], t / "copy"),
         ["checkpoint.pt", "spikes"]),
    "train resume checkpoint with bad rng":
        (lambda t, r: ([*MLP, *resume(_ckpt_edit(r, t, rng=[])), "steps=6"], t / "copy"),
         ["checkpoint.pt", "rng"]),
    "train resume checkpoint with bad step":
        (lambda t, r: ([*MLP, *resume(_ckpt_edit(r, t, step="4")), "steps=6"], t / "copy"),
                                             ["checkpoint.pt", "step"]),
    "train resume bad optimizer state":
        (lambda t, r: ([*MLP, *resume(_ckpt_edit(r, t, optimizer={"state": {}, "param_groups": []})),
                        "steps=6"], t / "copy"), ["checkpoint.pt"]),
    "train resume metrics is a folder":
        (lambda t, r: ([*MLP, *resume(_metrics_dir(r, t)), "steps=6"], t / "copy"), ["metrics.jsonl"]),
    "train resume steps below the checkpoint":
        (lambda t, r: ([*MLP, *resume(copy_run(r, t)), "steps=2"], t / "copy"), ["steps=2", "step 4"]),
    "train resume epochs below the checkpoint":
        (lambda t, r: ([*MLP, *resume(copy_run(r, t)), "epochs=0.001"], t / "copy"),
         ["epochs=0.001", "step 4"]),
    "train hf TYPE and model_type= conflict":
        (lambda t, r: (["train", "hf", "llama", "model_type=gemma2", "steps=2", *o(t)], t / "o"),
         ["llama", "model_type=gemma2"]),
    "train out empty": (lambda t, r: ([*MLP, *TINY, "steps=2", "--out", ""], t / "runs"), ["--out", "empty"]),
    "train out is a file": (lambda t, r: ([*MLP, *TINY, "--out", str(write(t / "f", "x"))], t / "f"),
                            ["not a folder"]),
    "train out impossible": (lambda t, r: ([*MLP, *TINY, "--out", "/proc/resnorm-no/run"], NO_SUCH),
                             ["/proc/resnorm-no"]),
    "train out unwritable": (lambda t, r: ([*MLP, *TINY, "--out", str(unwritable_dir(t) / "resnorm-run")],
                                           unwritable_dir(t) / "resnorm-run"), ["resnorm-run"]),
    "train out not empty": (lambda t, r: ([*MLP, *TINY, "--out", str(copy_run(r, t))], t / "copy"),
                            ["not empty", "--resume", "--overwrite"]),
    "train data missing": (lambda t, r: ([*MLP, "data=no/such", *o(t)], t / "o"), ["no/such"]),
    "train data empty folder": (lambda t, r: ([*MLP, f"data={_mkdir(t / 'd')}", *o(t)], t / "o"),
                                ["IDX", "CIFAR-10"]),
    "train data garbage idx": (lambda t, r: ([*MLP, f"data={_garbage_idx(t)}", *o(t)], t / "o"),
                               ["train-images-idx3-ubyte"]),
    "train text not utf8":
        (lambda t, r: (["train", "gpt", "data=" + str(write(t / "c.txt", NOT_UTF8)), *o(t)],
                                          t / "o"), ["c.txt", "UTF-8"]),
    "train text too short":
        (lambda t, r: (["train", "gpt", "data=" + str(write(t / "s.txt", "abc" * 5)), *o(t)],
                                           t / "o"), ["block_size"]),
    "train batch larger than data": (lambda t, r: ([*MLP, "data=digits", "batch_size=5000", *o(t)], t / "o"),
                                     ["batch_size=5000"]),
    "train heads do not divide": (lambda t, r: (["train", "gpt", "d_model=30", "n_head=4", *o(t)], t / "o"),
                                  ["d_model=30", "n_head=4"]),
    # -------------------------------------------------------------------------------- compare
    "compare model= key": (lambda t, r: (["compare", "model=gpt", *o(t)], t / "o"), ["model", "--model"]),
    "compare depth= and --depths": (lambda t, r: (["compare", "depth=3", "--depths", "2", *o(t)], t / "o"),
                                    ["depth", "--depths"]),
    "compare n_layer= for gpt": (lambda t, r: (["compare", "--model", "gpt", "n_layer=3", *o(t)], t / "o"),
                                 ["n_layer", "--depths"]),
    "compare placement=":
        (lambda t, r: (["compare", "placement=post", *o(t)], t / "o"), ["placement", "--designs"]),
    "compare steps=": (lambda t, r: (["compare", "steps=5", *o(t)], t / "o"), ["--steps"]),
    "compare data empty folder": (lambda t, r: (["compare", "--data", str(_mkdir(t / "d")), *o(t)], t / "o"),
                                  ["IDX"]),
    "compare data garbage idx": (lambda t, r: (["compare", "--data", str(_garbage_idx(t)), *o(t)], t / "o"),
                                 ["train-images-idx3-ubyte"]),
    "compare batch larger than data":
        (lambda t, r: (["compare", "--data", "digits", "batch_size=9999", *o(t)],
                                                     t / "o"), ["batch_size=9999"]),
    "compare epochs=": (lambda t, r: (["compare", "epochs=1", *o(t)], t / "o"), ["epochs", "--steps"]),
    "compare data empty": (lambda t, r: (["compare", "--data", "", *o(t)], t / "o"), ["--data", "empty"]),
    "compare out is a file": (lambda t, r: (["compare", "--out", str(write(t / "f", "x"))], t / "f"),
                              ["not a folder"]),
    "compare out impossible":
        (lambda t, r: (["compare", "--designs", "plain", "--depths", "2", "--steps", "2",
                                              "--out", "/proc/resnorm-no/s"], NO_SUCH), ["/proc/resnorm-no"]),
    "compare out not empty": (lambda t, r: (["compare", "--out", str(copy_run(r, t))], t / "copy"),
                              ["--overwrite"]),
    "compare bad value": (lambda t, r: (["compare", "lr=abc", *o(t)], t / "o"), ["lr", "abc"]),
    "compare unknown key": (lambda t, r: (["compare", "nokey=1", *o(t)], t / "o"), ["'nokey'"]),
    "compare not key=value": (lambda t, r: (["compare", "oops", *o(t)], t / "o"), ["KEY=VALUE"]),
    "compare bad design": (lambda t, r: (["compare", "--designs", "plain,foo", *o(t)], t / "o"), ["'foo'"]),
    "compare bad depth":
        (lambda t, r: (["compare", "--model", "resnet-cifar", "--depths", "10", *o(t)], t / "o"),
                          ["6n+2"]),
    "compare into an unfinished study's folder":
        (lambda t, r: ([*CMP_TINY, "--out", str(_unfinished(t, '{"kind": "study", "study": "he2016"}'))],
                       t / "u"), ["--overwrite"]),
    # ---------------------------------------------------------------------------------- study
    "study unknown name": (lambda t, r: (["study", "he2017", *o(t)], t / "o"), ["he2017", "he2016"]),
    "study unknown setting": (lambda t, r: ([*DN, "colour=red", *o(t)], t / "o"), ["colour"]),
    "study bad setting value": (lambda t, r: ([*DN, "layers=x", *o(t)], t / "o"), ["layers"]),
    "study empty setting": (lambda t, r: (["study", "deepnet2022", "data=", *o(t)], t / "o"), ["data"]),
    "study not key=value": (lambda t, r: (["study", "deepnet2022", "steps", *o(t)], t / "o"), ["KEY=VALUE"]),
    "study key twice": (lambda t, r: (["study", "deepnet2022", "steps=2", "steps=3", *o(t)], t / "o"),
                        ["steps", "twice"]),
    "study seed= and seeds=": (lambda t, r: ([*DN, "seed=1", "seeds=2", *STUDY_TINY, *o(t)], t / "o"),
                               ["seed=1", "seeds=2"]),
    "study epochs=": (lambda t, r: ([*DN, "epochs=1", *STUDY_TINY, *o(t)], t / "o"), ["epochs", "steps="]),
    "study out empty": (lambda t, r: ([*DN, *STUDY_TINY, "--out", ""], t / "runs"), ["--out", "empty"]),
    "study a key it sets per run": (lambda t, r: (["study", "xiong2020", "lr=0.1", *o(t)], t / "o"),
                                    ["lr", "itself"]),
    "study bad recipe value": (lambda t, r: ([*DN, "dropout=2", *o(t)], t / "o"), ["dropout"]),
    "study wrong kind of data":
        (lambda t, r: (["study", "he2016", "data=stdlib", *o(t)], t / "o"), ["stdlib"]),
    "study data missing": (lambda t, r: (["study", "deepnet2022", "data=no/such.txt", *o(t)], t / "o"),
                           ["no/such.txt"]),
    "study text not utf8": (lambda t, r: ([*DN, "data=" + str(write(t / "c.txt", NOT_UTF8)), *STUDY_TINY,
                                           *o(t)], t / "o"), ["c.txt", "UTF-8"]),
    "study data empty folder": (lambda t, r: (["study", "he2016", f"data={_mkdir(t / 'd')}", *o(t)], t / "o"),
                                ["CIFAR-10"]),
    "study out is a file": (lambda t, r: ([*DN, *STUDY_TINY, "--out", str(write(t / "f", "x"))], t / "f"),
                            ["not a folder"]),
    "study out impossible": (lambda t, r: ([*DN, *STUDY_TINY, "--out", "/proc/resnorm-no/s"], NO_SUCH),
                             ["/proc/resnorm-no"]),
    "study out not empty": (lambda t, r: (["study", "deepnet2022", *STUDY_TINY, "--out", str(copy_run(r, t))],
                                          t / "copy"), ["not empty", "--overwrite"]),
    "study into an unfinished compare folder":
        (lambda t, r: (["study", "deepnet2022", *STUDY_TINY, "--out",
                        str(_unfinished(t, '{"kind": "compare", "runs": []}'))], t / "u"), ["--overwrite"]),
    "study into another unfinished study":
        (lambda t, r: (["study", "deepnet2022", *STUDY_TINY, "--out",
                        str(_unfinished(t, '{"kind": "study", "study": "he2016", "runs": []}'))], t / "u"),
         ["--overwrite"]),
    "study into a folder with a corrupted study.json":
        (lambda t, r: ([*DN, *STUDY_TINY, "--out", str(_unfinished(t, NOT_UTF8))], t / "u"),
         ["--overwrite"]),
    # --------------------------------------------------------------------------------- report
    "report missing": (lambda t, r: (["report", str(t / "none")], t / "none"), ["none"]),
    "report no runs": (lambda t, r: (["report", str(_mkdir(t / "e"))], t / "e"), ["neither a run folder"]),
    "report binary metrics": (lambda t, r: (["report", str(_put(r, t, "metrics.jsonl", b"\x89PNG\xff\x00"))],
                                            t / "copy" / "metrics.jsonl"), ["metrics.jsonl", "UTF-8"]),
    "report garbage metrics": (lambda t, r: (["report", str(_put(r, t, "metrics.jsonl", GARBAGE_METRICS))],
                                             t / "copy" / "metrics.jsonl"), ["metrics.jsonl:2"]),
    "report malformed config": (lambda t, r: (["report", str(_put(r, t, "config.yaml", b"a: [1\n"))],
                                              t / "copy" / "config.yaml"), ["config.yaml", "YAML"]),
    "report garbage result": (lambda t, r: (["report", str(_put(r, t, "result.json", b"{nope"))],
                                            t / "copy" / "result.json"), ["result.json"]),
    "report result of wrong types": (lambda t, r: (["report", str(_result_edit(r, t, final="x"))],
                                                   t / "copy" / "result.json"), ["result.json", "final"]),
    "report result grad_ratio not a number":
        (lambda t, r: (["report", str(_result_edit(r, t, grad_ratio="big"))], t / "copy" / "result.json"),
         ["result.json", "grad_ratio"]),
    "report metrics step not an integer":
        (lambda t, r: (["report", str(_put(r, t, "metrics.jsonl", b'{"kind": "train", "step": "a"}\n'
                                                                 b'{"kind": "train", "step": 2}\n'))],
                       t / "copy" / "metrics.jsonl"), ["metrics.jsonl:1", "step"]),
    "report probe values not numbers":
        (lambda t, r: (["report", str(_put(r, t, "metrics.jsonl", b'{"kind": "probe", "step": 1, '
                                                                 b'"grad_norm": "x"}\n'))],
                       t / "copy" / "metrics.jsonl"), ["metrics.jsonl:1", "grad_norm"]),
    "report config value of a wrong type":
        (lambda t, r: (["report", str(_put(r, t, "config.yaml", b"model: residual-mlp\ndepth: abc\n"))],
                       t / "copy" / "config.yaml"), ["config.yaml", "depth"]),
    "report a plot that is a folder":
        (lambda t, r: (["report", str(_plot_dir(r, t))], t / "copy" / "loss.png"), ["loss.png"]),
    "report study runs not a list":
        (lambda t, r: (["report", str(_study(r, t, '{"runs": 5}'))], t / "s" / "study.json"), ["study.json"]),
    "report study entry of wrong types":
        (lambda t, r: (["report", str(_study(r, t, '{"runs": [{"dir": "r", "depth": "x"}]}'))],
                       t / "s" / "study.json"), ["study.json", "run 0"]),
    "report study entry dir not a name":
        (lambda t, r: (["report", str(_study(r, t, '{"runs": [{"dir": 5}]}'))], t / "s" / "study.json"),
         ["study.json"]),
    "report garbage study":
        (lambda t, r: (["report", str(_study(r, t))], t / "s" / "study.json"), ["study.json"]),
    "report out impossible":
        (lambda t, r: (["report", str(copy_run(r, t)), "--out", "/proc/resnorm-no/r.html"],
                                            NO_SUCH), ["/proc/resnorm-no"]),
    "report out is a folder": (lambda t, r: (["report", str(copy_run(r, t)), "--out", str(_mkdir(t / "dir"))],
                                             t / "dir"), ["dir"]),
    # ---------------------------------------------------------------------------------- seeds
    "seeds unknown key": (lambda t, r: (["seeds", "foo=1", *o(t)], t / "o"), ["'foo'", "data"]),
    "seeds data missing": (lambda t, r: (["seeds", "data=no/such", "--only", "resnet", *o(t)], t / "o"),
                           ["no/such"]),
    "seeds out is a file": (lambda t, r: ([*SEED_MLP, "--out", str(write(t / "f", "x"))], t / "f"), ["f"]),
    "seeds out not empty": (lambda t, r: ([*SEED_MLP, "--out", str(_seed_folder(r, t))], t / "seeds"),
                            ["--overwrite"]),
    "seeds out impossible": (lambda t, r: ([*SEED_MLP, "--out", "/proc/resnorm-no/s"], NO_SUCH),
                             ["/proc/resnorm-no"]),
    # ---------------------------------------------------------------------------------- bench
    "bench without a GPU":
        (lambda t, r: (["bench", "--shapes", "4x4"], t / "o"), ["resnorm: error:", "CUDA"]),
}
NO_SUCH = Path("/proc/resnorm-no")
DN = ["study", "deepnet2022"]
STUDY_TINY = ["steps=2", "layers=2", "d_model=16", "eval_batches=1", "text_max_chars=20000", "--workers", "1",
              "--no-progress"]
CMP_TINY = ["compare", "--designs", "plain", "--depths", "2", "--steps", "2", "--data", "digits", "width=8",
            "--workers", "1", "--no-progress"]
SEED_MLP = ["seeds", "--only", "mlp", "--epochs", "0.01"]
GARBAGE_METRICS = b'{"kind": "x", "step": 1}\nnope\n{}\n'

# argparse's own usage errors: one line, "resnorm: error: ... (see 'resnorm CMD --help')" (exit status 2)
ARGPARSE_CASES = [
    [], ["frobnicate"], ["train"], ["compare", "--model", "lstm"], ["compare", "--workers", "0"],
    ["compare", "--steps", "-3"], ["seeds", "--only", "both"], ["seeds", "--epochs", "0"], ["report"],
    ["train", "residual-mlp", "--bogus"], ["bench", "--ops", "add_nothing"], ["bench", "--shapes", "4by4"],
    ["study"], ["study", "he2016", "--quick", "--full"], ["study", "he2016", "--workers", "0"],
    ["study", "he2016", "--bogus"],
]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _no_ckpt(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp)
    (target / "checkpoint.pt").unlink()
    return target


def _ckpt(run: Path, tmp: Path, content: bytes | None) -> Path:
    target = copy_run(run, tmp)
    path = target / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3] if content is None else content)
    return target


def _ckpt_edit(run: Path, tmp: Path, **entries) -> Path:
    """A copy of the run whose checkpoint loads but holds wrong entries (None: the entry is missing)."""
    import torch

    target = copy_run(run, tmp)
    state = torch.load(target / "checkpoint.pt", weights_only=True)
    for key, value in entries.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save(state, target / "checkpoint.pt")
    return target


def _metrics_dir(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp)
    (target / "metrics.jsonl").unlink()
    (target / "metrics.jsonl" / "x").mkdir(parents=True)
    return target


def _unfinished(tmp: Path, study_json: str | bytes) -> Path:
    """A folder another command left unfinished: its study.json, no summary.txt, a run folder and a file."""
    folder = _mkdir(tmp / "u")
    write(folder / "study.json", study_json)
    write(folder / "plain-d2" / "metrics.jsonl", '{"kind": "train", "step": 1, "loss": 1.0}\n')
    write(folder / "notes.txt", "mine")
    return folder


def _bad_config(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp)
    (target / "config.yaml").write_text("depth: [2\n")
    return target


def _put(run: Path, tmp: Path, name: str, content: bytes) -> Path:
    target = copy_run(run, tmp)
    (target / name).write_bytes(content)
    return target


def _study(run: Path, tmp: Path, text: str = '{"runs": [') -> Path:
    study = _mkdir(tmp / "s")
    shutil.copytree(run, study / "r")
    (study / "study.json").write_text(text)
    return study


def _result_edit(run: Path, tmp: Path, **fields) -> Path:
    target = copy_run(run, tmp)
    result = json.loads((target / "result.json").read_text())
    (target / "result.json").write_text(json.dumps({**result, **fields}))
    return target


def _plot_dir(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp)
    (target / "loss.png").unlink(missing_ok=True)
    (target / "loss.png" / "mine").mkdir(parents=True)
    return target


def _garbage_idx(tmp: Path) -> Path:
    folder = _mkdir(tmp / "idx")
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\x01\x02not an idx file")
    return folder


def _seed_folder(run: Path, tmp: Path) -> Path:
    shutil.copytree(run, tmp / "seeds" / "seed-mlp")
    return tmp / "seeds"


@pytest.mark.parametrize("case", list(CASES))
def test_error_paths_are_one_line_exit_2_and_touch_nothing(capsys, tmp_path, finished_run, case, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output folder (runs/...) would land here
    build, needles = CASES[case]
    argv, watched = build(tmp_path, finished_run)
    before = snapshot(watched)
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2, (case, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (case, err)
    assert lines[0].startswith("resnorm"), lines[0]
    assert "resume=True" not in lines[0] and "overwrite=True" not in lines[0]  # the CLI's own words
    for needle in needles:
        assert needle in lines[0], (case, needle, lines[0])
    assert snapshot(watched) == before, f"{case}: {watched} changed"


@pytest.mark.parametrize("argv", ARGPARSE_CASES, ids=" ".join)
def test_argparse_errors_are_exit_2_without_traceback(capsys, argv):
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnorm: error: ") and lines[0].endswith("--help')"), err


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["train", "--help"], ["compare", "--help"],
                                  ["study", "--help"],
                                  ["report", "--help"], ["seeds", "--help"], ["bench", "--help"]])
def test_help_and_version_exit_0(capsys, argv):
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    assert out


def test_version(capsys):
    from resnorm import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"resnorm {__version__}"


def test_a_failed_compare_leaves_nothing_that_blocks_the_retry(capsys, tmp_path):
    """A compare with a dataset in the wrong format used to leave study.json and empty run folders, and
    the corrected command was then refused as "not empty"."""
    out = tmp_path / "study"
    argv = ["compare", "--designs", "plain", "--depths", "2", "--steps", "2", "width=8", "--workers", "1",
            "--out", str(out), "--no-progress"]
    code = main([*argv, "--data", str(_mkdir(tmp_path / "empty"))])
    assert code == 2 and not out.exists()
    capsys.readouterr()
    assert main([*argv, "--data", "digits"]) == 0, capsys.readouterr().err
    assert (out / "summary.txt").is_file()


def test_an_unfinished_study_is_redone_without_overwrite(capsys, tmp_path, monkeypatch):
    """A study that failed half way (study.json, no summary.txt) does not block the retry either."""
    from resnorm.lab import trainer

    out = tmp_path / "study"
    argv = ["compare", "--designs", "plain,pre-norm", "--depths", "2", "--steps", "2", "width=8", "--data",
            "digits", "--workers", "1", "--out", str(out), "--no-progress"]
    real = trainer.train
    calls = []

    def fail_second(config, out_dir, **kwargs):
        calls.append(out_dir)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(out_dir))
        return real(config, out_dir, **kwargs)

    monkeypatch.setattr(trainer, "train", fail_second)
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (out / "study.json").is_file() and not (out / "summary.txt").exists()
    monkeypatch.setattr(trainer, "train", real)
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "summary.txt").is_file()
    assert main(argv) == 2  # a finished study is protected again
    assert "--overwrite" in capsys.readouterr().err


def test_a_train_that_fails_before_its_first_step_leaves_nothing(capsys, tmp_path, monkeypatch):
    from resnorm.lab import trainer

    out = tmp_path / "run"

    def broken_step(self):
        raise OSError(5, "Input/output error", str(out / "metrics.jsonl"))

    monkeypatch.setattr(trainer.Trainer, "step", broken_step)
    assert main(["train", "residual-mlp", *TINY, "steps=3", "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["train", "residual-mlp", *TINY, "steps=3", "--out", str(out), "--no-progress"]) == 0


def test_internal_errors_are_not_disguised_as_usage_errors(monkeypatch):
    """A ValueError/TypeError from inside resnorm is a bug: it propagates (with its traceback), it does not
    become a "resnorm: error:" line blaming the user's input."""
    from resnorm.lab import compare

    def buggy(*args, **kwargs):
        raise TypeError("plan_study() got multiple values for argument 'model'")

    monkeypatch.setattr(compare, "plan_study", buggy)
    with pytest.raises(TypeError, match="multiple values"):
        main(["compare", "--no-progress"])


# ----------------------------------------------------------------------------------------------
# resume means "continue this run"


def test_resume_continues_the_run_from_its_own_config(capsys, tmp_path):
    """The run was made with depth=2 and 6 steps: --resume alone keeps both (it used to rebuild the
    settings from the model's defaults: "depth: 2 -> 8", or train on to the default 1000 steps)."""
    out = tmp_path / "run"
    assert main(["train", "residual-mlp", *TINY, "steps=6", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert main(["train", "residual-mlp", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert snapshot(out) == before  # a finished run is left untouched
    assert main(["train", "residual-mlp", "--out", str(out), "--resume", "steps=9", "--no-progress"]) == 0
    capsys.readouterr()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["depth"], saved["width"], saved["steps"]) == (2, 16, 9)
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 9 and result["status"] == "completed"


# ----------------------------------------------------------------------------------------------
# signals, in a real process


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "resnorm", *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _wait_for_steps(path: Path, proc: subprocess.Popen, steps: int = 2, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()}")
        if path.is_file() and sum('"train"' in line for line in path.read_text().splitlines()) >= steps:
            return
        time.sleep(0.05)
    raise AssertionError("the run did not start in time")


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_train_exits_130_or_143_and_resumes(tmp_path, sig, status):
    out = tmp_path / "run"
    settings = [s for s in TINY if not s.startswith("eval_every")]
    proc = _start(["train", "residual-mlp", *settings, "steps=1000000", "eval_every=0", "--out", str(out),
                   "--no-progress"], tmp_path)
    try:
        _wait_for_steps(out / "metrics.jsonl", proc)
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    assert "Traceback" not in err and "--resume" in err
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "interrupted" and result["stop_signal"] == signal.Signals(sig).name
    assert (out / "checkpoint.pt").is_file()


def test_interrupted_compare_exits_130_without_traceback(tmp_path):
    out = tmp_path / "study"
    proc = _start(["compare", "--designs", "plain", "--depths", "2", "--data", "digits", "--steps", "1000000",
                   "--workers", "1", "--out", str(out), "--no-progress", "width=8"], tmp_path)
    try:
        _wait_for_steps(out / "plain-d2" / "metrics.jsonl", proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "resnorm: interrupted (SIGINT)"


def test_a_stopped_pool_starts_no_queued_run(tmp_path, monkeypatch):
    """A worker process takes runs that were queued before the study stopped; once the stop event is set
    it must not start them (it used to train one until it was killed, leaving a run with no checkpoint)."""
    import threading

    from resnorm.lab import compare

    plan = compare.plan_study("mlp", compare.parse_designs("plain"), [2], data="digits", steps=2,
                              out_dir=tmp_path / "s", overrides={"width": 8})
    stop = threading.Event()
    stop.set()
    monkeypatch.setattr(compare, "_STOP", stop)
    assert compare._train_and_plot(plan[0], False, 1)[1] == "not started"
    assert not plan[0].run_dir.exists()


def test_interrupted_study_exits_130_and_leaves_whole_runs(tmp_path):
    """Ctrl-C to a study training on two workers: exit 130, one line, every run folder left behind is a
    stopped run that can be resumed (checkpoint and result); the same study (only) may redo the folder."""
    from resnorm.lab import compare

    out = tmp_path / "study"
    settings = ["layers=2", "d_model=16", "eval_batches=1", "text_max_chars=20000", "--no-progress"]
    proc = _start(["study", "deepnet2022", "steps=1000000", *settings, "--workers", "2", "--out", str(out)],
                  tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not any(sum('"train"' in line for line in m.read_text().splitlines()) >= 2
                      for m in out.glob("*/metrics.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "resnorm: interrupted (SIGINT)"
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert runs
    for run in runs:
        assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.jsonl",
                                                         "result.json"], run
        assert json.loads((run / "result.json").read_text())["status"] == "interrupted"
    assert compare.unfinished_study(out, "study", "deepnet2022")  # the same study redoes it in place
    assert not compare.unfinished_study(out, "study", "he2016") and not compare.unfinished_study(out)


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_signal_while_the_run_saves_itself_does_not_cut_the_save(tmp_path, interrupted):
    """SIGTERM arriving while a run writes its last checkpoint and result.json (a scheduler's second
    signal, a compare worker told to stop) used to abort the save: the run was left with no checkpoint
    for its last steps and no result.json. The save completes; a completed run then stops the command."""
    from resnorm.lab import trainer as trainer_module
    from resnorm.lab.errors import StopRequested

    class Escaped(Exception):
        pass

    def outside_the_trainer(signum, frame):
        raise Escaped

    trainer = trainer_module.Trainer(tiny_config(steps=3), tmp_path / "run", progress=False,
                                     on_step=(lambda step: os.kill(os.getpid(), signal.SIGINT)) if interrupted
                                     else None)
    real_save = trainer.save

    def save_with_a_signal(reason, collective=True):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
        return real_save(reason, collective)

    trainer.save = save_with_a_signal
    previous = signal.signal(signal.SIGTERM, outside_the_trainer)
    try:
        if interrupted:
            result = trainer.fit()
            assert result.status == "interrupted" and result.stop_signal == "SIGINT"
        else:
            with pytest.raises(StopRequested):
                trainer.fit()
    finally:
        signal.signal(signal.SIGTERM, previous)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == ("interrupted" if interrupted else "completed")
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("command", ["compare", "study"])
def test_an_overwrite_stopped_half_way_is_an_unfinished_study(capsys, tmp_path, monkeypatch, command):
    """--overwrite on a finished study folder, stopped before its runs are done, used to leave the old
    summary.txt (and verdict.json): the folder looked finished while it held the new, partial runs."""
    from resnorm.lab import compare
    from resnorm.lab.errors import StopRequested

    out = _mkdir(tmp_path / "s")
    kind = {"kind": "compare"} if command == "compare" else {"kind": "study", "study": "deepnet2022"}
    (out / "study.json").write_text(json.dumps({**kind, "runs": []}))
    (out / "summary.txt").write_text("the old outcome")
    (out / "verdict.json").write_text("{}")

    def stopped(*args, **kwargs):
        raise StopRequested("SIGTERM")

    monkeypatch.setattr(compare, "train_plan", stopped)
    argv = CMP_TINY if command == "compare" else [*DN, *STUDY_TINY]
    assert main([*argv, "--out", str(out), "--overwrite"]) == 143
    assert not (out / "summary.txt").exists()
    assert command == "compare" or not (out / "verdict.json").exists()
    assert compare.unfinished_study(out, command, None if command == "compare" else "deepnet2022")


def _named_study(run: Path, tmp: Path, coords: dict) -> Path:
    """A default-compare study folder around a copy of the finished run (its own report.html kept)."""
    study = _mkdir(tmp / "named")
    shutil.copytree(run, study / "plain-d2-s0")
    write(study / "study.json", json.dumps({
        "kind": "study", "study": "default-compare", "title": "t", "budget": "quick",
        "settings": {"data": "digits", "steps": 4, "seeds": [0]}, "overrides": {},
        "runs": [{"dir": "plain-d2-s0", "design": "plain", "depth": 2, "coords": coords}]}))
    return study


def test_report_on_a_study_folder_keeps_its_claim_and_verdict(capsys, tmp_path, finished_run):
    """``resnorm report STUDY`` rebuilt a plain report over the study's own report.html: the claim, the
    verdict and the study's figures were gone."""
    study = _named_study(finished_run, tmp_path, {"design": "plain", "depth": 2, "seed": 0})
    assert main(["report", str(study)]) == 0, capsys.readouterr().err
    html = (study / "report.html").read_text()
    assert "Verdict" in html and "resnorm study default-compare" in html
    broken = _named_study(finished_run, tmp_path / "b", {"depth": 2})  # coordinates of another study
    before = snapshot(broken / "study.json")
    assert main(["report", str(broken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resnorm: error:") and "study.json" in err[0]
    assert snapshot(broken / "study.json") == before


@pytest.mark.parametrize(("exitcode", "status", "words"), [
    (-9, 2, ["worker", "SIGKILL", "memory"]), (-15, 143, ["interrupted (SIGTERM)"])])
def test_a_worker_that_dies_is_one_line(capsys, tmp_path, monkeypatch, exitcode, status, words):
    """A worker process killed from outside (the system out of memory: SIGKILL) used to end compare with
    a BrokenProcessPool traceback; one killed by SIGTERM is a stop (143)."""
    import concurrent.futures
    from concurrent.futures.process import BrokenProcessPool

    class Dead:
        exitcode = None

        def join(self, timeout=None):
            self.exitcode = exitcode

        def is_alive(self):
            return False

    class BrokenPool:
        def __init__(self, *args, **kwargs):
            self._processes = {1: Dead()}

        def submit(self, *args, **kwargs):
            future = concurrent.futures.Future()
            future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return future

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", BrokenPool)
    argv = [*CMP_TINY, "--designs", "plain,pre-norm", "--workers", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and all(w in err[0] for w in words), err


def test_study_measurements_are_strict_json(capsys, tmp_path, monkeypatch):
    """measurements.json used to hold bare NaN/Infinity (not JSON for most tools), like metrics.jsonl did."""
    import math

    from resnorm.lab import compare
    from resnorm.lab.errors import StopRequested
    from resnorm.lab.studies import deepnet2022
    from resnorm.lab.studies.runner import load_outcomes

    def stopped(*args, **kwargs):
        raise StopRequested("SIGINT")

    monkeypatch.setattr(deepnet2022.DeepNet2022, "measure",
                        lambda self, *args, **kwargs: {"grad": [1.0, math.nan], "peak": math.inf})
    monkeypatch.setattr(compare, "train_plan", stopped)
    out = tmp_path / "s"
    assert main([*DN, *STUDY_TINY, "--out", str(out)]) == 130

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    json.loads((out / "measurements.json").read_text(), parse_constant=refuse)
    _, measurements = load_outcomes(out)
    assert measurements["grad"][0] == 1.0 and math.isnan(measurements["grad"][1])
    assert measurements["peak"] == math.inf


def test_report_on_a_folder_whose_name_is_not_utf8(capsys, tmp_path, finished_run):
    """A folder name with bytes that are not UTF-8 (made outside Python) ended report with a matplotlib
    TypeError traceback: the run's name goes into plot titles and the HTML."""
    run = tmp_path / os.fsdecode(b"run-\xff")
    shutil.copytree(finished_run, run)
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    assert "run-\ufffd" in (run / "report.html").read_text(encoding="utf-8")


def test_ctrl_c_while_the_command_line_is_read_exits_130(capsys, monkeypatch):
    """Ctrl-C while the parser is built (it imports the lab's registry and studies) printed a
    KeyboardInterrupt traceback and exited -2."""
    import resnorm.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["train", "residual-mlp"]) == 130
    assert capsys.readouterr().err.strip() == "resnorm: interrupted (SIGINT)"


def test_resume_removes_what_a_killed_save_left(capsys, tmp_path, finished_run):
    """SIGKILL while checkpoint.pt was written leaves the atomic write's temporary file (as large as the
    checkpoint) beside it; resuming the run cleans it up, and other files stay."""
    run = copy_run(finished_run, tmp_path)
    write(run / ".checkpoint.pt.x1y2z3.tmp", b"half a checkpoint")
    write(run / ".mine.tmp", b"the user's")
    code = main([*MLP, "--out", str(run), "--resume", "steps=5", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert not (run / ".checkpoint.pt.x1y2z3.tmp").exists() and (run / ".mine.tmp").is_file()


def test_report_never_replaces_a_file_it_did_not_write(capsys, finished_run, tmp_path, monkeypatch):
    """``report A B`` writes ./report.html by default: a user's own report.html there (or any --out file
    that is not a resnorm report) is refused with one line and left as it was; a resnorm report is
    rebuilt in place."""
    monkeypatch.chdir(tmp_path)
    other = copy_run(finished_run, tmp_path, "other")
    mine = write(tmp_path / "report.html", "my own notes\n")
    notes = write(tmp_path / "notes.txt", "keep me\n")
    for argv in (["report", str(finished_run), str(other)],
                 ["report", str(finished_run), "--out", str(notes)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a resnorm report" in err[0], err
    assert mine.read_text() == "my own notes\n" and notes.read_text() == "keep me\n"
    mine.unlink()
    for _ in range(2):  # the second time over its own report
        assert main(["report", str(finished_run), str(other)]) == 0
        capsys.readouterr()
    assert "resnorm.lab.report" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("argv", [
    ["train", "residual-mlp", "data=digits", "steps=2", "depth=2", "--overwrite", "--no-progress"],
    [*CMP_TINY, "--overwrite"],
    ["study", "he2016", "steps=2", "--overwrite", "--no-progress"],
], ids=["train", "compare", "study"])
def test_overwrite_replaces_only_resnorms_own_folders(capsys, tmp_path, argv):
    """--overwrite clears a run's (or a study's) files: in a folder resnorm did not write (a project with
    its own config.yaml and report.html) it is refused with one line, and every file stays as it was."""
    project = tmp_path / "project"
    write(project / "config.yaml", "name: my project\n")
    write(project / "report.html", "my report\n")
    write(project / "tb" / "events", b"\x00\x01")
    before = snapshot(project)
    assert main([*argv, "--out", str(project)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite replaces only resnorm's own files" in err[0], err
    assert snapshot(project) == before


def test_overwrite_still_replaces_a_run(capsys, finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    assert main(["train", "residual-mlp", "data=digits", "steps=3", "depth=2", "width=8", "--overwrite",
                 "--no-progress", "--out", str(run)]) == 0
    assert json.loads((run / "result.json").read_text())["steps"] == 3
