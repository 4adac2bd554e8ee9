"""Named reproductions (``resnorm study``): settings, plans, the verdict logic of every study on
synthetic outcomes, the init-gradient statistic, one tiny end-to-end study, and the CLI's errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from resnorm.cli import main
from resnorm.lab.errors import ConfigError
from resnorm.lab.studies import get, names, run_study
from resnorm.lab.studies.base import OUTCOMES, Check, Param, RunOutcome, Verdict, final_loss, format_table


def outcome(
    key: str, verdict: str = "trained", loss: float = 1.0, baseline: float = 3.0, **coords
) -> RunOutcome:
    return RunOutcome(
        key=key,
        coords=coords,
        status="diverged" if verdict == "diverged" else "completed",
        verdict=verdict,
        final_loss=loss,
        val_loss=loss,
        baseline=baseline,
        steps=10,
    )


# ------------------------------------------------------------------------------------------ basics


def test_every_study_is_listed_and_has_quick_and_full_budgets():
    assert set(names()) == {"he2016", "xiong2020", "deepnet2022", "mhc2026", "default-compare"}
    for name in names():
        study = get(name)
        assert study.name == name and study.claim and study.published and study.paper
        assert set(study.budgets) == {"quick", "full"}
        declared = {p.name for p in study.params}
        assert {"data", "steps"} <= declared
        for budget in study.budgets.values():
            assert set(budget) == declared  # every parameter has a value in every budget


def test_unknown_study_is_a_config_error():
    with pytest.raises(ConfigError, match="valid studies: he2016"):
        get("he2017")


def test_param_parsing():
    assert Param("seeds", "ints", "").parse("0, 1,2") == (0, 1, 2)
    assert Param("lrs", "floats", "").parse("1e-3,3e-3") == (1e-3, 3e-3)
    assert Param("steps", "int", "").parse("600") == 600
    for kind, text in (
        ("ints", "a"),
        ("ints", "-1"),
        ("int", "1,2"),
        ("floats", "0"),
        ("floats", "nan"),
        ("ints", "1,1"),
        ("ints", ""),
        ("str", ""),
    ):
        with pytest.raises(ConfigError):
            Param("x", kind, "").parse(text)


def test_settings_route_study_params_and_recipe_overrides():
    study = get("xiong2020")
    values, overrides = study.settings("quick", {"seed": "3", "lrs": "1e-3", "d_model": "32", "steps": "7"})
    assert values["seeds"] == (3,) and values["lrs"] == (1e-3,) and values["steps"] == 7
    assert values["warmups"] == study.budgets["quick"]["warmups"]
    assert overrides == {"d_model": "32"}
    with pytest.raises(ConfigError, match="sets placement itself"):
        study.settings("quick", {"placement": "pre"})
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        study.settings("quick", {"colour": "red"})
    with pytest.raises(ConfigError, match="budget"):
        study.settings("medium")


def test_final_loss_is_the_mean_of_the_last_tenth():
    curve = [(i + 1, float(i)) for i in range(20)]
    assert final_loss(curve) == pytest.approx((18 + 19) / 2)
    assert final_loss([(1, 4.0)]) == 4.0
    assert final_loss([]) is None
    assert math.isnan(final_loss([(1, 1.0), (2, float("nan"))]))


def test_verdict_outcome_over_checks():
    def v(*flags):
        return Verdict([Check(f"c{i}", "p", "m", f) for i, f in enumerate(flags)]).outcome

    assert v(True, True) == "reproduced"
    assert v(True, False) == "partly reproduced"
    assert v(False, False) == "not reproduced"
    assert v(True, None) == "reproduced"  # a part that could not be judged does not count
    assert v(None) == "not judged"
    assert set(OUTCOMES) >= {v(True), v(False), v(True, False), v(None)}
    line = Verdict([Check("a", "pub", "meas", True)]).line("s")
    assert line.startswith("s: reproduced — ") and "meas" in line and "pub" in line


def test_format_table_pads_columns():
    text = format_table(["a", "bb"], [["xxx", "y"]])
    assert text.splitlines() == ["a    bb", "---  --", "xxx  y"]


# ------------------------------------------------------------------------------------------ plans


def test_he2016_plan_is_the_papers_recipe_scaled_to_the_batch():
    study = get("he2016")
    plan = study.plan(*study.settings("quick"))
    assert sorted((s.coords["net"], s.depth) for s in plan) == [
        ("plain", 20),
        ("plain", 56),
        ("residual", 20),
        ("residual", 56),
    ]
    for spec in plan:
        c = spec.config
        assert (c.model, c.optimizer, c.momentum, c.weight_decay, c.schedule) == (
            "resnet-cifar",
            "sgd",
            0.9,
            1e-4,
            "step",
        )
        assert c.lr == pytest.approx(0.1 * c.batch_size / 128)
        assert c.residual == (spec.coords["net"] == "residual") and c.depth == spec.depth
        assert not c.augment and c.data == "mnist5k" and c.steps == 600
    full = study.plan(*study.settings("full"))
    assert len(full) == 12 and {s.coords["seed"] for s in full} == {0, 1, 2}
    cifar = study.plan(*study.settings("quick", {"data": "/data/cifar-10-batches-py"}))
    assert all(s.config.augment for s in cifar)  # He et al.'s flip + crop on CIFAR-10


def test_xiong2020_plan_is_the_grid_with_the_papers_setup():
    study = get("xiong2020")
    plan = study.plan(*study.settings("quick"))
    assert len(plan) == 2 * 2 * 2
    coords = {(s.coords["placement"], s.coords["lr"], s.coords["warmup"]) for s in plan}
    assert coords == {(p, lr, w) for p in ("post", "pre") for lr in (1e-3, 3e-3) for w in (0, 100)}
    for spec in plan:
        c = spec.config
        assert (c.init, c.grad_clip, c.beta2, c.weight_decay, c.schedule, c.n_layer) == (
            "xavier",
            0.0,
            0.98,
            0.0,
            "constant",
            6,
        )
        assert c.placement == spec.coords["placement"] and c.lr == spec.coords["lr"]
        assert c.warmup_steps == spec.coords["warmup"]


def test_deepnet2022_plan_uses_the_papers_inits_and_depth():
    study = get("deepnet2022")
    plan = study.plan(*study.settings("quick", {"d_model": "32"}))
    assert {(s.config.placement, s.config.init) for s in plan} == {
        ("post", "xavier"),
        ("deepnorm", "deepnet"),
        ("pre", "xavier"),
    }
    assert all(s.config.n_layer == 24 and s.config.d_model == 32 and s.config.grad_clip == 0 for s in plan)
    full = study.plan(*study.settings("full"))
    assert all(s.config.n_layer >= 50 for s in full)  # 100+ residual sublayers
    assert {s.config.init for s in full if s.coords["seed"] == 0} == {"xavier", "deepnet", "gpt2"}


def test_mhc2026_and_default_compare_plans():
    study = get("mhc2026")
    plan = study.plan(*study.settings("quick"))
    assert {(s.config.placement, s.config.n_layer) for s in plan} == {
        (p, d) for p in ("hyper", "mhc", "pre") for d in (6, 12)
    }
    assert all(s.config.probe_every <= s.config.steps // 5 for s in plan)  # gains read during training
    study = get("default-compare")
    plan = study.plan(*study.settings("quick"))
    assert len(plan) == 6 * 3 * 3 and {s.coords["seed"] for s in plan} == {0, 1, 2}
    assert len({s.key for s in plan}) == len(plan)


# ------------------------------------------------------------------------------------------ verdicts


def he_outcomes(losses: dict, seeds=(0,)) -> list[RunOutcome]:
    return [
        outcome(f"{net}-{depth}-{s}", loss=losses[(net, depth)][i], net=net, depth=depth, seed=s)
        for i, s in enumerate(seeds)
        for (net, depth) in losses
    ]


def test_he2016_verdicts():
    study = get("he2016")
    good = {
        ("plain", 20): [0.09],
        ("plain", 56): [0.96],
        ("residual", 20): [0.066],
        ("residual", 56): [0.057],
    }
    assert study.judge(he_outcomes(good), {}).outcome == "reproduced"
    tie_lost = {**good, ("residual", 56): [0.07]}
    verdict = study.judge(he_outcomes(tie_lost), {})
    assert verdict.outcome == "partly reproduced"
    assert [c.holds for c in verdict.checks] == [True, False] and verdict.checks[1].reason
    none = {("plain", 20): [0.9], ("plain", 56): [0.5], ("residual", 20): [0.1], ("residual", 56): [0.2]}
    assert study.judge(he_outcomes(none), {}).outcome == "not reproduced"
    # over seeds: one seed against is enough to not hold, and the measured text says how many
    seeds = {
        ("plain", 20): [0.1, 0.1, 0.1],
        ("plain", 56): [1.0, 1.0, 1.0],
        ("residual", 20): [0.06, 0.05, 0.05],
        ("residual", 56): [0.05, 0.04, 0.06],
    }
    verdict = study.judge(he_outcomes(seeds, (0, 1, 2)), {})
    assert verdict.checks[1].holds is False and "2 of 3 seeds" in verdict.checks[1].measured


def xiong_outcomes(trained: dict) -> list[RunOutcome]:
    return [
        outcome(
            f"{p}-{lr}-{w}",
            "trained" if ok else "did not train",
            2.3 if ok else 3.1,
            placement=p,
            lr=lr,
            warmup=w,
            seed=0,
        )
        for (p, lr, w), ok in trained.items()
    ]


def test_xiong2020_warmup_verdicts():
    study = get("xiong2020")
    grid = {
        ("post", 1e-3, 0): False,
        ("post", 1e-3, 100): True,
        ("pre", 1e-3, 0): True,
        ("pre", 1e-3, 100): True,
        ("post", 3e-3, 0): False,
        ("post", 3e-3, 100): False,
        ("pre", 3e-3, 0): True,
        ("pre", 3e-3, 100): True,
    }
    checks = study.judge(xiong_outcomes(grid), {}).checks
    assert [c.holds for c in checks] == [True, True]
    # Post-LN trains without warm-up wherever it trains with it: not reproduced
    assert study.judge(xiong_outcomes({**grid, ("post", 1e-3, 0): True}), {}).checks[0].holds is False
    # Post-LN never trains, even with warm-up: nothing to compare
    nothing = {**grid, ("post", 1e-3, 100): False}
    assert study.judge(xiong_outcomes(nothing), {}).checks[0].holds is None
    # Pre-LN failing without warm-up at one learning rate
    assert study.judge(xiong_outcomes({**grid, ("pre", 3e-3, 0): False}), {}).checks[1].holds is False


def test_xiong2020_gradient_verdicts():
    study = get("xiong2020")
    theorem = {"post": [[2, 1.6], [16, 1.7]], "pre": [[2, 1.1], [16, 1.1 / math.sqrt(8) * 1.06]]}
    paper_like = {
        "post": {"W2": [1.0, 1.3, 1.7, 2.2, 2.9, 3.8]},
        "pre": {"W2": [1.0, 1.0, 0.95, 1.0, 1.05, 1.0]},
    }
    checks = study.judge([], {"last_layer_vs_depth": theorem, "per_layer": paper_like}).checks
    assert [c.holds for c in checks[-2:]] == [True, True]
    flat = {
        "post": {"W2": [2.0, 2.0, 1.9, 1.8, 1.8, 1.6]},
        "pre": {"W2": [1.4, 1.2, 1.0, 0.9, 0.86, 0.78]},
        "post+cross": {"W2": [0.19, 0.25, 0.34, 0.49, 0.66, 0.9]},
    }
    last = study.judge([], {"per_layer": flat}).checks[-1]
    assert last.holds is False and "x4.7" in last.measured and "stream" in last.reason
    no_depth = {"post": [[2, 1.0], [16, 1.0]], "pre": [[2, 1.0], [16, 1.0]]}  # Pre-LN does not shrink
    assert study.judge([], {"last_layer_vs_depth": no_depth}).checks[-1].holds is False


def test_deepnet2022_verdicts():
    study = get("deepnet2022")

    def runs(post, deep, pre="trained"):
        return [
            outcome(p, v, placement=p, init=i, seed=0, layers=24, design=p)
            for p, i, v in (("post", "xavier", post), ("deepnorm", "deepnet", deep), ("pre", "xavier", pre))
        ]

    assert study.judge(runs("did not train", "trained"), {}).outcome == "reproduced"
    assert study.judge(runs("diverged", "trained"), {}).outcome == "reproduced"
    verdict = study.judge(runs("trained", "trained"), {})
    assert verdict.outcome == "partly reproduced" and verdict.checks[1].holds is False
    verdict = study.judge(runs("did not train", "did not train"), {})
    assert verdict.outcome == "not reproduced" and verdict.checks[1].holds is None  # no comparison


def mhc_run(design: str, depth: int, gains: list[float], seed: int = 0) -> RunOutcome:
    run = outcome(f"{design}-{depth}", design=design, depth=depth, seed=seed)
    run.probes = [
        {"step": 10 * i, "mix_gain_fwd": [1.0] * (depth - 1) + [g], "mix_gain_bwd": [g]}
        for i, g in enumerate(gains)
    ]
    return run


def test_mhc2026_verdicts():
    study = get("mhc2026")
    good = [
        mhc_run("hyper", 6, [1.0, 7.0, 9.5]),
        mhc_run("hyper", 12, [1.0, 16.7, 23.9]),
        mhc_run("mhc", 6, [1.0, 1.0, 1.0]),
        mhc_run("mhc", 12, [1.0, 1.0, 1.0]),
        outcome("p", design="pre-norm", depth=6, seed=0),
    ]
    assert study.judge(good, {}).outcome == "reproduced"
    flat_depth = [
        mhc_run("hyper", 6, [1.0, 9.0]),
        mhc_run("hyper", 12, [1.0, 9.5]),
        mhc_run("mhc", 6, [1.0, 1.0]),
    ]
    assert [c.holds for c in study.judge(flat_depth, {}).checks] == [False, True, True]
    exploding_mhc = [mhc_run("hyper", 6, [1.0, 1.2]), mhc_run("mhc", 6, [1.0, 3.0])]
    assert [c.holds for c in study.judge(exploding_mhc, {}).checks] == [None, False, False]


def test_default_compare_verdicts():
    study = get("default-compare")
    trains = {
        ("plain", 4): True,
        ("plain", 16): False,
        ("plain", 48): False,
        ("plain-bn", 4): True,
        ("plain-bn", 16): True,
        ("plain-bn", 48): False,
    }
    trains.update(
        {(d, depth): True for d in ("residual", "post-norm", "pre-norm", "rezero") for depth in (4, 16, 48)}
    )

    def runs(table, seeds=(0, 1, 2)):
        return [
            outcome(
                f"{d}-{depth}-{s}",
                "trained" if table[(d, depth)] else "did not train",
                design=d,
                depth=depth,
                seed=s,
            )
            for s in seeds
            for (d, depth) in table
        ]

    assert study.judge(runs(trains), {}).outcome == "reproduced"
    one_seed_off = runs(trains)
    for run in one_seed_off:
        if run.coords == {"design": "plain-bn", "depth": 48, "seed": 1}:
            run.verdict = "trained"
    verdict = study.judge(one_seed_off, {})
    assert [c.holds for c in verdict.checks] == [True, False, True]
    assert "plain-bn-48 seed 1" in verdict.checks[1].reason


# ------------------------------------------------------------------------------------------ measurement


def test_init_gradients_expected_gradient_is_the_gradient_of_the_mean_loss():
    """Xiong et al.'s statistic, the norm of the mini-batches' mean gradient, equals the norm of the
    gradient of the loss averaged over the same mini-batches (computed here in one backward pass)."""
    from resnorm.data import generator_for, prepare_text
    from resnorm.lab.studies.init_gradients import build_model, init_gradients

    data = prepare_text("the quick brown fox jumps over the lazy dog. " * 40, "t")
    got = init_gradients(
        data, "post", 2, d_model=16, n_head=2, batches=3, seeds=1, batch_size=2, block_size=8
    )
    model, ffns, _ = build_model(data, "post", 2, d_model=16, n_head=2, seed=0, block_size=8)
    xs, ys = zip(*(data.batch(2, 8, generator_for(0, counter=k, stream=7)) for k in range(3)), strict=True)
    logits = model(torch.cat(xs))
    loss = torch.stack(
        [
            torch.nn.functional.cross_entropy(part.flatten(0, 1), y.flatten())
            for part, y in zip(logits.split(2), ys, strict=True)
        ]
    ).mean()
    loss.backward()
    want = [float(f.proj.weight.grad.norm()) for f in ffns]
    assert got["W2"] == pytest.approx(want, rel=1e-4)
    assert all(m <= b * (1 + 1e-6) for m, b in zip(got["W2"], got["W2_batch"], strict=True))  # triangle ineq.


def test_init_gradients_control_sublayer_ignores_the_stream():
    from resnorm.data import prepare_text
    from resnorm.lab.studies.init_gradients import build_model

    data = prepare_text("abcdefgh" * 50, "t")
    model, _, memories = build_model(data, "post+cross", 2, d_model=16, n_head=2, seed=0, block_size=8)
    assert len(memories) == 2
    memories[0].memory = torch.randn(1, 1, 16)
    x = torch.randn(1, 8, 16, requires_grad=True)
    memories[0](x).sum().backward()
    assert x.grad is None or torch.count_nonzero(x.grad) == 0


# ------------------------------------------------------------------------------------------ end to end


TINY_GPT = {"steps": "3", "layers": "2", "d_model": "16", "eval_batches": "1", "text_max_chars": "20000"}


def test_a_tiny_deepnet2022_study_end_to_end(tmp_path):
    lines = []
    result = run_study(
        "deepnet2022", "quick", tmp_path / "s", TINY_GPT, workers=1, progress=False, echo=lines.append
    )
    assert lines[0].startswith("study deepnet2022") and any(line.startswith("  recipe:") for line in lines)
    recipe = next(line for line in lines if line.startswith("  recipe:"))
    assert "init xavier" in recipe and "init" in recipe.split("differ in")[1]  # DeepNorm's run: deepnet
    out = tmp_path / "s"
    for name in (
        "study.json",
        "verdict.json",
        "summary.txt",
        "report.html",
        "measurements.json",
        "deepnet2022_loss.png",
    ):
        assert (out / name).is_file(), name
    assert len(result.outcomes) == 3 and all(
        o.steps == 3 and o.status == "completed" for o in result.outcomes
    )
    saved = json.loads((out / "verdict.json").read_text())
    assert saved["outcome"] == result.verdict.outcome and saved["line"] == result.line
    assert result.line.startswith("deepnet2022: ")
    html = (out / "report.html").read_text()
    assert "Verdict" in html and result.verdict.outcome in html and "WMT-17" in html
    assert result.line in (out / "summary.txt").read_text()
    # a finished study folder is refused without --overwrite, and left as it was
    before = (out / "summary.txt").read_bytes()
    with pytest.raises(FileExistsError):
        run_study("deepnet2022", "quick", out, TINY_GPT, workers=1, progress=False)
    assert (out / "summary.txt").read_bytes() == before


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    "argv, words",
    [
        (["study", "he2017"], ["he2017"]),
        (["study", "xiong2020", "placement=pre"], ["placement", "itself"]),
        (["study", "he2016", "data=stdlib"], ["stdlib", "image"]),
        (["study", "deepnet2022", "seeds=a"], ["seeds", "integers"]),
        (["study", "deepnet2022", "colour=red"], ["colour"]),
        (["study", "deepnet2022", "data=/no/such/file.txt"], ["/no/such/file.txt"]),
        (["study", "deepnet2022", "lr=fast"], ["lr", "fast"]),
        (["study", "mhc2026", "--quick", "--full"], ["--full"]),
        (["study", "deepnet2022", "steps"], ["KEY=VALUE"]),
    ],
)
def test_study_cli_errors_are_one_line_exit_2(capsys, tmp_path, argv, words):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    if "--full" in argv:  # argparse's own usage error: its usage, then the error line
        assert "error:" in err[-1] and all(w in err[-1] for w in words), err
    else:
        assert len(err) == 1 and err[0].startswith("resnorm: error:") and all(w in err[0] for w in words), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("argv", "missing"), [(["study"], "NAME"), (["train"], "MODEL")])
def test_a_missing_name_is_the_only_thing_reported_missing(capsys, argv, missing):
    """KEY=VALUE settings are optional: the usage error names only the missing NAME / MODEL."""
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"the following arguments are required: {missing} (see" in last, last


def test_study_cli_refuses_a_non_empty_out(capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["study", "deepnet2022", "--out", str(out), *[f"{k}={v}" for k, v in TINY_GPT.items()]]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_study_help_lists_every_study(capsys):
    assert main(["study", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in names()) and "--full" in text
    flat = " ".join(text.split()).replace("- ", "-")  # the help wraps lines (and hyphenated words)
    for name in names():  # each study with the claim it tests
        assert " ".join(get(name).claim.split()).replace("- ", "-") in flat, name
