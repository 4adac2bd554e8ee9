"""The lab on Hugging Face models: ``resnorm train hf MODEL_TYPE`` and ``resnorm compare --model hf:TYPE``.

Tiny models (2 layers, width 32) on a tiny text file, a few steps each. The probes are checked against
the unpatched ``transformers`` model run by hand (hooks on its decoder layers, its own attention
probabilities, autograd's gradients); the patched and unpatched runs of one seed against each other.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

from resnorm.cli import main
from resnorm.lab import registry
from resnorm.lab.checkpoint import seed_everything
from resnorm.lab.config import ConfigError, config_for
from resnorm.lab.runfolder import read_metrics
from resnorm.lab.summary import loss_agreement
from resnorm.lab.tasks import TextTask
from resnorm.lab.trainer import config_from_run

pytest.importorskip("transformers")
rt = pytest.importorskip("resnorm.integrations.transformers")

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 12
TINY = ["n_layer=2", "d_model=32", "n_head=4", "block_size=16", "batch_size=4", "eval_batches=2",
        "probe_every=1", "log_every=1", "schedule=constant", "warmup_steps=0", "tensorboard=false"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def train(capsys, out, *args):
    code = main(["train", *args, "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def llama_runs(text_file, tmp_path_factory):
    """The same 3-step Llama run, patched by resnorm (the default) and unpatched (resnorm=false)."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, extra in (("patched", []), ("unpatched", ["resnorm=false"])):
        out = root / name
        assert main(["train", "hf", "llama", f"data={text_file}", *TINY, "steps=3", *extra, "--out", str(out),
                     "--no-progress"]) == 0
        runs[name] = out
    return runs


def assert_rel(actual, expected, rtol, what):
    actual, expected = torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    err = (actual - expected).abs().max().item()
    assert err <= rtol * expected.abs().max().item(), (what, actual.tolist(), expected.tolist())


def test_train_hf_llama_writes_its_report_and_probes_every_decoder_layer(llama_runs):
    out = llama_runs["patched"]
    for name in ("report.html", "result.json", "metrics.jsonl", "checkpoint.pt", "act_rms.png"):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["model"], saved["model_type"]) == ("hf", "llama")
    assert saved["resnorm"] is True and saved["fused"] is True  # resnorm by default
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 3
    probes = read_metrics(out, "probe")
    assert [p["step"] for p in probes] == [1, 2, 3]
    for p in probes:
        assert p["block_names"] == ["blocks.0", "blocks.1"]
        for key in ("grad_norm", "act_rms", "update_ratio", "attn_entropy"):
            assert len(p[key]) == 2 and all(math.isfinite(v) and v > 0 for v in p[key]), (key, p)
        # causal attention over 16 positions: entropy between 0 and the uniform one, mean ln(t)
        assert all(v <= math.log(16) for v in p["attn_entropy"])


def test_first_probe_equals_the_unpatched_model_measured_by_hand(llama_runs):
    """Step 1's probe (initial weights, first batch) against the transformers model itself: forward
    hooks on its decoder layers (tensors, not streams), its eager attention probabilities, and
    autograd's gradients of each layer's parameters."""
    out = llama_runs["patched"]
    config = config_from_run(out)
    task = TextTask(config, torch.device("cpu"))
    seed_everything(config.seed)  # what the trainer does before it builds the model
    model = rt.causal_lm_from_config("llama", vocab_size=task.data.vocab_size, n_layer=2, n_head=4,
                                     d_model=32, block_size=16, attn_implementation="eager").train()
    x, y = task.train_batch(0, 0, 1)
    acts = []
    for layer in model.model.layers:
        layer.register_forward_hook(lambda m, a, o: acts.append(o.detach().double().pow(2).mean().sqrt()))
    output = model(input_ids=x, output_attentions=True, use_cache=False)
    torch.nn.functional.cross_entropy(output.logits.flatten(0, 1), y.flatten()).backward()
    grad_norms = [torch.sqrt(sum(p.grad.double().pow(2).sum() for p in layer.parameters()))
                  for layer in model.model.layers]
    entropies = [float(-(a.detach().double() * a.detach().double().clamp_min(1e-300).log()).sum(-1).mean())
                 for a in output.attentions]

    probe = read_metrics(out, "probe")[0]
    assert_rel(probe["act_rms"], acts, 1e-5, "act_rms")
    assert_rel(probe["grad_norm"], grad_norms, 1e-5, "grad_norm")
    assert_rel(probe["attn_entropy"], entropies, 1e-5, "attn_entropy")


