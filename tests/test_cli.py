"""The resnorm command: --help everywhere, one-line errors with exit status 2, tiny end-to-end runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from resnorm.cli import main
from resnorm.lab.report import STUDY_PLOTS

COMMANDS = ["compare", "train", "report", "seeds", "bench"]
TINY_MLP = ["width=16", "batch_size=32", "eval_every=5", "probe_every=5", "log_every=1"]


def run_cli(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("resnorm: error:") or "error:" in lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_for_every_command(capsys, command):
    argv = [command, "--help"] if command else ["--help"]
    code, out, _ = run_cli(capsys, argv)
    assert code == 0
    assert out.startswith(f"usage: resnorm {command}".rstrip())


def test_compare_help_lists_the_designs_table(capsys):
    from resnorm.lab.compare import DESIGNS

    _, out, _ = run_cli(capsys, ["compare", "--help"])
    for design in DESIGNS.values():
        assert f"{design.name:<11} {design.placement:<10} {design.norm:<9}" in out


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, [])
    assert code == 2 and err.splitlines() == ["resnorm: error: the following arguments are required: COMMAND "
                                              "(see 'resnorm --help')"]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["train", "nope"], ["'nope'", "residual-mlp", "seed-resnet", "gpt"]),
        (["train", "residual-mlp", "foo=1"], ["'foo'", "valid keys", "depth"]),
        (["train", "residual-mlp", "lr=abc"], ["lr", "abc"]),
        (["train", "residual-mlp", "norm=bogus"], ["bogus", "layernorm", "rmsnorm"]),
        (["train", "residual-mlp", "placement=sideways"], ["sideways", "rezero"]),
        (["train", "residual-mlp", "depth=0"], ["depth"]),
        (["train", "residual-mlp", "missing.yaml"], ["missing.yaml", "not found"]),
        (["train", "gpt", "--resume"], ["--resume", "--out"]),
        (["compare", "--designs", "plain,foo"], ["'foo'", "pre-norm", "placement:norm"]),
        (["compare", "--designs", "pre:nonorm"], ["nonorm", "layernorm"]),
        (["compare", "--designs", "upside:none"], ["upside", "sandwich"]),
        (["compare", "--designs", "plain,plain"], ["twice"]),
        (["compare", "--data", "no-such-dataset"], ["no-such-dataset", "mnist5k", "digits"]),
        (["compare", "--model", "gpt", "--data", "mnist5k"], ["mnist5k", "text", "stdlib"]),
        (["compare", "--depths", "4,x"], ["--depths", "'x'"]),
        (["compare", "--model", "resnet-cifar", "--depths", "10"], ["6n+2", "10"]),
        (["compare", "--model", "resnet-cifar", "--designs", "rezero"], ["rezero", "resnet-cifar"]),
        (["compare", "lr=abc"], ["lr", "abc"]),
        (["compare", "nokey=1"], ["'nokey'", "valid keys"]),
        (["compare", "notkeyvalue"], ["KEY=VALUE", "notkeyvalue"]),
        (["seeds", "foo=1"], ["'foo'", "data"]),
        (["report", "definitely/missing/run"], ["definitely/missing/run"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needles):
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, *needles)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["compare", "--model", "transformer"], ["invalid choice", "mlp", "resnet-cifar", "gpt"]),
        (["compare", "--steps", "0"], ["--steps", "positive integer"]),
        (["seeds", "--epochs", "-1"], ["--epochs", "positive"]),
        (["report"], ["RUN_DIR"]),
        (["frobnicate"], ["invalid choice", "compare"]),
    ],
)
def test_argparse_errors_exit_2(capsys, argv, needles):
    code, _, err = run_cli(capsys, argv)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("resnorm") and "error:" in last
    for needle in needles:
        assert needle in last


@pytest.mark.parametrize(("model", "data", "needles"), [
    ("residual-mlp", "no-such-data", ["no-such-data", "mnist5k", "digits"]),
    ("gpt", "mnist5k", ["mnist5k", "stdlib"]),
    ("gpt", "missing/corpus.txt", ["missing/corpus.txt"]),
])
def test_train_unknown_dataset(capsys, tmp_path, model, data, needles):
    code, _, err = run_cli(capsys, ["train", model, f"data={data}", "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, *needles)


def test_train_yaml_errors_name_the_key(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("depth: 4\nwidht: 32\n")
    code, _, err = run_cli(capsys, ["train", "residual-mlp", str(bad), "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, "'widht'", "width")
    two = ["train", "residual-mlp", str(bad), str(bad)]
    code, _, err = run_cli(capsys, two)
    assert_one_line_error(code, err, "at most one CONFIG.yaml")
    assert not (tmp_path / "r").exists()


def test_report_on_a_folder_without_runs(capsys, tmp_path):
    code, _, err = run_cli(capsys, ["report", str(tmp_path)])
    assert_one_line_error(code, err, str(tmp_path), "neither a run folder")


def test_compare_refuses_an_existing_out_folder(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    code, _, err = run_cli(capsys, ["compare", "--out", str(tmp_path), "--no-progress"])
    assert_one_line_error(code, err, str(tmp_path), "--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_bench_help_describes_every_option(capsys):
    from resnorm.lab import bench

    code, out, _ = run_cli(capsys, ["bench", "--help"])
    assert code == 0 and out.startswith("usage: resnorm bench")
    for action in bench.build_parser()._actions:
        assert action.help, action.option_strings  # every option says what it does
        assert action.option_strings[-1] in out


def test_bench_bad_option_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, ["bench", "--ops", "add_nothing"])
    assert code == 2 and "Traceback" not in err and "--ops" in err.strip().splitlines()[-1]


def test_bench_forwards_its_arguments(capsys, monkeypatch):
    from resnorm.lab import bench

    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 3)
    assert main(["bench", "--sizes", "1024", "--dtype", "bf16"]) == 3
    assert main(["bench", "--", "--help"]) == 3
    assert main(["bench", "-h"]) == 3
    assert seen == [["--sizes", "1024", "--dtype", "bf16"], ["--help"], ["-h"]]


def test_python_dash_m_resnorm_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "resnorm", "train", "nope"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("resnorm: error: unknown model 'nope'")
    assert proc.stdout == ""


# ----------------------------------------------------------------------------------------------
# end to end (tiny)


def test_train_writes_plots_and_report_and_never_overwrites(capsys, tmp_path):
    out = tmp_path / "run"
    config = tmp_path / "mlp.yaml"
    config.write_text("depth: 3\nplacement: post\nnorm: rmsnorm\nwidth: 8\n")
    argv = ["train", "residual-mlp", str(config), "steps=6", *TINY_MLP, "--out", str(out), "--no-progress"]
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    # the YAML's values, then KEY=VALUE (width=16 in TINY_MLP wins over the file's 8)
    assert (saved["depth"], saved["placement"], saved["norm"], saved["width"], saved["steps"]) == (
        3, "post", "rmsnorm", 16, 6)
    assert {"config.yaml", "metrics.jsonl", "report.html", "loss.png", "grad_norm.png", "act_rms.png"} <= {
        p.name for p in out.iterdir()}
    assert "report:" in stdout
    # the recipe the run used (the family's defaults under the file and KEY=VALUE) is printed with it
    assert "recipe: Adam lr 0.001" in stdout and "6 steps" in stdout and "width 16" in stdout
    before = (out / "metrics.jsonl").read_bytes()
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, str(out))
    assert (out / "metrics.jsonl").read_bytes() == before
    code, _, err = run_cli(capsys, [*argv, "--overwrite"])
    assert code == 0, err
    # --resume continues from the checkpoint to the new step count
    code, _, err = run_cli(capsys, [*argv[:3], "steps=9", *argv[4:], "--resume"])
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 10))
    assert any(r["kind"] == "event" and r["event"] == "resumed" for r in records)


def test_compare_end_to_end_then_report(capsys, tmp_path):
    out = tmp_path / "study"
    argv = ["compare", "--designs", "plain,pre-norm", "--depths", "2,5", "--steps", "12", "--out", str(out),
            "--seed", "3", "--no-progress", *TINY_MLP]
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0, err
    assert stdout.index("recipe: AdamW lr 0.002") < stdout.index("design  ")  # printed before the table
    study = json.loads((out / "study.json").read_text())
    assert [(r["design"], r["depth"]) for r in study["runs"]] == [
        ("plain", 2), ("plain", 5), ("pre-norm", 2), ("pre-norm", 5)]
    table = stdout.split("\nreport:")[0].split("\n\n")[0].splitlines()
    table = table[table.index(next(line for line in table if line.startswith("design"))):]
    assert [line.split()[:2] for line in table[2:]] == [["plain", "2"], ["plain", "5"], ["pre-norm", "2"],
                                                        ["pre-norm", "5"]]
    for run in study["runs"]:
        run_dir = out / run["dir"]
        config = (run_dir / "config.yaml").read_text()
        assert f"depth: {run['depth']}" in config and "steps: 12" in config and "seed: 3" in config
        assert (run_dir / "grad_norm.png").stat().st_size > 5000
        probes = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                  if '"probe"' in line]
        assert probes and all(len(p["grad_norm"]) == run["depth"] for p in probes)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 * 3 + len(STUDY_PLOTS)
    # rebuilt from the folders alone
    (out / "report.html").unlink()
    code, stdout, err = run_cli(capsys, ["report", str(out)])
    assert code == 0, err
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 4 * 3 + len(STUDY_PLOTS)
    # the study folder is never overwritten without --overwrite
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, str(out), "--overwrite")


def test_seeds_trains_both_systems_with_the_seed_recipe(capsys, tmp_path):
    out = tmp_path / "seeds"
    code, stdout, err = run_cli(capsys, ["seeds", "--epochs", "0.05", "--resnet-epochs", "0.03", "--out",
                                         str(out), "--no-progress"])
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.startswith("seed-")}
    assert set(rows) == {"seed-mlp", "seed-resnet"}
    assert all(row[3] == "completed" for row in rows.values())
    for name, model in (("seed-mlp", "seed-mlp"), ("seed-resnet", "seed-resnet")):
        saved = yaml.safe_load((out / name / "config.yaml").read_text())
        assert (saved["model"], saved["optimizer"], saved["lr"], saved["batch_size"], saved["data"]) == (
            model, "adam", 1e-3, 32, "mnist5k")
        # evaluation once per epoch: mnist5k's 5,000 digits less the 10% validation split, batches of 32
        assert saved["eval_every"] == (5000 - 500) // 32
        assert (out / name / "report.html").is_file()
    code, _, err = run_cli(capsys, ["seeds", "--only", "mlp", "--epochs", "0.05", "--out", str(out)])
    assert_one_line_error(code, err, str(out / "seed-mlp"))


def test_train_probes_by_default(capsys, tmp_path):
    """Every documented train example used to write blank grad_norm.png / act_rms.png (probe_every=0)."""
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, ["train", "residual-mlp", "data=digits", "depth=2", "width=8",
                                         "steps=10", "eval_every=5", "tensorboard=false", "--out", str(out),
                                         "--no-progress"])
    assert code == 0, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    probes = [json.loads(line) for line in lines if '"probe"' in line]
    assert [p["step"] for p in probes] == [1, 10]
    header = stdout.splitlines()[0].split()
    assert header[:4] == ["design", "depth", "result", "train"] and "verdict" not in header
