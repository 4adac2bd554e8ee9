"""resnorm.lab.compare: the designs table, parsing, study plans per model, and the study's finding."""

from __future__ import annotations

import json
import re

import pytest
import torch

from resnorm import models
from resnorm.lab import compare
from resnorm.lab.errors import ConfigError
from resnorm.nn import NORMS, PLACEMENTS


def test_every_named_design_is_a_valid_placement_and_norm():
    for design in compare.DESIGNS.values():
        assert design.placement in PLACEMENTS and design.norm in NORMS, design


def test_the_brief_s_designs_map_as_specified():
    expected = {"plain": ("none", "none"), "plain-bn": ("none", "batchnorm"), "residual": ("pre", "none"),
                "post-norm": ("post", "layernorm"), "pre-norm": ("pre", "layernorm"),
                "rezero": ("rezero", "none")}
    for name, pair in expected.items():
        d = compare.DESIGNS[name]
        assert (d.placement, d.norm) == pair
    assert list(compare.DEFAULT_DESIGNS["mlp"]) == list(expected)


def test_module_docstring_table_matches_designs():
    from resnorm.lab import designs

    rows = re.findall(r"^(\S+)\s+(\S+)\s+(\S+)\s+x <-|^(\S+)\s+(\S+)\s+(\S+)\s+y = ", designs.__doc__, re.M)
    table = {(r[0] or r[3]): ((r[1] or r[4]), (r[2] or r[5])) for r in rows}
    assert table == {d.name: (d.placement, d.norm) for d in compare.DESIGNS.values()}


@pytest.mark.parametrize("name", list(compare.DESIGNS))
def test_every_named_design_builds_a_residual_mlp_that_runs(name):
    d = compare.DESIGNS[name]
    torch.manual_seed(0)
    model = models.residual_mlp(3, 8, 10, 4, norm=d.norm, placement=d.placement)
    assert len(model.blocks) == 3
    assert model(torch.randn(5, 10)).shape == (5, 4)


def test_parse_designs_names_and_pairs():
    got = compare.parse_designs("plain, pre-norm,post:rmsnorm,sandwich:dyt")
    assert [(d.name, d.placement, d.norm) for d in got] == [
        ("plain", "none", "none"), ("pre-norm", "pre", "layernorm"), ("post:rmsnorm", "post", "rmsnorm"),
        ("sandwich:dyt", "sandwich", "dyt")]
    # a pair that equals a named design takes the name
    assert compare.parse_designs("pre:layernorm")[0].name == "pre-norm"


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "empty"), ("bogus", "unknown design 'bogus'"), ("pre:bogus", "unknown norm 'bogus'"),
     ("bogus:none", "unknown placement 'bogus'"), ("plain,plain", "twice"),
     ("pre-norm,pre:layernorm", "twice")],
)
def test_parse_designs_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        compare.parse_designs(spec)


def test_parse_depths():
    assert compare.parse_depths("4, 16,48") == [4, 16, 48]
    assert compare.parse_depths("8,20", "resnet-cifar") == [8, 20]
    for bad, message in [("4,-1", "positive integers"), ("a", "positive integers"), ("", "empty"),
                         ("0", "positive integers"), ("4,4", "repeated")]:
        with pytest.raises(ValueError, match=message):
            compare.parse_depths(bad)
    with pytest.raises(ValueError, match="6n\\+2"):
        compare.parse_depths("8,12", "resnet-cifar")


def test_plan_for_the_mlp_follows_each_design():
    plan = compare.plan_study("mlp", compare.parse_designs("plain,rezero"), [3, 7], steps=24, seed=5,
                              out_dir="/tmp/x")
    assert [(p.design.name, p.depth, p.run_dir.name) for p in plan] == [
        ("plain", 3, "plain-d3"), ("plain", 7, "plain-d7"),
        ("rezero", 3, "rezero-d3"), ("rezero", 7, "rezero-d7")]
    for p in plan:
        c = p.config
        assert (c.model, c.depth, c.placement, c.norm) == ("residual-mlp", p.depth, p.design.placement,
                                                           p.design.norm)
        assert (c.steps, c.seed, c.data) == (24, 5, "mnist5k")
        assert c.probe_every == 2 and c.eval_every == 4  # 24 // 12 probes, 24 // 6 evaluations


def test_plan_for_gpt_and_resnet_cifar():
    gpt = compare.plan_study("gpt", compare.parse_designs("post-norm"), [2], steps=10)
    assert (gpt[0].config.model, gpt[0].config.n_layer, gpt[0].config.placement, gpt[0].config.norm,
            gpt[0].config.data) == ("gpt", 2, "post", "layernorm", "stdlib")
    res = compare.plan_study("resnet-cifar", compare.parse_designs("plain,post-bn"), [8], steps=10)
    assert [(p.config.residual, p.config.norm, p.config.depth) for p in res] == [
        (False, "none", 8), (True, "batchnorm", 8)]
    with pytest.raises(ValueError, match="resnet-cifar"):
        compare.plan_study("resnet-cifar", compare.parse_designs("rezero"), [8])
    with pytest.raises(ValueError, match="unknown --model"):
        compare.plan_study("lstm")


def test_overrides_reach_the_config_and_bad_ones_are_config_errors():
    plan = compare.plan_study("mlp", compare.parse_designs("plain"), [2], steps=5,
                              overrides={"width": "24", "lr": "3e-4"})
    assert (plan[0].config.width, plan[0].config.lr) == (24, 3e-4)
    with pytest.raises(ValueError, match="nokey"):
        compare.plan_study("mlp", overrides={"nokey": "1"})