def test_with_and_without_resnorm_the_same_numbers(llama_runs):
    patched, unpatched = (read_metrics(llama_runs[k]) for k in ("patched", "unpatched"))
    losses = [[r["loss"] for r in m if r["kind"] == "train"] for m in (patched, unpatched)]
    assert len(losses[0]) == 3
    assert_rel(losses[0], losses[1], 1e-5, "training loss")
    for a, b in zip(*([r for r in m if r["kind"] == "probe"] for m in (patched, unpatched)), strict=True):
        assert_rel(a["grad_norm"], b["grad_norm"], 1e-5, "grad_norm")
        assert_rel(a["act_rms"], b["act_rms"], 1e-5, "act_rms")
    assert yaml.safe_load((llama_runs["unpatched"] / "config.yaml").read_text())["resnorm"] is False


@pytest.mark.parametrize(("resnorm", "fused", "norms", "fused_layers"),
                         [(True, True, True, True), (True, False, True, False), (False, True, False, False)])
def test_the_resnorm_switch_builds_what_it_says(text_file, resnorm, fused, norms, fused_layers):
    config = config_for("hf", model_type="llama", data=str(text_file), n_layer=2, d_model=32, block_size=16,
                        resnorm=resnorm, fused=fused)
    model = registry.get("hf").build(config, TextTask(config, torch.device("cpu")).data)
    assert any(isinstance(m, rt.ResnormRMSNorm) for m in model.modules()) is norms
    assert (type(model.blocks[0]).__module__ == rt.__name__) is fused_layers  # the fused layer subclass
    ids = torch.randint(0, 10, (2, 16))
    assert model(ids).shape == (2, 16, TextTask(config, torch.device("cpu")).data.vocab_size)
    hf_keys = [f"model.{k}" for k in model.model.state_dict()]
    assert list(model.state_dict()) == hf_keys  # the transformers names, each tensor once
    assert model.blocks is rt.decoder_layers(model.model)


def test_the_integrations_argument_names_are_aliases_of_the_keys():
    config = config_for("hf", model_type="llama", apply_resnorm=False, fuse_residual=False)
    assert (config.resnorm, config.fused) == (False, False)
    assert "apply_resnorm" not in config.to_dict()  # config.yaml keeps the keys themselves
    with pytest.raises(ConfigError, match="different values"):
        config_for("hf", resnorm=True, apply_resnorm=False)


def test_resume_continues_exactly(capsys, llama_runs, text_file, tmp_path):
    out = tmp_path / "run"
    code, _, err = train(capsys, out, "hf", "llama", f"data={text_file}", *TINY, "steps=2")
    assert code == 0, err
    code, _, err = train(capsys, out, "hf", "--resume", "steps=3")  # the type comes from config.yaml
    assert code == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["model_type"] == "llama"
    resumed = [r["loss"] for r in read_metrics(out, "train")]
    straight = [r["loss"] for r in read_metrics(llama_runs["patched"], "train")]
    assert resumed == straight
    code, _, err = train(capsys, out, "hf", "gpt2", "--resume", "steps=4")  # another type: refused
    assert code == 2 and "model_type" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model_type", ["gemma2", "gpt2"])
def test_other_families_train_with_probes(capsys, text_file, tmp_path, model_type):
    out = tmp_path / model_type
    code, stdout, err = train(capsys, out, "hf", model_type, f"data={text_file}", *TINY, "steps=2")
    assert code == 0, err
    assert "step time" in stdout and "peak mem" in stdout
    probes = read_metrics(out, "probe")
    assert len(probes) == 2
    result = json.loads((out / "result.json").read_text())  # every step probed: measured on step 2 anyway
    assert result["step_time_s"] > 0 and result["peak_memory_mib"] > 0
    for p in probes:
        for key in ("grad_norm", "act_rms", "attn_entropy"):
            assert len(p[key]) == 2 and all(math.isfinite(v) and v > 0 for v in p[key]), (key, p)


def one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnorm: error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_bad_model_types_and_settings_are_one_line_errors(capsys, text_file, tmp_path):
    out = tmp_path / "never"
    code, _, err = train(capsys, out, "hf", "lama", f"data={text_file}")
    one_line_error(code, err, "'lama'", "llama", "gpt2", "qwen3")
    code, _, err = train(capsys, out, "hf", f"data={text_file}")
    one_line_error(code, err, "MODEL_TYPE", "llama")
    code, _, err = train(capsys, out, "hf", "llama", "norm=rmsnorm")
    one_line_error(code, err, "norm", "resnorm=false")
    code, _, err = train(capsys, out, "hf", "gpt2", "n_kv_head=2")
    one_line_error(code, err, "n_kv_head")
    code, _, err = train(capsys, out, "gpt", "resnorm=false")
    one_line_error(code, err, "resnorm", "hf")
    assert not out.exists()
    bad = (("hf:", ["hf:TYPE", "llama"]), ("hf:lama", ["lama", "llama"]), ("gpt:x", ["gpt:x"]))
    for model, needles in bad:
        code = main(["compare", "--model", model, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and all(n in err for n in needles), err
    assert not out.exists()


def test_without_transformers_one_line_naming_the_extra(capsys, monkeypatch, text_file, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    monkeypatch.delitem(sys.modules, "resnorm.integrations.transformers")
    out = tmp_path / "never"
    code, _, err = train(capsys, out, "hf", "llama", f"data={text_file}")
    one_line_error(code, err, 'pip install "resnorm[transformers]"')
    code = main(["compare", "--model", "hf:llama", "--out", str(out)])
    one_line_error(code, capsys.readouterr().err, 'pip install "resnorm[transformers]"')
    assert not out.exists()


def test_compare_hf_llama_with_and_without_resnorm(capsys, text_file, tmp_path):
    out = tmp_path / "study"
    code = main(["compare", "--model", "hf:llama", "--steps", "4", "--depths", "1", "--workers", "1",
                 "--data", str(text_file), "--out", str(out), "--no-progress", "d_model=16", "n_head=2",
                 "block_size=8", "batch_size=2", "eval_batches=1", "probe_every=3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = (out / "summary.txt").read_text()
    assert summary.strip() in captured.out
    rows = {line.split()[0]: line.split() for line in summary.splitlines() if line.startswith("hf")}
    assert set(rows) == {"hf", "hf+resnorm"}
    header = summary.splitlines()[0]
    assert "step time" in header and "peak mem" in header and "train loss" in header
    assert rows["hf"][3] == rows["hf+resnorm"][3]  # the training losses, as printed
    assert "hf+resnorm vs hf: training losses equal within 1e-05" in summary
    study = json.loads((out / "study.json").read_text())
    assert (study["family"], study["model_type"]) == ("hf", "llama")
    assert study["designs"] == [{"name": "hf", "fields": {"resnorm": False}},
                                {"name": "hf+resnorm", "fields": {"resnorm": True, "fused": True}}]
    for run in ("hf-d1", "hf-resnorm-d1"):  # run folders: the design names as slugs
        result = json.loads((out / run / "result.json").read_text())
        assert result["step_time_s"] > 0 and result["peak_memory_mib"] > 0, result


def test_loss_agreement_says_when_losses_differ():
    from types import SimpleNamespace as Run

    def run(design, last):
        return Run(design=design, depth=2, train=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": last}])

    ref, same, off = run("hf", 1.0), run("hf+resnorm", 1.0 + 1e-7), run("hf+resnorm-unfused", 1.1)
    lines = loss_agreement([ref, same, off], 1e-5)
    assert "equal within 1e-05" in lines[0] and "1.0e-07" in lines[0]
    assert "DIFFERENT" in lines[1] and "1.0e-01" in lines[1]


def test_registry_lookups_import_no_transformers():
    code = ("import sys\nimport resnorm.lab\nfrom resnorm.lab import registry\n"
            "from resnorm.lab.config import config_for\nfrom resnorm.cli import build_parser\n"
            "build_parser()\nfamily = registry.get('hf')\n"
            "config_for('hf', model_type='gpt2')\nregistry.parse_study_model('hf:llama')\n"
            "assert family.model_types == tuple(sorted(family.model_types))\n"
            "assert 'transformers' not in sys.modules, 'transformers imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert registry.get("hf").model_types == rt.SUPPORTED_MODEL_TYPES
    assert registry.parse_study_model("hf")[1] == "llama"  # --model hf: the family's default type
    with pytest.raises(ConfigError, match="model_type"):
        config_for("hf", model_type="bert")