def test_design_name_from_configs():
    mlp = {"model": "residual-mlp", "placement": "none", "norm": "batchnorm"}
    assert compare.design_name(mlp) == "plain-bn"
    assert compare.design_name({"model": "gpt", "placement": "post", "norm": "rmsnorm"}) == "post:rmsnorm"
    assert compare.design_name({"model": "resnet-cifar", "residual": False, "norm": "none"}) == "plain"
    assert compare.design_name({"model": "resnet-cifar", "residual": True, "norm": "batchnorm"}) == "post-bn"
    assert compare.design_name({"model": "resnet-cifar", "residual": True, "norm": "groupnorm"}) == \
        "residual:groupnorm"
    assert compare.design_name({"model": "seed-mlp"}) == "seed-mlp"


def test_check_data(tmp_path):
    compare.check_data("mlp", "digits")
    compare.check_data("gpt", "stdlib")
    text = tmp_path / "t.txt"
    text.write_text("hello")
    compare.check_data("gpt", str(text))
    with pytest.raises(ValueError, match="text data"):
        compare.check_data("gpt", "mnist5k")
    with pytest.raises(FileNotFoundError, match="unknown dataset 'nope'"):
        compare.check_data("mlp", "nope")


def test_plain_deep_net_gradients_vanish_where_pre_norm_s_do_not(tmp_path):
    """The study's finding on a small scale: at depth 24 the plain net's first block gets a gradient many
    decades below its last block's, and it does not learn; pre-norm's stay within one decade and it learns."""
    result = compare.run_compare("mlp", compare.parse_designs("plain,pre-norm"), [24], steps=40,
                                 out_dir=tmp_path / "s", progress=False, workers=1,
                                 overrides={"width": "32", "batch_size": "64"})
    rows = {r["design"]: r for r in result.rows}
    assert rows["plain"]["grad_ratio"] < 1e-6
    assert 0.1 < rows["pre-norm"]["grad_ratio"] < 10.0
    assert rows["plain"]["verdict"] == "did not train"
    assert rows["pre-norm"]["verdict"] == "trained"
    assert rows["pre-norm"]["val_acc"] > rows["plain"]["val_acc"] + 0.3
    assert (tmp_path / "s" / "report.html").is_file()


def test_the_recipe_is_printed_before_the_study_and_saved(tmp_path):
    lines = []
    compare.run_compare("mlp", compare.parse_designs("plain"), [2], data="digits", steps=3, workers=1,
                        out_dir=tmp_path / "s", progress=False, echo=lines.append,
                        overrides={"width": "8"})
    text = "\n".join(lines)
    assert "residual blocks" in text and "AdamW lr 0.002" in text and "constant schedule" in text
    assert "no grad clip" in text and "batch 128" in text and "width 8" in text
    study = json.loads((tmp_path / "s" / "study.json").read_text())
    assert study["recipe"] in text and study["depth_means"] == "residual blocks"
    gpt = compare.recipe_lines(compare.plan_study("gpt", steps=10), "gpt")
    assert any("grad clip 1" in line for line in gpt)  # compare's GPT clips at 1.0, and says so
    cifar = compare.plan_study("resnet-cifar", steps=10)
    assert all(item.config.augment for item in cifar)  # crop; flips only on mirror-symmetric data


def test_the_printed_recipe_names_the_gpt_init_and_says_digits_are_not_flipped(tmp_path):
    """The recipe line says what the runs get: the GPT's init (gpt2 unless init= is given) and, for image
    data, whether horizontal flips are applied (never on digits, only on CIFAR-10)."""
    from resnorm.lab.config import config_for, recipe_summary

    gpt = compare.recipe_lines(compare.plan_study("gpt", steps=10, overrides={"init": "xavier"}), "gpt")
    assert any("init xavier" in line for line in gpt)
    assert "init gpt2" in recipe_summary(config_for("gpt"))
    assert "init" not in recipe_summary(config_for("residual-mlp"))  # the MLP has no init setting
    cifar = compare.recipe_lines(compare.plan_study("resnet-cifar", steps=10), "resnet-cifar")
    line = next(line for line in cifar if "recipe:" in line)
    assert "mnist5k" in line and "no flips" in line and "flip on" not in line
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    assert "horizontal flips on CIFAR-10" in recipe_summary(config_for("resnet-cifar", data=str(folder)))
    assert "no augmentation" in recipe_summary(config_for("resnet-cifar", augment=False))


@pytest.mark.parametrize(("key", "option"), [("model", "--model"), ("depth", "--depths"),
                                             ("placement", "--designs"), ("norm", "--designs"),
                                             ("steps", "--steps"), ("seed", "--seed"), ("data", "--data")])
def test_settings_the_study_sets_itself_are_conflicts(key, option):
    value = {"model": "gpt", "depth": "3", "placement": "post", "norm": "rmsnorm", "steps": "5", "seed": "1",
             "data": "digits"}[key]
    with pytest.raises(ConfigError, match=f"{key}=.*{option}"):
        compare.plan_study("mlp", overrides={key: value})
    with pytest.raises(ConfigError, match="residual.*--designs"):
        compare.plan_study("resnet-cifar", overrides={"residual": "false"})
